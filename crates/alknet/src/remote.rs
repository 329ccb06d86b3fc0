//! The commands that talk to a running node: `call`, `subscribe`, `pub`, `services`, and the
//! control commands `status`, `peers`, `reload`. All dial through `alknet_node::connect`.

use std::io::{IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use alknet_call::{CallService, OperationRegistry, Peer, RequestOptions};
use alknet_core::SecretKey;
use alknet_endpoint::Client;
use alknet_node::{connect, ConnectConfig, ConnectError, DialTarget, Transport};
use futures::StreamExt;
use serde_json::Value;

use crate::cli::{Carrier, RemoteArgs};
use crate::failure::{Failure, Outcome};
use crate::keys::load_key;
use crate::signals::Signals;

/// How long a closing client waits for the node to be told.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A connection to a node, and the options every request on it carries.
pub struct Remote {
    peer: Peer,
    client: Client,
    token: Option<String>,
    timeout: Option<Duration>,
}

fn looks_like_iroh(address: &str) -> bool {
    address.starts_with(alknet_endpoint::TICKET_SCHEME)
        || (address.len() == 64 && address.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `host:port` → an IP address and port (the first the resolver gives).
async fn resolve(address: &str) -> Result<SocketAddr, Failure> {
    if let Ok(addr) = address.parse() {
        return Ok(addr);
    }
    let mut found = tokio::net::lookup_host(address).await.map_err(|e| {
        Failure::usage(format!(
            "{address:?} is not host:port, an iroh ticket (iroh:…) or a node id: {e}"
        ))
    })?;
    found
        .next()
        .ok_or_else(|| Failure::call(format!("UNREACHABLE: {address} resolves to no address")))
}

fn connect_failure(e: ConnectError) -> Failure {
    let message = format!("{}: {e}", e.code());
    match e {
        ConnectError::InvalidOption { .. } => Failure::usage(message),
        _ => Failure::call(message),
    }
}

/// Where the node `args` name is (pinned), and our key: `--key`, else a fresh one.
pub async fn target(args: &RemoteArgs) -> Result<(DialTarget, SecretKey), Failure> {
    let mut config = ConnectConfig {
        fingerprint: args.fingerprint.clone(),
        relay: args.relay.clone(),
        connect_timeout_ms: args.connect_timeout_ms,
        transport: args.transport.map(|t| match t {
            Carrier::Quic => Transport::Quic,
            Carrier::Tcp => Transport::Tcp,
        }),
        ..ConnectConfig::default()
    };
    if let Some(path) = &args.relay_ca {
        config.relay_ca = Some(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("--relay-ca {}: {e}", path.display())))?,
        );
    }
    if looks_like_iroh(&args.address) {
        config.iroh = Some(args.address.clone());
    } else {
        if args.fingerprint.is_none() {
            return Err(Failure::usage(format!(
                    "{} needs --fingerprint (or ALKNET_FINGERPRINT): the node prints it when it starts, and `alknet id` prints it from its key",
                    args.address
                )));
        }
        config.address = Some(resolve(&args.address).await?.to_string());
    }
    let target = config.target().map_err(connect_failure)?;
    let key = load_key(args.key.as_deref())?.unwrap_or_else(SecretKey::generate);
    Ok((target, key))
}

impl Remote {
    /// Dials the node `args` name.
    pub async fn connect(args: &RemoteArgs) -> Result<Self, Failure> {
        let (target, key) = target(args).await?;
        let service = CallService::anonymous(OperationRegistry::new())
            .map_err(|e| Failure::usage(e.to_string()))?;
        let connected = connect(key, target, service)
            .await
            .map_err(connect_failure)?;
        Ok(Self {
            peer: connected.peer,
            client: connected.client,
            token: args.token.clone(),
            timeout: args.timeout_ms.map(Duration::from_millis),
        })
    }

    fn options(&self) -> RequestOptions {
        RequestOptions {
            auth_token: self.token.clone(),
            timeout: self.timeout,
            cancel: None,
        }
    }

    /// Calls a query or mutation.
    pub async fn call(&self, operation: &str, input: Value) -> Result<Value, Failure> {
        Ok(self
            .peer
            .call_with(operation, input, self.options())
            .await?)
    }

    /// Closes the connection and waits until the node was told.
    pub async fn close(self) {
        self.peer.close();
        self.client.close_and_wait(CLOSE_WAIT).await;
    }
}

/// Parses a JSON argument (`-`: read from stdin; none: `{}`).
pub fn json_arg(what: &str, text: Option<&str>) -> Result<Value, Failure> {
    let text = match text {
        None => return Ok(Value::Object(Default::default())),
        Some("-") => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| Failure::usage(format!("{what}: reading stdin: {e}")))?;
            input
        }
        Some(text) => text.to_string(),
    };
    serde_json::from_str(&text).map_err(|e| {
        Failure::usage(format!(
            "{what} is not JSON ({e}); quote it for the shell, e.g. '{{\"a\": 1}}'"
        ))
    })
}

/// Prints a JSON value: indented on a terminal, one line otherwise.
pub fn print_json(value: &Value) {
    let text = if std::io::stdout().is_terminal() {
        serde_json::to_string_pretty(value)
    } else {
        serde_json::to_string(value)
    };
    println!("{}", text.unwrap_or_default());
}

/// Connects, runs `f`, closes; the connection is closed whatever `f` returned.
async fn with_remote(args: &RemoteArgs, f: impl AsyncFnOnce(&Remote) -> Outcome) -> Outcome {
    let remote = Remote::connect(args).await?;
    let outcome = f(&remote).await;
    remote.close().await;
    outcome
}

/// `alknet call ADDR OP [JSON]` (and the control commands, which are calls).
pub async fn call(args: &RemoteArgs, operation: &str, input: Value) -> Outcome {
    with_remote(args, async |remote| {
        print_json(&remote.call(operation, input).await?);
        Ok(())
    })
    .await
}

/// `alknet pub ADDR TOPIC JSON`.
pub async fn publish(args: &RemoteArgs, topic: &str, data: Value) -> Outcome {
    let input = serde_json::json!({ "topic": topic, "data": data });
    with_remote(args, async |remote| {
        let out = remote.call("pubsub/publish", input).await?;
        println!("{}", out["delivered"]);
        Ok(())
    })
    .await
}

/// `alknet services ADDR`: a table on a terminal, the JSON of `services/list` otherwise.
pub async fn services(args: &RemoteArgs) -> Outcome {
    with_remote(args, async |remote| {
        let list = remote.call("services/list", Value::Null).await?;
        if !std::io::stdout().is_terminal() {
            print_json(&list);
            return Ok(());
        }
        let ops = list["operations"].as_array().cloned().unwrap_or_default();
        let rows: Vec<[String; 3]> = ops
            .iter()
            .map(|op| {
                let text = |k: &str| op[k].as_str().unwrap_or_default().to_string();
                [text("name"), text("type"), text("description")]
            })
            .collect();
        let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0).max(4);
        let (w0, w1) = (width(0), width(1));
        println!("{:w0$}  {:w1$}  DESCRIPTION", "NAME", "TYPE");
        for [name, kind, description] in rows {
            println!("{name:w0$}  {kind:w1$}  {description}");
        }
        Ok(())
    })
    .await
}

/// `alknet subscribe ADDR OP [JSON]`: one JSON line per item. Ctrl-C (SIGINT) or a closed
/// stdout cancels the subscription on the node, then exits 0.
pub async fn subscribe(args: &RemoteArgs, operation: &str, input: Value) -> Outcome {
    with_remote(args, async |remote| {
        let mut items = remote
            .peer
            .subscribe_with(operation, input, remote.options())
            .await?;
        let mut signals = Signals::new()?;
        let mut stdout = std::io::stdout();
        loop {
            tokio::select! {
                item = items.next() => match item {
                    Some(Ok(value)) => {
                        let line = serde_json::to_string(&value).unwrap_or_default();
                        if writeln!(stdout, "{line}").and_then(|_| stdout.flush()).is_err() {
                            return Ok(()); // stdout closed (`| head`): dropping `items` cancels
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                },
                _ = signals.stop() => return Ok(()), // dropping `items` cancels it on the node
            }
        }
    })
    .await
}
