//! [`ForwardingPolicy`]: who may open which connections through the node (`-L`, SOCKS, the native
//! tunnel) and listen on which of its addresses (`-R`). A dynamic configuration section
//! (`[forwarding]` in `alknet.toml`), reloaded atomically; every check reads the section in force.
//!
//! The rules, in order; the first that matches decides:
//!
//! - `peers`: identity ids (empty: everyone authenticated);
//! - `hosts`: name patterns (`example.com`, `*.example.com`) matched against the name the client
//!   asked for, and CIDRs or addresses (`10.0.0.0/8`, `::1`) matched against the address the node
//!   resolved (empty: any destination);
//! - `ports`: ports or ranges (`22`, `"8000-8999"`; empty: any);
//! - `direction`: `connect` (default: outbound connections) or `listen` (`-R` binds);
//! - `transports`: the carriers the client's connection came on (empty: any): `quic`, `tcp-tls`,
//!   `iroh`, or `ssh` (the opt-in plain SSH TCP port); a rule that names transports never
//!   applies to a connection whose carrier is unknown (an SSH session run over a stream handed
//!   to [`SshServer::run_stream`](crate::SshServer::run_stream) without one);
//! - `sockets`: Unix socket paths or directories (ending in `/`) on the node, for a rule that
//!   governs sockets instead of hosts and ports: to connect to (`-L port:/path`) or, with
//!   direction `listen`, to create for `-R /path:host:port`; only such a rule opens a socket;
//! - `action`: `allow` or `deny`.
//!
//! **Private addresses are opened only by address.** Loopback, private (RFC 1918, ULA),
//! link-local, CGNAT, unspecified, multicast and broadcast addresses are reachable only through an
//! `allow` rule whose `hosts` names them by CIDR or address; an `allow` rule that matches by name
//! pattern, or has no `hosts`, opens public addresses only. Names are resolved on the node and the
//! resolved address is what is checked and connected to, so a name that resolves to `127.0.0.1`
//! (DNS rebinding) does not reach the node's own services.
//!
//! When no rule matches, `default` decides: `public` (the default) allows public destinations and
//! `-R` binds on loopback; `deny` refuses everything; `allow` allows everything (a node on a trusted
//! network that should reach its LAN). A public node that forwards into its own LAN unless told
//! otherwise is a footgun, hence `public`.
//!
//! ```
//! use alknet_ssh::policy::{Direction, ForwardingPolicy, Verdict};
//!
//! let policy: ForwardingPolicy = serde_json::from_str(r#"{
//!     "rules": [{ "peers": ["ops"], "hosts": ["10.1.0.0/16"], "ports": [22], "action": "allow" }]
//! }"#).unwrap();
//! let lan = "10.1.2.3:22".parse().unwrap();
//! assert_eq!(policy.check("ops", Direction::Connect, None, lan), Verdict::Allow);
//! assert_eq!(policy.check("guest", Direction::Connect, None, lan), Verdict::Deny);
//! assert_eq!(policy.check("guest", Direction::Connect, None, "93.184.216.34:443".parse().unwrap()), Verdict::Allow);
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use alknet_core::config::{ConfigError, ConfigSection};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Open channels (and `-R` listeners) a connection may hold unless `max_channels` says otherwise.
pub const DEFAULT_MAX_CHANNELS: u32 = 256;

/// The forwarding policy (`[forwarding]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForwardingPolicy {
    /// What happens when no rule matches (default `public`).
    #[serde(default)]
    pub default: DefaultAction,
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<ForwardRule>,
    /// Open channels and `-R` listeners one connection may hold (default 256); more are refused.
    #[serde(default)]
    pub max_channels: Option<u32>,
}

/// The verdict when no rule matches.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAction {
    /// Public destinations; `-R` on loopback only.
    #[default]
    Public,
    /// Nothing.
    Deny,
    /// Everything, private ranges included.
    Allow,
}

/// One rule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    /// Identity ids it applies to (empty: every authenticated identity).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Name patterns, CIDRs or addresses (empty: any destination).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Ports or `"low-high"` ranges (empty: any port).
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Outbound connections (default) or `-R` listeners.
    #[serde(default)]
    pub direction: Direction,
    /// The carriers it applies to (empty: every carrier).
    #[serde(default)]
    pub transports: Vec<Transport>,
    /// Unix sockets on the node, by absolute path (`/run/app.sock`), or a directory ending in `/`
    /// for the sockets under it: with direction `connect` the sockets a client may reach
    /// (`ssh -L 8080:/run/app.sock`, a `direct-streamlocal` channel), with `listen` the paths at
    /// which the node may create a socket for it (`ssh -R /run/app/in.sock:host:port`,
    /// `streamlocal-forward`). A rule with `sockets` governs sockets only (no `hosts` or
    /// `ports`); a socket is opened or created only by such a rule, whatever `default` says.
    #[serde(default)]
    pub sockets: Vec<String>,
    /// Allow or deny.
    pub action: Action,
}

/// A way a client's connection reaches the node, as rules name it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum Transport {
    /// QUIC on the node's port.
    #[serde(rename = "quic")]
    Quic,
    /// TLS over TCP on the node's port.
    #[serde(rename = "tcp-tls")]
    TcpTls,
    /// iroh (direct or relayed), dialed by node id.
    #[serde(rename = "iroh")]
    Iroh,
    /// The opt-in plain SSH TCP port (`[ssh] listen`), for OpenSSH clients.
    #[serde(rename = "ssh")]
    Ssh,
}

impl Transport {
    /// Its name in rules and logs: `quic`, `tcp-tls`, `iroh`, `ssh`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::TcpTls => "tcp-tls",
            Transport::Iroh => "iroh",
            Transport::Ssh => "ssh",
        }
    }

    /// The name for logs of an optional transport (`memory` when unknown).
    pub fn name(transport: Option<Transport>) -> &'static str {
        transport.map_or("memory", Transport::as_str)
    }
}

impl From<alknet_core::Carrier> for Transport {
    fn from(carrier: alknet_core::Carrier) -> Self {
        match carrier {
            alknet_core::Carrier::Quic => Transport::Quic,
            alknet_core::Carrier::Tcp => Transport::TcpTls,
            alknet_core::Carrier::Iroh => Transport::Iroh,
        }
    }
}

/// A port or a range, as a number or a string (`22`, `"22"`, `"8000-8999"`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum PortSpec {
    /// One port.
    Port(u16),
    /// A port or an inclusive range, as text.
    Text(String),
}

impl PortSpec {
    fn range(&self) -> Result<(u16, u16), String> {
        match self {
            PortSpec::Port(p) => Ok((*p, *p)),
            PortSpec::Text(text) => {
                let bad = || format!("port {text:?} is not a port or a range like \"8000-8999\"");
                let (lo, hi) = match text.split_once('-') {
                    Some((lo, hi)) => (lo.trim(), hi.trim()),
                    None => (text.trim(), text.trim()),
                };
                let lo: u16 = lo.parse().map_err(|_| bad())?;
                let hi: u16 = hi.parse().map_err(|_| bad())?;
                if lo > hi {
                    return Err(bad());
                }
                Ok((lo, hi))
            }
        }
    }
}

/// What a rule governs.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Outbound connections from the node (`-L`, `-D`/SOCKS, the native tunnel).
    #[default]
    Connect,
    /// Listening on the node for `-R`.
    Listen,
}

/// A rule's verdict.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// The outcome of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Refused.
    Deny,
}

enum HostMatch {
    Net(IpNet),
    Name(String),
}

impl FromStr for HostMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(HostMatch::Net(net));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(HostMatch::Net(IpNet::from(ip)));
        }
        let name = s.strip_prefix("*.").unwrap_or(s);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!(
                "host {s:?} is not a CIDR, an address, a name or a `*.name` pattern"
            ));
        }
        Ok(HostMatch::Name(s.to_ascii_lowercase()))
    }
}

impl HostMatch {
    /// Whether it matches; `by_address` says the match was by CIDR (which may open private ranges).
    fn matches(&self, name: Option<&str>, addr: IpAddr) -> Option<bool> {
        match self {
            HostMatch::Net(net) => net.contains(&canonical(addr)).then_some(true),
            HostMatch::Name(pattern) => {
                let name = name?.trim_end_matches('.').to_ascii_lowercase();
                let hit = match pattern.strip_prefix("*.") {
                    Some(suffix) => name
                        .strip_suffix(suffix)
                        .is_some_and(|head| head.ends_with('.') && head.len() > 1),
                    None => name == *pattern,
                };
                hit.then_some(false)
            }
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `addr` is a public unicast address: not loopback, private, link-local, CGNAT,
/// unspecified, multicast, broadcast, documentation or otherwise reserved.
pub fn is_public(addr: IpAddr) -> bool {
    match canonical(addr) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || a >= 240
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b == 18 || b == 19)))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || v6 == Ipv6Addr::from(0u128)
                || v6.to_ipv4().is_some_and(|v4| v4 == Ipv4Addr::UNSPECIFIED))
        }
    }
}

impl ForwardRule {
    fn hosts(&self) -> impl Iterator<Item = Result<HostMatch, String>> + '_ {
        self.hosts.iter().map(|h| h.parse())
    }

    /// Whether it applies to this identity, carrier and direction (destinations aside).
    fn covers(&self, identity: &str, transport: Option<Transport>, direction: Direction) -> bool {
        self.direction == direction
            && (self.transports.is_empty()
                || transport.is_some_and(|t| self.transports.contains(&t)))
            && (self.peers.is_empty() || self.peers.iter().any(|p| p == identity || p == "*"))
    }

    fn applies(
        &self,
        identity: &str,
        transport: Option<Transport>,
        direction: Direction,
        port: u16,
    ) -> bool {
        self.sockets.is_empty()
            && self.covers(identity, transport, direction)
            && (self.ports.is_empty()
                || self
                    .ports
                    .iter()
                    .filter_map(|p| p.range().ok())
                    .any(|(lo, hi)| (lo..=hi).contains(&port)))
    }

    /// `Some(by_address)` when the destination matches the rule's hosts.
    fn destination(&self, name: Option<&str>, addr: IpAddr) -> Option<bool> {
        if self.hosts.is_empty() {
            return Some(false);
        }
        self.hosts()
            .filter_map(Result::ok)
            .filter_map(|h| h.matches(name, addr))
            .max()
    }
}

impl ForwardingPolicy {
    /// Open channels one connection may hold.
    pub fn max_channels(&self) -> usize {
        self.max_channels.unwrap_or(DEFAULT_MAX_CHANNELS) as usize
    }

    /// Whether `identity` may connect to (or, for [`Direction::Listen`], bind) `addr`, which the
    /// client asked for as `name` (`None` when it gave an address), on a connection whose
    /// carrier is unknown: rules that name `transports` do not apply.
    pub fn check(
        &self,
        identity: &str,
        direction: Direction,
        name: Option<&str>,
        addr: SocketAddr,
    ) -> Verdict {
        self.check_on(None, identity, direction, name, addr)
    }

    /// Like [`check`](Self::check), for a client whose connection came on `transport`.
    pub fn check_on(
        &self,
        transport: Option<Transport>,
        identity: &str,
        direction: Direction,
        name: Option<&str>,
        addr: SocketAddr,
    ) -> Verdict {
        let ip = addr.ip();
        let open_by_default = match direction {
            Direction::Connect => is_public(ip),
            Direction::Listen => canonical(ip).is_loopback(),
        };
        for rule in &self.rules {
            if !rule.applies(identity, transport, direction, addr.port()) {
                continue;
            }
            let Some(by_address) = rule.destination(name, ip) else {
                continue;
            };
            return match rule.action {
                Action::Deny => Verdict::Deny,
                Action::Allow if by_address || open_by_default => Verdict::Allow,
                // A name pattern or an empty host list opens public addresses only; keep looking
                // for a rule that names this private address.
                Action::Allow => continue,
            };
        }
        match self.default {
            DefaultAction::Allow => Verdict::Allow,
            DefaultAction::Deny => Verdict::Deny,
            DefaultAction::Public if open_by_default => Verdict::Allow,
            DefaultAction::Public => Verdict::Deny,
        }
    }
}

/// Why `path` is not a socket path a rule may name or a client may ask for: it must be absolute,
/// with no empty, `.` or `..` components and no NUL (so a prefix match cannot be walked out of).
fn socket_path_error(path: &str) -> Option<&'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Some("must be an absolute path");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if path.contains('\0') {
        return Some("must not contain NUL");
    }
    if rest
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some("must not have empty, `.` or `..` components");
    }
    None
}

impl ForwardingPolicy {
    /// Whether `identity`, on a connection that came on `transport`, may connect to the Unix
    /// socket at `path` on the node: only a rule that names it (or a directory above it) in
    /// `sockets` allows it; without one, or for a path that is not plainly absolute, it is refused.
    /// The check is by the text of the paths; [`check_socket_resolved`](Self::check_socket_resolved)
    /// adds the check of where symbolic links lead.
    pub fn check_socket(
        &self,
        transport: Option<Transport>,
        identity: &str,
        path: &str,
    ) -> Verdict {
        self.check_socket_with(transport, identity, Direction::Connect, path, |entry| {
            Some(entry.to_owned())
        })
    }

    /// [`check_socket`](Self::check_socket) on the node's file system, for `path` whose real
    /// path (symbolic links followed) is `real`: `path` must pass the plain check, and `real`
    /// the check against every rule's socket path resolved the same way. So a link inside an
    /// allowed directory that points elsewhere opens nothing, while a rule may name a path
    /// through a link (`/var/run` → `/run`). Connect to `real`, the path checked. Blocking
    /// file-system calls: run it off the async threads.
    pub fn check_socket_resolved(
        &self,
        transport: Option<Transport>,
        identity: &str,
        path: &str,
        real: &str,
    ) -> Verdict {
        if self.check_socket(transport, identity, path) != Verdict::Allow {
            return Verdict::Deny;
        }
        self.check_socket_with(
            transport,
            identity,
            Direction::Connect,
            real,
            |entry| match entry.strip_suffix('/') {
                Some(dir) => real_dir(dir),
                None => real_path(entry),
            },
        )
    }

    /// Whether `identity`, on a connection that came on `transport`, may have the node listen
    /// on a new Unix socket at `path` (`ssh -R /path:host:port`), which will be created in the
    /// directory whose real path (symbolic links followed) is `parent`: only a `listen` rule
    /// that names `path` (or a directory above it) in `sockets` allows it, and the socket's real
    /// path (`parent` and the file name) must pass the same check against the rules' paths
    /// resolved the same way (the socket does not exist yet: a rule's path is resolved by its
    /// directory). So a parent directory that is a link out of an allowed directory opens
    /// nothing. Blocking file-system calls: run it off the async threads.
    pub fn check_socket_listen(
        &self,
        transport: Option<Transport>,
        identity: &str,
        path: &str,
        parent: &str,
    ) -> Verdict {
        if self.check_socket_listen_path(transport, identity, path) != Verdict::Allow {
            return Verdict::Deny;
        }
        let Some((_, name)) = path.rsplit_once('/') else {
            return Verdict::Deny;
        };
        let real = format!("{}/{name}", parent.trim_end_matches('/'));
        self.check_socket_with(transport, identity, Direction::Listen, &real, |entry| {
            let (dir, name) = entry.rsplit_once('/')?;
            let dir = real_dir(if dir.is_empty() { "/" } else { dir })?;
            Some(format!("{dir}{name}"))
        })
    }

    /// The first half of [`check_socket_listen`](Self::check_socket_listen): the path as
    /// written against the rules as written, without touching the file system. A path that
    /// fails it is refused before anything on the node is opened or resolved.
    pub fn check_socket_listen_path(
        &self,
        transport: Option<Transport>,
        identity: &str,
        path: &str,
    ) -> Verdict {
        self.check_socket_with(transport, identity, Direction::Listen, path, |entry| {
            Some(entry.to_owned())
        })
    }

    /// The first socket rule for this peer, carrier and direction whose entry (as `resolve`
    /// gives it; `None`: it names nothing) names `path` decides; no rule: refused.
    fn check_socket_with(
        &self,
        transport: Option<Transport>,
        identity: &str,
        direction: Direction,
        path: &str,
        resolve: impl Fn(&str) -> Option<String>,
    ) -> Verdict {
        if path.ends_with('/') || socket_path_error(path).is_some() {
            return Verdict::Deny;
        }
        let names = |entry: &String| match resolve(entry) {
            Some(e) if e.ends_with('/') => path.starts_with(e.as_str()),
            Some(e) => path == e,
            None => false,
        };
        self.rules
            .iter()
            .filter(|r| !r.sockets.is_empty() && r.covers(identity, transport, direction))
            .find(|r| r.sockets.iter().any(names))
            .map_or(Verdict::Deny, |r| match r.action {
                Action::Allow => Verdict::Allow,
                Action::Deny => Verdict::Deny,
            })
    }
}

/// The real path of `path` (symbolic links followed), if it exists.
fn real_path(path: &str) -> Option<String> {
    std::fs::canonicalize(path)
        .ok()?
        .into_os_string()
        .into_string()
        .ok()
}

/// The real path of the directory `dir`, ending in `/`.
fn real_dir(dir: &str) -> Option<String> {
    real_path(dir).map(|d| format!("{}/", d.trim_end_matches('/')))
}

impl ConfigSection for ForwardingPolicy {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_channels == Some(0) {
            return Err(ConfigError::Invalid {
                entry: "max_channels".into(),
                reason: "must be at least 1".into(),
            });
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let invalid = |reason: String| ConfigError::Invalid {
                entry: format!("forwarding rule {i}"),
                reason,
            };
            if let Some(Err(e)) = rule.hosts().find(Result::is_err) {
                return Err(invalid(e));
            }
            if let Some(e) = rule.ports.iter().find_map(|p| p.range().err()) {
                return Err(invalid(e));
            }
            if rule.peers.iter().any(String::is_empty) {
                return Err(invalid("a peer id must not be empty".into()));
            }
            if !rule.sockets.is_empty() && (!rule.hosts.is_empty() || !rule.ports.is_empty()) {
                return Err(invalid(
                    "a rule with `sockets` has no `hosts` or `ports`".into(),
                ));
            }
            if let Some((path, e)) = rule
                .sockets
                .iter()
                .find_map(|p| socket_path_error(p).map(|e| (p, e)))
            {
                return Err(invalid(format!("socket {path:?} {e}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> ForwardingPolicy {
        let p: ForwardingPolicy = serde_json::from_str(json).unwrap();
        p.validate().unwrap();
        p
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_allows_public_and_refuses_private_loopback_and_link_local() {
        let p = ForwardingPolicy::default();
        let connect = |a| p.check("alice", Direction::Connect, None, at(a));
        assert_eq!(connect("93.184.216.34:443"), Verdict::Allow);
        assert_eq!(connect("[2606:4700::1111]:443"), Verdict::Allow);
        for private in [
            "127.0.0.1:22",
            "10.0.0.1:80",
            "192.168.1.1:80",
            "172.16.0.1:80",
            "169.254.169.254:80",
            "100.64.0.1:80",
            "0.0.0.0:80",
            "[::1]:22",
            "[fe80::1]:22",
            "[fd00::1]:22",
            "[::ffff:127.0.0.1]:22",
            "224.0.0.1:80",
        ] {
            assert_eq!(connect(private), Verdict::Deny, "{private}");
        }
    }

    #[test]
    fn a_cidr_rule_opens_a_private_range_for_its_peers_only() {
        let p = policy(
            r#"{"rules":[{"peers":["ops"],"hosts":["127.0.0.0/8"],"ports":["8000-8999"],"action":"allow"}]}"#,
        );
        assert_eq!(
            p.check("ops", Direction::Connect, None, at("127.0.0.1:8080")),
            Verdict::Allow
        );
        assert_eq!(
            p.check("ops", Direction::Connect, None, at("127.0.0.1:22")),
            Verdict::Deny
        );
        assert_eq!(
            p.check("bob", Direction::Connect, None, at("127.0.0.1:8080")),
            Verdict::Deny
        );
    }

    #[test]
    fn a_name_pattern_never_opens_a_private_address() {
        let p = policy(r#"{"rules":[{"hosts":["*.example.com"],"action":"allow"}]}"#);
        let rebinding = p.check(
            "a",
            Direction::Connect,
            Some("evil.example.com"),
            at("127.0.0.1:80"),
        );
        assert_eq!(rebinding, Verdict::Deny);
    }

    #[test]
    fn deny_rules_match_names_and_win_in_order() {
        let p = policy(
            r#"{"rules":[{"hosts":["*.blocked.test", "blocked.test"],"action":"deny"}],"default":"allow"}"#,
        );
        let public = at("93.184.216.34:443");
        assert_eq!(
            p.check("a", Direction::Connect, Some("x.Blocked.test."), public),
            Verdict::Deny
        );
        assert_eq!(
            p.check("a", Direction::Connect, Some("blocked.test"), public),
            Verdict::Deny
        );
        assert_eq!(
            p.check("a", Direction::Connect, Some("notblocked.test"), public),
            Verdict::Allow
        );
        assert_eq!(
            p.check("a", Direction::Connect, None, at("10.0.0.1:1")),
            Verdict::Allow
        );
    }

    #[test]
    fn listen_defaults_to_loopback_only() {
        let p = ForwardingPolicy::default();
        assert_eq!(
            p.check("a", Direction::Listen, None, at("127.0.0.1:0")),
            Verdict::Allow
        );
        assert_eq!(
            p.check("a", Direction::Listen, None, at("0.0.0.0:8080")),
            Verdict::Deny
        );
        let open =
            policy(r#"{"rules":[{"direction":"listen","hosts":["0.0.0.0"],"action":"allow"}]}"#);
        assert_eq!(
            open.check("a", Direction::Listen, None, at("0.0.0.0:8080")),
            Verdict::Allow
        );
    }

    #[test]
    fn a_rule_naming_transports_applies_on_those_carriers_only() {
        let p = policy(
            r#"{"rules":[{"hosts":["127.0.0.1"],"transports":["iroh","ssh"],"action":"allow"},
                         {"hosts":["93.184.216.34"],"transports":["quic"],"action":"deny"}]}"#,
        );
        let lo = at("127.0.0.1:22");
        let public = at("93.184.216.34:443");
        let on = |t: Option<Transport>, a| p.check_on(t, "a", Direction::Connect, None, a);
        assert_eq!(on(Some(Transport::Ssh), lo), Verdict::Allow);
        assert_eq!(on(Some(Transport::Iroh), lo), Verdict::Allow);
        assert_eq!(on(Some(Transport::Quic), lo), Verdict::Deny);
        assert_eq!(on(Some(Transport::TcpTls), lo), Verdict::Deny);
        assert_eq!(on(None, lo), Verdict::Deny);
        assert_eq!(on(Some(Transport::Quic), public), Verdict::Deny);
        assert_eq!(on(Some(Transport::TcpTls), public), Verdict::Allow);
        assert_eq!(on(None, public), Verdict::Allow);
        assert_eq!(
            Transport::from(alknet_core::Carrier::Tcp).as_str(),
            "tcp-tls"
        );
    }

    #[test]
    fn an_unknown_transport_name_is_a_parse_error_naming_the_choices() {
        let err = serde_json::from_str::<ForwardingPolicy>(
            r#"{"rules":[{"transports":["udp"],"action":"allow"}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("udp") && err.contains("tcp-tls"), "{err}");
    }

    #[test]
    fn default_deny_refuses_everything_unmatched() {
        let p = policy(r#"{"default":"deny"}"#);
        assert_eq!(
            p.check("a", Direction::Connect, None, at("93.184.216.34:443")),
            Verdict::Deny
        );
    }

    #[test]
    fn invalid_rules_are_refused_naming_the_rule() {
        for bad in [
            r#"{"rules":[{"hosts":["10.0.0.0/33"],"action":"allow"}]}"#,
            r#"{"rules":[{"hosts":["*"],"action":"allow"}]}"#,
            r#"{"rules":[{"ports":["90-80"],"action":"allow"}]}"#,
            r#"{"rules":[{"peers":[""],"action":"allow"}]}"#,
            r#"{"rules":[{"sockets":["run/app.sock"],"action":"allow"}]}"#,
            r#"{"rules":[{"sockets":["/run/../etc/x"],"action":"allow"}]}"#,
            r#"{"rules":[{"sockets":["/run//x"],"action":"allow"}]}"#,
            r#"{"rules":[{"sockets":["/run/x"],"hosts":["10.0.0.1"],"action":"allow"}]}"#,
        ] {
            let p: ForwardingPolicy = serde_json::from_str(bad).unwrap();
            let err = p.validate().unwrap_err().to_string();
            assert!(err.contains("forwarding rule 0"), "{bad}: {err}");
        }
        let unknown = serde_json::from_str::<ForwardingPolicy>(r#"{"rulez":[]}"#);
        assert!(unknown.is_err());
        let zero = policy(r#"{}"#);
        assert_eq!(zero.max_channels(), DEFAULT_MAX_CHANNELS as usize);
        let p: ForwardingPolicy = serde_json::from_str(r#"{"max_channels":0}"#).unwrap();
        assert!(p.validate().is_err());
    }

    #[test]
    fn sockets_open_only_by_a_rule_that_names_them() {
        let p = policy(
            r#"{"default":"allow","rules":[
                {"sockets":["/run/app/private.sock"],"action":"deny"},
                {"peers":["ops"],"sockets":["/run/app/"],"action":"allow"},
                {"sockets":["/tmp/echo.sock"],"transports":["quic"],"action":"allow"}
            ]}"#,
        );
        let sock = |who, t, path| p.check_socket(t, who, path);
        assert_eq!(sock("ops", None, "/run/app/api.sock"), Verdict::Allow);
        assert_eq!(sock("ops", None, "/run/app/sub/api.sock"), Verdict::Allow);
        assert_eq!(sock("ops", None, "/run/app/private.sock"), Verdict::Deny);
        assert_eq!(sock("guest", None, "/run/app/api.sock"), Verdict::Deny);
        // Walking out of the directory, or naming it in another spelling, opens nothing.
        for bad in [
            "/run/app/../docker.sock",
            "/run/app/./api.sock",
            "/run/app//api.sock",
            "run/app/api.sock",
            "/run/app/",
            "/run/app/a\0b",
        ] {
            assert_eq!(sock("ops", None, bad), Verdict::Deny, "{bad:?}");
        }
        assert_eq!(sock("ops", None, "/run/application.sock"), Verdict::Deny);
        assert_eq!(
            sock("bob", Some(Transport::Quic), "/tmp/echo.sock"),
            Verdict::Allow
        );
        assert_eq!(
            sock("bob", Some(Transport::Ssh), "/tmp/echo.sock"),
            Verdict::Deny
        );
        // `default = "allow"` opens TCP destinations, never a socket; a socket rule never
        // decides a TCP check.
        assert_eq!(
            ForwardingPolicy {
                default: DefaultAction::Allow,
                ..Default::default()
            }
            .check_socket(None, "ops", "/var/run/docker.sock"),
            Verdict::Deny
        );
        let tcp_only =
            policy(r#"{"default":"deny","rules":[{"sockets":["/run/"],"action":"allow"}]}"#);
        assert_eq!(
            tcp_only.check("ops", Direction::Connect, None, at("93.184.216.34:443")),
            Verdict::Deny
        );
    }

    #[test]
    fn a_socket_listen_rule_opens_binds_under_its_directory_and_no_connects() {
        let dir = std::env::temp_dir();
        let real = real_dir(dir.to_str().unwrap()).unwrap();
        let p = policy(&format!(
            r#"{{"rules":[{{"peers":["ops"],"direction":"listen","sockets":["{real}"],"action":"allow"}}]}}"#
        ));
        let listen = |who, path: &str| p.check_socket_listen(None, who, path, &real);
        assert_eq!(listen("ops", &format!("{real}in.sock")), Verdict::Allow);
        assert_eq!(listen("guest", &format!("{real}in.sock")), Verdict::Deny);
        for bad in [
            "in.sock",
            "/elsewhere/in.sock",
            &format!("{real}../in.sock"),
        ] {
            assert_eq!(listen("ops", bad), Verdict::Deny, "{bad}");
        }
        // The parent's real path must be allowed too: a directory that leads elsewhere is not.
        assert_eq!(
            p.check_socket_listen(None, "ops", &format!("{real}link/in.sock"), "/etc"),
            Verdict::Deny
        );
        // A listen rule opens no socket to connect to.
        assert_eq!(
            p.check_socket(None, "ops", &format!("{real}in.sock")),
            Verdict::Deny
        );
    }
}
