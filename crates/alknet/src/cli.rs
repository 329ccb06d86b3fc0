//! The command line: every subcommand and flag, as clap derives.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// alknet: one Ed25519 key per node, one port (QUIC + TCP+TLS, optionally iroh), typed RPC.
#[derive(Debug, Parser)]
#[command(
    name = "alknet",
    version,
    about,
    after_help = "Exit codes: 0 success; 1 a call failed (its code is on stderr); 2 usage or configuration error.\n\
                  Logs go to stderr; ALKNET_LOG takes a tracing filter (info, debug, off)."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a node key (Ed25519, PKCS#8 PEM, mode 0600); never overwrites a file.
    Keygen {
        /// Where to write it (default: $XDG_CONFIG_HOME/alknet/key.pem, else ~/.config/alknet/key.pem).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Print a key's fingerprint (what peers pin) and its iroh node id.
    Id {
        /// The key file (default: --key resolution: ALKNET_KEY, then the default path).
        key: Option<PathBuf>,
    },
    /// API tokens (`alk_…`) for `[[auth.api_keys]]`.
    Token {
        /// What to do with tokens.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run a node from its config file (alknet.toml).
    Serve(ServeArgs),
    /// Call a query or mutation; prints its output as JSON.
    Call {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The operation, e.g. `services/list`.
        operation: String,
        /// Its input as JSON (default `{}`; `-` reads it from stdin).
        input: Option<String>,
    },
    /// Subscribe; prints one JSON line per item until it ends or Ctrl-C cancels it.
    Subscribe {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The subscription operation, e.g. `pubsub/subscribe`.
        operation: String,
        /// Its input as JSON (default `{}`; `-` reads it from stdin).
        input: Option<String>,
    },
    /// Publish JSON to a topic on a node; prints how many subscriptions it reached.
    Pub {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The topic, e.g. `orders/created`.
        topic: String,
        /// The data, as JSON.
        data: String,
    },
    /// List the operations a node offers you (a table on a terminal, JSON otherwise).
    Services {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// A running node's status (needs the `admin` scope).
    Status {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// A running node's configured peers and API keys, without secrets (needs the `admin` scope).
    Peers {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Make a running node reload its config file, as SIGHUP does (needs the `admin` scope).
    Reload {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Tunnels through a node: a local SOCKS5 proxy, -L and -R forwards (until SIGINT/SIGTERM).
    ///
    /// Prints one line per listener on stdout once it is bound: `socks5 listening on ADDR`,
    /// `local SPEC listening on ADDR`, `remote SPEC listening on node port PORT`.
    Connect(ConnectArgs),
    /// Run an iroh relay server (the real `iroh-relay`) from relay.toml.
    Relay {
        /// The relay's config file.
        #[arg(short, long, default_value = "relay.toml")]
        config: PathBuf,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

/// `alknet token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a token: the token goes to stdout (once: only its hash is kept), the config entry
    /// to paste to stderr.
    New {
        /// The public part after `alk_` (ASCII letters and digits), unique per node.
        #[arg(long)]
        prefix: String,
        /// Scopes to grant, repeatable.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
}

/// `alknet serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config file.
    #[arg(short, long, default_value = "alknet.toml")]
    pub config: PathBuf,
    /// Validate the config file (and load the key) and exit: 0 valid, 2 not.
    #[arg(long)]
    pub check: bool,
    /// Also reload when the config file changes (checked every --watch-interval-ms).
    #[arg(long)]
    pub watch: bool,
    /// How often --watch looks at the file.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub watch_interval_ms: u64,
}

/// `alknet connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// A local SOCKS5 proxy on ADDR (`127.0.0.1:1080`; port 0 picks one) whose connections
    /// leave from the node (names resolved there).
    #[arg(long, value_name = "ADDR")]
    pub socks5: Option<std::net::SocketAddr>,
    /// `[bind:]lport:host:port`: a local port whose connections go to host:port from the node;
    /// `[bind:]lport:/path`: to the Unix socket at /path on the node (`--via ssh`; the node's
    /// policy must name it in a `sockets` rule).
    #[arg(short = 'L', value_name = "SPEC")]
    pub local: Vec<String>,
    /// `[bind:]rport:host:port`: the node listens on rport (its loopback unless bind says
    /// otherwise; 0 picks one) and each connection comes back to host:port here (SSH only);
    /// `/path:host:port`: the node listens on a new Unix socket at /path (its policy must allow
    /// it in a `listen` rule's `sockets`; no file may be there; removed when the forward ends).
    #[arg(short = 'R', value_name = "SPEC")]
    pub remote_forward: Vec<String>,
    /// What carries the connections: SSH (`alknet/ssh`, any carrier) or the native tunnel
    /// (`alknet/tunnel`: a QUIC stream, or over TCP+TLS a connection, per forwarded connection; no -R).
    #[arg(long, value_enum, default_value_t = Via::Ssh)]
    pub via: Via,
}

/// How `alknet connect` reaches the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Via {
    /// SSH on the node's port.
    Ssh,
    /// The native tunnel.
    Tunnel,
}

/// Which carrier to force.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Carrier {
    /// QUIC over UDP.
    Quic,
    /// TLS over TCP.
    Tcp,
}

/// Where a node is and who we are to it.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// `host:port` (with --fingerprint), an iroh ticket (`iroh:<node id>?relay=…`) or a node id.
    pub address: String,
    /// The node's fingerprint (`ed25519:…` or `SHA256:…`), pinned exactly.
    #[arg(long, env = "ALKNET_FINGERPRINT")]
    pub fingerprint: Option<String>,
    /// Our key file (default: ALKNET_KEY, then $XDG_CONFIG_HOME/alknet/key.pem if it exists,
    /// else a fresh key for this run).
    #[arg(long, env = "ALKNET_KEY")]
    pub key: Option<PathBuf>,
    /// A bearer token (an `alk_…` API key or a peer token) sent with the request.
    #[arg(long, env = "ALKNET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Force one carrier for host:port (default: QUIC and TCP+TLS race).
    #[arg(long)]
    pub transport: Option<Carrier>,
    /// With iroh: the relay URL the node uses, if the ticket does not name it.
    #[arg(long)]
    pub relay: Option<String>,
    /// With iroh: a PEM file of the relay's certificate (a relay with its own CA).
    #[arg(long, value_name = "FILE")]
    pub relay_ca: Option<PathBuf>,
    /// How long connecting may take.
    #[arg(long, value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,
    /// The deadline of the request (calls; default: the node's).
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}
