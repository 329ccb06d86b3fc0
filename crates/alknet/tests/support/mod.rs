//! Running the `alknet` binary as a real process: its output read line by line, signals sent
//! with `kill`, every child killed when its handle drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Generous bound on waiting for a line a process is expected to print; not a timing under
/// test (a 2-core machine with parallel builds is slow).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn alknet() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_alknet"));
    // No default key of the user running the tests.
    command.env_remove("ALKNET_KEY");
    command.env_remove("ALKNET_TOKEN");
    command.env_remove("ALKNET_FINGERPRINT");
    command.env("XDG_CONFIG_HOME", "/nonexistent-alknet-test-config");
    command
}

/// Runs `alknet args…` in `dir` to completion.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    alknet()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("the alknet binary runs")
}

/// What a finished command printed, for assertion messages.
pub fn explain(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A long-running `alknet` process (serve, relay, subscribe).
pub struct Running {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line read so far, for failure messages.
    pub log: Vec<String>,
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Running {
    /// Starts `alknet args…` in `dir`.
    pub fn start(dir: &Path, args: &[&str]) -> Self {
        Self::start_env(dir, args, &[])
    }

    /// Starts `alknet args…` in `dir` with the environment variables `env` set.
    pub fn start_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = alknet()
            .envs(env.iter().copied())
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the alknet binary starts");
        let stdout = lines(child.stdout.take().expect("piped stdout"));
        let stderr = lines(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdout,
            stderr,
            log: Vec::new(),
        }
    }

    /// The process id, to signal.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line (panics after [`PATIENCE`] or at the end of output).
    pub fn stdout_line(&mut self) -> String {
        match self.stdout.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => {
                self.drain_log();
                panic!(
                    "no stdout line ({e}); stderr so far:\n{}",
                    self.log.join("\n")
                )
            }
        }
    }

    /// Stdout lines up to and including the first that starts with `prefix`.
    pub fn stdout_until(&mut self, prefix: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self.stdout_line();
            let done = line.starts_with(prefix);
            seen.push(line);
            if done {
                return seen;
            }
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn stderr_line_with(&mut self, needle: &str) -> String {
        loop {
            match self.stderr.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no stderr line with {needle:?} ({e}); stderr:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Every stderr line, once the process has exited (call after [`wait`](Self::wait)).
    pub fn whole_log(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.recv_timeout(PATIENCE) {
            self.log.push(line);
        }
        self.log.clone()
    }

    fn drain_log(&mut self) {
        while let Ok(line) = self.stderr.try_recv() {
            self.log.push(line);
        }
    }

    /// Sends a signal (`HUP`, `INT`, `TERM`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child.wait().expect("wait for alknet").code()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node started by `alknet serve`: where it listens and what it pins.
pub struct Served {
    /// The process.
    pub process: Running,
    /// `ip:port`.
    pub address: String,
    /// `ed25519:…`.
    pub fingerprint: String,
    /// The iroh ticket, when iroh is on.
    pub iroh: Option<String>,
}

impl Served {
    /// `alknet serve --config <config>` in `dir`, once it printed its `listening` line.
    pub fn start(dir: &Path, config: &str) -> Self {
        Self::start_with(dir, &["serve", "--config", config])
    }

    /// `alknet <args…>` (a `serve` command line) in `dir`, once it printed its `listening` line.
    pub fn start_with(dir: &Path, args: &[&str]) -> Self {
        Self::start_env(dir, args, &[])
    }

    /// [`start_with`](Self::start_with) with the environment variables `env` set.
    pub fn start_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut process = Running::start_env(dir, args, env);
        let lines = process.stdout_until("listening on ");
        let field = |name: &str| {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        let listening = field("listening on ").expect("a listening line");
        Self {
            address: listening
                .split_whitespace()
                .next()
                .expect("an address")
                .to_string(),
            fingerprint: field("fingerprint ").expect("a fingerprint line"),
            iroh: field("iroh "),
            process,
        }
    }

    /// `alknet <command> <address> <args…> --fingerprint <fp>`, run to completion.
    pub fn run(&self, dir: &Path, command: &str, args: &[&str]) -> Output {
        let mut all = vec![command, self.address.as_str()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--fingerprint", &self.fingerprint]);
        run(dir, &all)
    }
}

/// Writes `text` to `dir/name`, returning the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path
}

/// `alknet keygen -o dir/name`, returning the key's fingerprint.
pub fn keygen(dir: &Path, name: &str) -> String {
    let out = run(dir, &["keygen", "-o", name]);
    assert!(out.status.success(), "{}", explain(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
