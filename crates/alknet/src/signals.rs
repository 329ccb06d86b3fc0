//! The signals the long-running commands react to: SIGHUP (reload), SIGTERM and SIGINT (stop).
//!
//! The binary takes them from the operating system. Inside Node.js (`npx @alkdev/alknet`) the
//! process belongs to Node, whose own handlers do not mix with a second set: there the addon
//! calls [`use_delivered`] once and then hands over each signal JavaScript receives with
//! [`deliver`].

use std::sync::OnceLock;

use tokio::sync::broadcast;

use crate::failure::Failure;

/// A signal a command reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGHUP: reload.
    Hangup,
    /// SIGTERM: stop (drain).
    Terminate,
    /// SIGINT (Ctrl-C): stop (drain).
    Interrupt,
}

impl Signal {
    /// `SIGHUP`, `SIGTERM`, `SIGINT` (as Node.js names them).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "SIGHUP" => Some(Signal::Hangup),
            "SIGTERM" => Some(Signal::Terminate),
            "SIGINT" => Some(Signal::Interrupt),
            _ => None,
        }
    }
}

static DELIVERED: OnceLock<broadcast::Sender<Signal>> = OnceLock::new();

/// From now on, commands take their signals from [`deliver`] instead of the operating system.
pub fn use_delivered() {
    DELIVERED.get_or_init(|| broadcast::channel(16).0);
}

/// Hands a signal to the running commands (after [`use_delivered`]).
pub fn deliver(signal: Signal) {
    if let Some(tx) = DELIVERED.get() {
        let _ = tx.send(signal);
    }
}

/// A stream of the signals a command reacts to.
pub struct Signals {
    source: Source,
}

enum Source {
    Delivered(broadcast::Receiver<Signal>),
    #[cfg(unix)]
    Os {
        hup: tokio::signal::unix::Signal,
        term: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
    },
    #[cfg(not(unix))]
    CtrlC,
}

impl Signals {
    /// Starts listening (before the command does anything a signal should interrupt).
    pub fn new() -> Result<Self, Failure> {
        if let Some(tx) = DELIVERED.get() {
            return Ok(Self {
                source: Source::Delivered(tx.subscribe()),
            });
        }
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind| {
                signal(kind).map_err(|e| Failure::usage(format!("cannot handle signals: {e}")))
            };
            Ok(Self {
                source: Source::Os {
                    hup: listen(SignalKind::hangup())?,
                    term: listen(SignalKind::terminate())?,
                    int: listen(SignalKind::interrupt())?,
                },
            })
        }
        #[cfg(not(unix))]
        Ok(Self {
            source: Source::CtrlC,
        })
    }

    /// The next signal.
    pub async fn next(&mut self) -> Signal {
        match &mut self.source {
            Source::Delivered(rx) => loop {
                match rx.recv().await {
                    Ok(signal) => return signal,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => {
                        return std::future::pending().await
                    }
                }
            },
            #[cfg(unix)]
            Source::Os { hup, term, int } => tokio::select! {
                _ = hup.recv() => Signal::Hangup,
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Interrupt,
            },
            #[cfg(not(unix))]
            Source::CtrlC => {
                let _ = tokio::signal::ctrl_c().await;
                Signal::Interrupt
            }
        }
    }

    /// The next signal that asks to stop (SIGTERM or SIGINT).
    pub async fn stop(&mut self) -> Signal {
        loop {
            let signal = self.next().await;
            if signal != Signal::Hangup {
                return signal;
            }
        }
    }
}
