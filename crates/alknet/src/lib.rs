//! The `alknet` command: keys, a node configured by `alknet.toml`, calls from the shell, the
//! node's control API, and an iroh relay of your own.
//!
//! The logic is this library so that the binary (`src/main.rs`) and the Node.js addon
//! (`npx @alkdev/alknet …`, through `runCli` in `alknet-napi`) run the same entry point.
//!
//! ```no_run
//! // What `alknet keygen -o node.key` does, from a program:
//! let code = alknet_cli::run(["alknet", "keygen", "-o", "node.key"]);
//! assert_eq!(code, 0);
//! ```
//!
//! Exit codes: 0 success, 1 a call failed (its code first on stderr), 2 usage or configuration.

pub mod admin;
pub mod cli;
pub mod config_file;
pub mod failure;
pub mod keys;
pub mod relay;
pub mod remote;
pub mod serve;
pub mod signals;
pub mod tunnel;

use std::ffi::OsString;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, TokenCommand};
use crate::failure::{Failure, Outcome};

/// Parses `args` (the program name first) and runs the command on a new Tokio runtime; returns
/// the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("alknet: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    runtime.block_on(run_async(args))
}

/// Like [`run`], on the caller's Tokio runtime.
pub async fn run_async(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_logging(&cli.command);
    match execute(cli.command).await {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("alknet: {failure}");
            i32::from(failure.exit)
        }
    }
}

/// Logs go to stderr: `info` for the long-running commands, warnings otherwise; `ALKNET_LOG`
/// takes a `tracing` filter. (Inside the Node.js addon its own logger is already installed.)
fn init_logging(command: &Command) {
    let default = match command {
        Command::Serve(_) | Command::Relay { .. } => "info",
        _ => "warn",
    };
    let filter = log_filter(default);
    // Colour only for a terminal: a log file or fail2ban reads the plain `field=value` lines.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// `ALKNET_LOG` as a filter (see [`alknet_core::log_text::filter_spec`]), or `default` when
/// it is unset or not a filter.
pub fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    let configured = std::env::var("ALKNET_LOG").ok();
    tracing_subscriber::EnvFilter::try_new(alknet_core::log_text::filter_spec(
        configured.as_deref(),
        default,
    ))
    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

async fn execute(command: Command) -> Outcome {
    match command {
        Command::Keygen { output } => keys::keygen(output),
        Command::Id { key } => keys::id(key),
        Command::Token {
            command: TokenCommand::New { prefix, scopes },
        } => keys::token_new(&prefix, &scopes),
        Command::Serve(args) => serve::serve(args).await,
        Command::Call {
            remote,
            operation,
            input,
        } => {
            let input = remote::json_arg("input", input.as_deref())?;
            remote::call(&remote, &operation, input).await
        }
        Command::Subscribe {
            remote,
            operation,
            input,
        } => {
            let input = remote::json_arg("input", input.as_deref())?;
            remote::subscribe(&remote, &operation, input).await
        }
        Command::Pub {
            remote,
            topic,
            data,
        } => {
            let data = remote::json_arg("data", Some(&data))?;
            remote::publish(&remote, &topic, data).await
        }
        Command::Services { remote } => remote::services(&remote).await,
        Command::Status { remote } => {
            remote::call(&remote, "alknet/admin/status", Value::Null).await
        }
        Command::Peers { remote } => remote::call(&remote, "alknet/admin/peers", Value::Null).await,
        Command::Reload { remote } => {
            remote::call(&remote, "alknet/admin/reload", Value::Null).await
        }
        Command::Connect(args) => tunnel::connect(args).await,
        Command::Relay { config } => relay::relay(&config).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "alknet", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| Failure::usage(format!("writing the man page: {e}"))),
    }
}

use serde_json::Value;
