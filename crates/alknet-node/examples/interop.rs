//! A Rust node for interop tests through the wire contract (used by `__test__/interop.test.ts`):
//!
//! ```text
//! interop serve                                                 # prints {"address","fingerprint"}, serves until stdin closes
//! interop call      <address> <fingerprint> <operation> <input-json>   # prints the output or the error as JSON
//! interop subscribe <address> <fingerprint> <operation> <input-json>   # prints one JSON line per item
//! ```
//!
//! `serve` offers `rust/echo` (query: answers its input), `math/mul` (query: `{a, b}` integers →
//! their product), `rust/count` (subscription: `{n}` → `0, 1, …, n-1`) and `rust/refuse` (query:
//! fails with its declared code `RUST_REFUSED`). `call` and `subscribe` dial with a fresh key and
//! exit 0, or print the call error as JSON on stdout and exit 1.

use std::process::ExitCode;

use alknet_call::{
    CallError, CallService, ErrorCode, Handler, OperationRegistry, OperationSpec, OperationType,
    Peer,
};
use alknet_core::SecretKey;
use alknet_endpoint::{Client, DialOptions};
use alknet_node::{Node, NodeConfig};
use anyhow::Context;
use futures::StreamExt;
use serde_json::{json, Value};

const USAGE: &str = "usage: interop serve | interop call|subscribe <address> <fingerprint> <operation> <input-json>";

fn operations() -> anyhow::Result<OperationRegistry> {
    let mut ops = OperationRegistry::new();
    ops.query("rust/echo", json!({}), json!({}), |_, input| async move {
        Ok(input)
    })?;
    let integers = json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"]
    });
    ops.query(
        "math/mul",
        integers,
        json!({"type": "integer"}),
        |_, i| async move {
            let (a, b) = (i["a"].as_i64(), i["b"].as_i64());
            match a.zip(b).and_then(|(a, b)| a.checked_mul(b)) {
                Some(product) => Ok(json!(product)),
                None => Err(CallError::new(
                    ErrorCode::InvalidInput,
                    "a and b must be 64-bit integers whose product fits in 64 bits",
                )),
            }
        },
    )?;
    ops.subscription(
        "rust/count",
        json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 1000}}, "required": ["n"]}),
        json!({"type": "integer"}),
        |_, i| futures::stream::iter((0..i["n"].as_u64().unwrap_or(0)).map(|k| Ok(json!(k)))),
    )?;
    ops.register(
        OperationSpec::new("rust/refuse", OperationType::Query, json!({}), json!({}))
            .error("RUST_REFUSED", "always: this operation exists to fail"),
        Handler::unary(|_, input| async move {
            Err(
                CallError::custom("RUST_REFUSED", "the Rust node refuses, as declared")
                    .with_details(json!({"input": input})),
            )
        }),
    )?;
    Ok(ops)
}

/// Serves [`operations`] on `127.0.0.1:0` (QUIC + TCP+TLS, raw key, no peer list) until stdin closes.
async fn serve() -> anyhow::Result<()> {
    let node = Node::builder(NodeConfig::new("127.0.0.1:0".parse()?))
        .key(SecretKey::generate())
        .operations(operations()?)
        .start()
        .await?;
    println!(
        "{}",
        json!({"address": node.local_addr().to_string(), "fingerprint": node.fingerprint()})
    );
    // The parent ends the node by closing stdin (which also happens if the parent dies).
    tokio::task::spawn_blocking(|| {
        std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink())
    })
    .await??;
    node.shutdown().await;
    Ok(())
}

/// Dials `address` with a fresh key, pinning `fingerprint`.
async fn dial(address: &str, fingerprint: &str) -> anyhow::Result<Peer> {
    let addr = address
        .parse()
        .with_context(|| format!("{address:?} is not an ip:port address"))?;
    let conn = Client::new(SecretKey::generate())?
        .dial(addr, &DialOptions::pinned(alknet_call::ALPN, fingerprint))
        .await
        .with_context(|| format!("dialing {address} ({fingerprint})"))?;
    Ok(Peer::connect(
        conn,
        CallService::anonymous(OperationRegistry::new())?,
        Some(fingerprint.to_string()),
    ))
}

/// Runs `call` or `subscribe`; `Ok(Err(e))` is a call error the remote node answered.
async fn client(mode: &str, request: &[String; 4]) -> anyhow::Result<Result<(), CallError>> {
    let [address, fingerprint, operation, input] = request;
    let input: Value =
        serde_json::from_str(input).with_context(|| format!("input {input:?} is not JSON"))?;
    let peer = dial(address, fingerprint).await?;
    let outcome = match mode {
        "call" => match peer.call(operation, input).await {
            Ok(output) => {
                println!("{output}");
                Ok(())
            }
            Err(e) => Err(e),
        },
        _ => match peer.subscribe(operation, input).await {
            Ok(mut items) => loop {
                match items.next().await {
                    Some(Ok(item)) => println!("{item}"),
                    Some(Err(e)) => break Err(e),
                    None => break Ok(()),
                }
            },
            Err(e) => Err(e),
        },
    };
    peer.close();
    Ok(outcome)
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let request: Option<&[String; 4]> = args.get(1..).and_then(|rest| rest.try_into().ok());
    match (args.first().map(String::as_str), request) {
        (Some("serve"), _) if args.len() == 1 => serve().await.map(|()| ExitCode::SUCCESS),
        (Some(mode @ ("call" | "subscribe")), Some(request)) => {
            match client(mode, request).await? {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => {
                    println!("{}", serde_json::to_string(&e)?);
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    }
}
