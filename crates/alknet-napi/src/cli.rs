//! `npx @alkdev/alknet <subcommand>`: the `alknet` command, run by the addon.

use napi_derive::napi;

/// Runs the `alknet` command with `args` (what follows the command name, e.g.
/// `["keygen", "-o", "node.key"]`) on the addon's runtime, printing to this process's stdout and
/// stderr; resolves with the exit code (0 ok, 1 a call failed, 2 usage or configuration).
#[napi]
pub async fn run_cli(args: Vec<String>) -> i32 {
    alknet_cli::signals::use_delivered();
    let argv = std::iter::once("alknet".to_string())
        .chain(args)
        .map(Into::into)
        .collect();
    alknet_cli::run_async(argv).await
}

/// Hands a signal JavaScript received (`SIGHUP`, `SIGTERM` or `SIGINT`) to the running command:
/// inside Node.js, Node owns the process's signal handlers.
#[napi]
pub fn cli_signal(name: String) {
    if let Some(signal) = alknet_cli::signals::Signal::from_name(&name) {
        alknet_cli::signals::deliver(signal);
    }
}
