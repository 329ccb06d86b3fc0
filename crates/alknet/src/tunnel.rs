//! `alknet connect`: a local SOCKS5 proxy and `-L` / `-R` forwards through a node, over SSH on
//! the node's port (`alknet/ssh`) or the native tunnel (`alknet/tunnel`), until SIGINT or
//! SIGTERM. Each bound listener is announced on stdout, one line each, so scripts can wait for
//! it; nothing else goes to stdout.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use alknet_node::{native_tunnel, ssh_tunnel};
use alknet_ssh::client::{Listener, LocalForward, Opener, Socks5, Tunnel};

use crate::cli::{ConnectArgs, Via};
use crate::failure::{Failure, Outcome};
use crate::remote::target;
use crate::signals::Signals;

/// A forward spec split into its parts: `[bind:]port:host:hostport` or `[bind:]port:/socket`.
#[derive(Debug, PartialEq, Eq)]
struct Spec {
    bind: Option<String>,
    port: u16,
    to: Destination,
}

/// Where a forward's connections go.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// `host:port` (resolved where the connection leaves).
    Tcp { host: String, port: u16 },
    /// A Unix socket on the node, by absolute path (`-L` over SSH only).
    Socket(String),
}

/// Parses `[bind:]port:host:hostport` or `[bind:]port:/path/to/socket`; an IPv6 bind or host
/// goes in brackets (`[::1]`).
fn parse_spec(flag: &str, spec: &str) -> Result<Spec, Failure> {
    let bad = |why: &str| {
        Failure::usage(format!(
            "{flag} {spec:?}: {why} (expected [bind:]port:host:port, [bind:]port:/socket for -L, or /socket:host:port for -R)"
        ))
    };
    // A socket path is everything after the first ":/" (it may hold colons of its own).
    let (head, socket) = match spec.find(":/") {
        Some(at) => (&spec[..at], Some(&spec[at + 1..])),
        None => (spec, None),
    };
    let mut parts = Vec::new();
    let mut rest = head;
    while !rest.is_empty() {
        let (part, tail) = if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']').ok_or_else(|| bad("unclosed ["))?;
            let after = &inner[end + 1..];
            let tail = match after.strip_prefix(':') {
                Some(t) => t,
                None if after.is_empty() => "",
                None => return Err(bad("text after ]")),
            };
            (&inner[..end], tail)
        } else {
            match rest.split_once(':') {
                Some((p, t)) => (p, t),
                None => (rest, ""),
            }
        };
        parts.push(part.to_string());
        rest = tail;
    }
    let port = |text: &str, what: &str| {
        text.parse::<u16>()
            .map_err(|_| bad(&format!("{what} {text:?} is not a port")))
    };
    let fields = if socket.is_some() { 1 } else { 3 };
    let (bind, parts) = match parts.len() {
        n if n == fields => (None, &parts[..]),
        n if n == fields + 1 => (Some(parts[0].clone()), &parts[1..]),
        _ => return Err(bad("wrong number of fields")),
    };
    let to = match socket {
        Some(path) => Destination::Socket(path.to_string()),
        None if parts[1].is_empty() => return Err(bad("empty host")),
        None => Destination::Tcp {
            host: parts[1].clone(),
            port: port(&parts[2], "port")?,
        },
    };
    Ok(Spec {
        bind,
        port: port(&parts[0], "port")?,
        to,
    })
}

/// Where a `-R` forward has the node listen: `[bind:]port` or a Unix socket path on the node.
#[derive(Debug, PartialEq, Eq)]
enum NodeSide {
    /// A TCP port (`bind` defaults to the node's loopback).
    Port { bind: Option<String>, port: u16 },
    /// A Unix socket the node creates at this absolute path.
    Socket(String),
}

/// Parses a `-R` spec: `[bind:]port:host:hostport`, or `/path/on/node.sock:host:hostport` (the
/// path may hold colons of its own; an IPv6 host goes in brackets).
fn parse_remote(spec: &str) -> Result<(NodeSide, String, u16), Failure> {
    if !spec.starts_with('/') {
        let parsed = parse_spec("-R", spec)?;
        let Destination::Tcp { host, port } = parsed.to else {
            return Err(Failure::usage(format!(
                "-R {spec:?}: a -R forward goes to host:port here, not to a Unix socket"
            )));
        };
        let side = NodeSide::Port {
            bind: parsed.bind,
            port: parsed.port,
        };
        return Ok((side, host, port));
    }
    let bad = || Failure::usage(format!("-R {spec:?}: expected /socket/on/node:host:port"));
    let (head, port) = spec.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    let (path, host) = match head.strip_suffix(']') {
        Some(bracketed) => {
            let (path, host) = bracketed.rsplit_once('[').ok_or_else(bad)?;
            (path.strip_suffix(':').ok_or_else(bad)?, host)
        }
        None => head.rsplit_once(':').ok_or_else(bad)?,
    };
    if path.len() < 2 || host.is_empty() {
        return Err(bad());
    }
    Ok((NodeSide::Socket(path.to_owned()), host.to_owned(), port))
}

/// Prints one announcement line and flushes it, so a script reading stdout sees it at once.
fn announce(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn bind_failed(what: &str, e: std::io::Error) -> Failure {
    Failure::usage(format!("{what}: cannot listen: {e}"))
}

/// Runs `alknet connect` until a stop signal.
pub async fn connect(args: ConnectArgs) -> Outcome {
    if args.socks5.is_none() && args.local.is_empty() && args.remote_forward.is_empty() {
        return Err(Failure::usage(
            "alknet connect needs --socks5 ADDR, -L SPEC or -R SPEC",
        ));
    }
    if args.via == Via::Tunnel && !args.remote_forward.is_empty() {
        return Err(Failure::usage(
            "-R needs --via ssh: the native tunnel carries outbound connections only",
        ));
    }
    let locals = args
        .local
        .iter()
        .map(|s| parse_spec("-L", s).map(|spec| (s, spec)))
        .collect::<Result<Vec<_>, _>>()?;
    let remotes = args
        .remote_forward
        .iter()
        .map(|s| parse_remote(s).map(|spec| (s, spec)))
        .collect::<Result<Vec<_>, _>>()?;
    if args.via == Via::Tunnel {
        if let Some((text, _)) = locals
            .iter()
            .find(|(_, spec)| matches!(spec.to, Destination::Socket(_)))
        {
            return Err(Failure::usage(format!(
                "-L {text:?}: a Unix socket on the node needs --via ssh"
            )));
        }
    }
    let (target, key) = target(&args.remote).await?;
    let mut signals = Signals::new()?;
    let (opener, ssh): (Arc<dyn Opener>, Option<Arc<Tunnel>>) = match args.via {
        Via::Ssh => {
            let tunnel = ssh_tunnel(key, target);
            (tunnel.clone(), Some(tunnel))
        }
        Via::Tunnel => (native_tunnel(key, target), None),
    };

    let mut listeners: Vec<Listener> = Vec::new();
    if let Some(addr) = args.socks5 {
        let socks = Socks5::start(addr, opener.clone())
            .await
            .map_err(|e| bind_failed("--socks5", e))?;
        announce(format!("socks5 listening on {}", socks.local_addr()));
        listeners.push(socks);
    }
    for (text, spec) in locals {
        let ip = match &spec.bind {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(b) => b.parse().map_err(|_| {
                Failure::usage(format!("-L {text:?}: bind {b:?} is not an IP address"))
            })?,
        };
        let listen = SocketAddr::new(ip, spec.port);
        let forward = match (spec.to, &ssh) {
            (Destination::Tcp { host, port }, _) => {
                LocalForward::start(listen, opener.clone(), host, port).await
            }
            (Destination::Socket(path), Some(tunnel)) => {
                LocalForward::start_socket(listen, tunnel.clone(), path).await
            }
            (Destination::Socket(_), None) => unreachable!("refused above without --via ssh"),
        }
        .map_err(|e| bind_failed(&format!("-L {text}"), e))?;
        announce(format!(
            "local {text} listening on {}",
            forward.local_addr()
        ));
        listeners.push(forward);
    }
    if let Some(tunnel) = &ssh {
        for (text, (side, host, port)) in remotes {
            let to = tokio::net::lookup_host((host.as_str(), port))
                .await
                .ok()
                .and_then(|mut found| found.next())
                .ok_or_else(|| {
                    Failure::usage(format!("-R {text:?}: the host does not resolve here"))
                })?;
            let failed = |e| Failure::call(format!("-R {text}: {e}"));
            match side {
                NodeSide::Port { bind, port } => {
                    let bind = bind.as_deref().unwrap_or("127.0.0.1");
                    let port = tunnel
                        .remote_forward(bind, port, to)
                        .await
                        .map_err(failed)?;
                    announce(format!("remote {text} listening on node port {port}"));
                }
                NodeSide::Socket(path) => {
                    tunnel
                        .remote_forward_socket(&path, to)
                        .await
                        .map_err(failed)?;
                    announce(format!("remote {text} listening on node socket {path}"));
                }
            }
        }
    }

    signals.stop().await;
    for listener in listeners {
        listener.close().await;
    }
    if let Some(tunnel) = ssh {
        tunnel.close().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_and_without_a_bind_address() {
        assert_eq!(
            parse_spec("-L", "8080:example.com:80").unwrap(),
            Spec {
                bind: None,
                port: 8080,
                to: Destination::Tcp {
                    host: "example.com".into(),
                    port: 80
                }
            }
        );
        let v6 = parse_spec("-L", "[::1]:0:[fd00::1]:22").unwrap();
        assert_eq!(v6.bind.as_deref(), Some("::1"));
        assert_eq!(
            (v6.port, v6.to),
            (
                0,
                Destination::Tcp {
                    host: "fd00::1".into(),
                    port: 22
                }
            )
        );
        assert_eq!(
            parse_spec("-L", "8080:/run/app:v2.sock").unwrap(),
            Spec {
                bind: None,
                port: 8080,
                to: Destination::Socket("/run/app:v2.sock".into())
            }
        );
        let socket = parse_spec("-L", "[::1]:0:/run/app.sock").unwrap();
        assert_eq!((socket.bind.as_deref(), socket.port), (Some("::1"), 0));
        for bad in [
            "8080",
            "8080:host",
            "x:host:80",
            "1:2:3:4:5",
            "80::80",
            "[::1:80:h:1",
            "a:b:8080:/run/x.sock",
            "x:/run/x.sock",
            ":/run/x.sock",
        ] {
            assert!(parse_spec("-L", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_specs_name_a_node_port_or_a_node_socket() {
        assert_eq!(
            parse_remote("0:localhost:80").unwrap(),
            (
                NodeSide::Port {
                    bind: None,
                    port: 0
                },
                "localhost".into(),
                80
            )
        );
        assert_eq!(
            parse_remote("/run/app:v2/in.sock:localhost:8080").unwrap(),
            (
                NodeSide::Socket("/run/app:v2/in.sock".into()),
                "localhost".into(),
                8080
            )
        );
        assert_eq!(
            parse_remote("/run/in.sock:[::1]:22").unwrap(),
            (NodeSide::Socket("/run/in.sock".into()), "::1".into(), 22)
        );
        for bad in [
            "0:/run/x.sock",
            "/run/in.sock",
            "/run/in.sock:80",
            "/run/in.sock:host:x",
            "/run/in.sock::80",
            "/:host:80",
            "/run/in.sock[::1]:22",
        ] {
            assert!(parse_remote(bad).is_err(), "{bad}");
        }
    }
}
