//! The node's control API, as built-in `alknet/call` operations restricted to identities with
//! the `admin` scope: `alknet/admin/status`, `alknet/admin/peers`, `alknet/admin/reload`.
//!
//! The operations do not touch the node: each sends a request to the serve loop, which owns the
//! node and answers (a reload takes the same path as SIGHUP).

use alknet_call::access::Access;
use alknet_call::registry::RegistryError;
use alknet_call::{CallError, ErrorCode, Handler, OperationRegistry, OperationSpec, OperationType};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// The scope every control operation requires.
pub const ADMIN_SCOPE: &str = "admin";
/// The error code of a reload whose file was refused.
pub const CONFIG_REFUSED: &str = "CONFIG_REFUSED";

/// What a control operation asks the serve loop.
#[derive(Clone, Copy, Debug)]
pub enum Ask {
    /// The node's status.
    Status,
    /// The configured peers and API keys, without secrets.
    Peers,
    /// Reload the config file.
    Reload,
}

/// A request to the serve loop, with where to answer.
pub type AdminRequest = (Ask, oneshot::Sender<Result<Value, CallError>>);

/// The control operations, sending their requests to `loop_tx`.
pub fn operations(loop_tx: mpsc::Sender<AdminRequest>) -> Result<OperationRegistry, RegistryError> {
    let mut ops = OperationRegistry::new();
    let admin = Access {
        required_scopes: vec![ADMIN_SCOPE.into()],
        ..Access::default()
    };
    let specs = [
        ("status", Ask::Status, OperationType::Query, "The node's identity, addresses, config file and uptime."),
        ("peers", Ask::Peers, OperationType::Query, "The configured peers and API keys (ids, fingerprints, scopes; never token hashes)."),
        ("reload", Ask::Reload, OperationType::Mutation, "Reloads the node's config file, as SIGHUP does: the dynamic part applies at once, static changes need a restart."),
    ];
    for (name, ask, kind, description) in specs {
        let mut spec = OperationSpec::new(
            &format!("alknet/admin/{name}"),
            kind,
            json!({ "type": ["object", "null"] }),
            json!({ "type": "object" }),
        )
        .describe(description)
        .access(admin.clone());
        if matches!(ask, Ask::Reload) {
            spec = spec.error(
                CONFIG_REFUSED,
                "the file is invalid; the running configuration stays in force",
            );
        }
        let tx = loop_tx.clone();
        ops.register(
            spec,
            Handler::unary(move |_, _| {
                let tx = tx.clone();
                async move {
                    let (reply, answer) = oneshot::channel();
                    let gone =
                        || CallError::new(ErrorCode::Unavailable, "the node is shutting down");
                    tx.send((ask, reply)).await.map_err(|_| gone())?;
                    answer.await.map_err(|_| gone())?
                }
            }),
        )?;
    }
    Ok(ops)
}
