//! `connect`: calls, subscriptions and pub/sub on a remote node.

use std::sync::Arc;

use alknet_call::{CallService, OperationRegistry};
use alknet_endpoint::Client;
use alknet_node::{ConnectConfig, Connected};
use napi::bindgen_prelude::PromiseRaw;
use napi::Env;
use napi_derive::napi;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::errors::{connect_error, node_error, parse_json, plain};
use crate::host::Host;
use crate::keypair::Keypair;
use crate::request::{complete, Cancels, CompletionQueue, Completions};
use crate::subscription::{self, Listener, Subscription};

/// Where and how to dial.
#[napi(object)]
pub struct ConnectOptions {
    /// The `ConnectConfig` JSON: `address` + `fingerprint`, or `iroh` (a ticket or node id) with
    /// `relay`, `relay_ca`, `iroh_addrs`; `transport` (`quic` or `tcp`).
    pub config: String,
    /// A bearer token (peer token or `alk_…` API key) sent with every request.
    pub token: Option<String>,
    /// Operations this side serves to the node (a JSON array of specs, answered through the
    /// `host` given to `connect`), so the node can call back.
    pub operations: Option<String>,
}

/// A connection to a remote node.
#[napi]
pub struct Peer {
    peer: alknet_call::Peer,
    client: Client,
    key: alknet_core::SecretKey,
    target: alknet_node::DialTarget,
    token: Option<String>,
    cancels: Cancels,
    closed: CancellationToken,
    completions: Arc<Completions>,
}

/// Dials the node `options.config` names with `key`, pinning its key; the peer's calls finish
/// through `completions`. With `host`, the operations in `options.operations` are served to the
/// node over the same connection.
#[napi(
    ts_args_type = "options: ConnectOptions, key: Keypair, completions: CompletionQueue, host?: Host | undefined | null",
    ts_return_type = "Promise<Peer>"
)]
pub fn connect<'env>(
    env: &'env Env,
    options: ConnectOptions,
    key: &Keypair,
    completions: &CompletionQueue,
    host: Option<&Host>,
) -> napi::Result<PromiseRaw<'env, Peer>> {
    let config = ConnectConfig::from_json(&options.config).map_err(node_error)?;
    let target = config.target().map_err(connect_error)?;
    let registry = match (host, options.operations.as_deref()) {
        (Some(host), Some(ops)) => host.registry(ops)?,
        (None, Some(_)) => {
            return Err(plain("operations were given without a host to answer them"))
        }
        _ => OperationRegistry::new(),
    };
    let service = CallService::anonymous(registry).map_err(plain)?;
    let key = key.key.clone();
    let completions = completions.inner.clone();
    env.spawn_future(async move {
        let Connected { peer, client } = alknet_node::connect(key.clone(), target.clone(), service)
            .await
            .map_err(connect_error)?;
        Ok(Peer {
            peer,
            client,
            key,
            target,
            token: options.token,
            cancels: Cancels::default(),
            closed: CancellationToken::new(),
            completions,
        })
    })
}

#[napi]
impl Peer {
    /// Starts a query or mutation; its outcome reaches the completion queue under `callId`. Options
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
        complete(&self.completions, call_id, request, async move {
            peer.call_raw_with(&operation, input, options).await
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

    /// Starts a local SOCKS5 server on `listen` whose CONNECTs leave from the node (names
    /// resolved there), over `via`: `ssh` (default, `alknet/ssh`) or `tunnel` (`alknet/tunnel`,
    /// QUIC only). The node must offer that service and its forwarding policy must allow the
    /// destinations. Its own connection to the node, dialed on first use and redialed when lost.
    #[napi]
    pub async fn socks5(
        &self,
        listen: String,
        via: Option<String>,
    ) -> napi::Result<crate::tunnel::TunnelListener> {
        let opener = crate::tunnel::opener(self.key.clone(), self.target.clone(), via.as_deref())?;
        crate::tunnel::socks5(&listen, opener).await
    }

    /// Starts a local forward (`ssh -L`): connections to `listen` are carried to `host:port` as
    /// the node resolves and reaches it, over `via` (`ssh` or `tunnel`).
    #[napi]
    pub async fn forward(
        &self,
        listen: String,
        host: String,
        port: u16,
        via: Option<String>,
    ) -> napi::Result<crate::tunnel::TunnelListener> {
        let opener = crate::tunnel::opener(self.key.clone(), self.target.clone(), via.as_deref())?;
        crate::tunnel::forward(&listen, opener, host, port).await
    }

    /// Starts a local forward to the Unix socket at `path` on the node (`ssh -L port:/path`,
    /// over SSH): the node's forwarding policy must name the socket in a `sockets` rule.
    #[napi]
    pub async fn forward_socket(
        &self,
        listen: String,
        path: String,
    ) -> napi::Result<crate::tunnel::TunnelListener> {
        crate::tunnel::forward_socket(self.key.clone(), self.target.clone(), &listen, path).await
    }

    /// Starts a remote forward (`ssh -R`) over SSH: the node listens on `listen` (`bind:port`,
    /// port 0 picks one, or an absolute path for a new Unix socket on the node; its forwarding
    /// policy must allow the bind) and each connection it accepts is carried back to `host:port`
    /// as this machine reaches it. The listener's address is the node's.
    #[napi]
    pub async fn remote_forward(
        &self,
        listen: String,
        host: String,
        port: u16,
    ) -> napi::Result<crate::tunnel::TunnelListener> {
        crate::tunnel::remote_forward(self.key.clone(), self.target.clone(), &listen, &host, port)
            .await
    }

    /// Resolves when the connection has closed (either side closed it, or it was lost).
    #[napi]
    pub async fn closed(&self) -> napi::Result<()> {
        self.peer.closed().await;
        Ok(())
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
