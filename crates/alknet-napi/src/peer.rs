//! `connect`: calls, subscriptions and pub/sub on a remote node.

use std::net::SocketAddr;
use std::sync::Arc;

use alknet_call::{CallService, OperationRegistry, ALPN};
use alknet_endpoint::{Client, DialOptions, IrohConfig, IrohRelays, IrohTarget, TransportKind};
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::errors::{call_error, parse_json, plain};
use crate::host::Host;
use crate::keypair::Keypair;
use crate::request::{complete, Cancels, Completer};
use crate::subscription::{self, Listener, Subscription};

/// Where and how to dial.
#[napi(object)]
pub struct ConnectOptions {
    /// `host:port` of the node (QUIC or TCP+TLS).
    pub address: Option<String>,
    /// The node's fingerprint (`ed25519:…` or `SHA256:…`), pinned exactly.
    pub fingerprint: Option<String>,
    /// Dial over iroh instead: a ticket (`iroh:<node id>?relay=…&addr=…`) or a bare node id.
    /// The node id is the pin.
    pub iroh: Option<String>,
    /// A relay to reach the iroh node through (added to the ticket's).
    pub iroh_relay: Option<String>,
    /// PEM certificates to trust for the relay.
    pub iroh_relay_ca: Option<String>,
    /// Direct UDP addresses of the iroh node (`ip:port`), added to the ticket's.
    pub iroh_addrs: Option<Vec<String>>,
    /// A bearer token (peer token or `alk_…` API key) sent with every request.
    pub token: Option<String>,
    /// `quic` (default) or `tcp` (TCP+TLS).
    pub transport: Option<String>,
    /// Operations this side serves to the node (a JSON array of specs, answered through the
    /// `host` given to `connect`), so the node can call back.
    pub operations: Option<String>,
}

/// A connection to a remote node.
#[napi]
pub struct Peer {
    peer: alknet_call::Peer,
    client: Client,
    token: Option<String>,
    cancels: Cancels,
    closed: CancellationToken,
    completer: Arc<Completer>,
}

fn transport(name: Option<&str>) -> napi::Result<TransportKind> {
    match name {
        None | Some("quic") => Ok(TransportKind::Quic),
        Some("tcp") => Ok(TransportKind::Tcp),
        Some(other) => Err(plain(format!(
            "transport {other:?} is unknown; use \"quic\" or \"tcp\""
        ))),
    }
}

/// Where to dial, as the options say.
enum Route {
    Direct {
        address: SocketAddr,
        fingerprint: String,
        over: TransportKind,
    },
    Iroh {
        target: IrohTarget,
        config: Box<IrohConfig>,
    },
}

fn route(options: &ConnectOptions) -> napi::Result<Route> {
    if let Some(ticket) = options.iroh.as_deref() {
        let mut target: IrohTarget = ticket.parse().map_err(plain)?;
        let config = alknet_node::IrohSettings {
            relay_ca: options.iroh_relay_ca.clone(),
            ..Default::default()
        }
        .to_endpoint()
        .map_err(plain)?;
        if let Some(relay) = options.iroh_relay.as_deref() {
            match relay.parse::<IrohRelays>().map_err(plain)? {
                IrohRelays::Custom(urls) => target.relay_url = urls.into_iter().next(),
                _ => {
                    return Err(plain(
                        "irohRelay of connect() is the URL of the relay the node uses",
                    ))
                }
            }
        }
        for addr in options.iroh_addrs.iter().flatten() {
            let addr = addr
                .parse()
                .map_err(|e| plain(format!("iroh address {addr:?} is not ip:port: {e}")))?;
            target.direct_addrs.push(addr);
        }
        if let Some(pinned) = options.fingerprint.as_deref() {
            if pinned != target.fingerprint() {
                return Err(plain(format!(
                    "fingerprint {pinned} is not the iroh node id's {}; pin the node you dial",
                    target.fingerprint()
                )));
            }
        }
        return Ok(Route::Iroh {
            target,
            config: Box::new(config),
        });
    }
    let (Some(address), Some(fingerprint)) = (&options.address, &options.fingerprint) else {
        return Err(plain(
            "connect needs address and fingerprint (or iroh: a ticket or node id)",
        ));
    };
    let address: SocketAddr = address
        .parse()
        .map_err(|e| plain(format!("address {address:?} is not host:port: {e}")))?;
    Ok(Route::Direct {
        address,
        fingerprint: fingerprint.clone(),
        over: transport(options.transport.as_deref())?,
    })
}

/// Dials `options.address` with `key`, pinning `options.fingerprint`; the peer's calls finish
/// through `completer`. With `host`, the operations in `options.operations` are served to the
/// node over the same connection.
#[napi(
    ts_args_type = "options: ConnectOptions, key: Keypair, completer: (callId: number, ok: boolean, json: string) => void, host?: Host | undefined | null",
    ts_return_type = "Promise<Peer>"
)]
pub fn connect<'env>(
    env: &'env Env,
    options: ConnectOptions,
    key: &Keypair,
    completer: Completer,
    host: Option<&Host>,
) -> napi::Result<PromiseRaw<'env, Peer>> {
    let route = route(&options)?;
    let registry = match (host, options.operations.as_deref()) {
        (Some(host), Some(ops)) => host.registry(ops)?,
        (None, Some(_)) => {
            return Err(plain("operations were given without a host to answer them"))
        }
        _ => OperationRegistry::new(),
    };
    let service = CallService::anonymous(registry).map_err(plain)?;
    let key = key.key.clone();
    env.spawn_future(async move {
        let (client, conn, fingerprint) = match route {
            Route::Direct {
                address,
                fingerprint,
                over,
            } => {
                let client = Client::new(key).map_err(plain)?;
                let dial = DialOptions::pinned(ALPN, fingerprint.clone()).over(over);
                let conn = client.dial(address, &dial).await.map_err(plain)?;
                (client, conn, fingerprint)
            }
            Route::Iroh { target, config } => {
                let client = Client::with_iroh(key, *config).map_err(plain)?;
                let conn = match client.dial_iroh(&target, ALPN).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        client.close();
                        return Err(plain(e));
                    }
                };
                (client, conn, target.fingerprint())
            }
        };
        let peer = alknet_call::Peer::connect(conn, service, Some(fingerprint));
        Ok(Peer {
            peer,
            client,
            token: options.token,
            cancels: Cancels::default(),
            closed: CancellationToken::new(),
            completer: Arc::new(completer),
        })
    })
}

#[napi]
impl Peer {
    /// Starts a query or mutation; its outcome reaches the completer under `callId`. Options
    /// (JSON): `{ timeoutMs?, cancelId?, token? }`.
    #[napi]
    pub fn call(
        &self,
        call_id: i64,
        operation: String,
        input_json: String,
        options_json: Option<String>,
    ) -> napi::Result<()> {
        let input: Value = parse_json(&input_json, "input")?;
        let request =
            self.cancels
                .request(options_json.as_deref(), &self.closed, self.token.as_deref())?;
        let options = request.options.clone();
        let peer = self.peer.clone();
        complete(&self.completer, call_id, request, async move {
            peer.call_with(&operation, input, options).await
        });
        Ok(())
    }

    /// Cancels the in-flight call started with `{ cancelId }`; it rejects with `CANCELLED`.
    #[napi]
    pub fn cancel(&self, cancel_id: i64) {
        self.cancels.cancel(cancel_id);
    }

    /// Subscribes; `listener` receives `('items', jsonArray)` as items arrive (within the credit
    /// granted by `Subscription.request`), then `('end', '')` or `('error', callErrorJson)`.
    /// Nothing is delivered after `cancel()`.
    #[napi(
        ts_args_type = "operation: string, inputJson: string, optionsJson: string | undefined | null, listener: (event: string, json: string) => void"
    )]
    pub fn subscribe(
        &self,
        operation: String,
        input_json: String,
        options_json: Option<String>,
        listener: Listener,
    ) -> napi::Result<Subscription> {
        let input: Value = parse_json(&input_json, "input")?;
        let request =
            self.cancels
                .request(options_json.as_deref(), &self.closed, self.token.as_deref())?;
        let options = request.options.clone();
        Ok(subscription::spawn(
            self.peer.clone(),
            operation,
            input,
            options,
            listener,
        ))
    }

    /// Publishes `dataJson` to `topic` on the remote node; resolves with the delivery count.
    #[napi]
    pub async fn publish(&self, topic: String, data_json: String) -> napi::Result<u32> {
        let data: Value = parse_json(&data_json, "data")?;
        let delivered = self.peer.publish(&topic, data).await.map_err(call_error)?;
        Ok(u32::try_from(delivered).unwrap_or(u32::MAX))
    }

    /// The remote node's fingerprint as pinned.
    #[napi(getter)]
    pub fn fingerprint(&self) -> Option<String> {
        self.peer.auth().tls_fingerprint.clone()
    }

    /// Closes the connection: in-flight calls and subscriptions end with `UNAVAILABLE`/`CANCELLED`.
    #[napi]
    pub fn close(&self) {
        self.closed.cancel();
        self.peer.close();
        // Inside the runtime, so that the client can close its iroh endpoint gracefully.
        napi::bindgen_prelude::within_runtime_if_available(|| self.client.close());
    }
}
