//! `alknet connect` as a user runs it: `alknet serve` and `alknet connect` as real processes,
//! `curl` through the SOCKS5 proxy and the forwards to a local HTTP server. Every wait is for a
//! line a process prints.
//!
//! curl is installed with apt-get where missing (as root); elsewhere the test says so and skips,
//! and under `CI=true` a skip is a failure.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

use support::{explain, keygen, run, write, Running, Served};

/// A tiny HTTP server on loopback in a thread: every request gets `hello <tag>`.
fn http_server(tag: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(socket) = socket else { continue };
            std::thread::spawn(move || answer_http(socket, tag));
        }
    });
    port
}

/// The same on a Unix socket at `path`.
fn unix_http_server(path: &Path, tag: &'static str) {
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(socket) = socket else { continue };
            std::thread::spawn(move || answer_http(socket, tag));
        }
    });
}

/// Reads one request head and answers `200` with body `hello <tag>`.
fn answer_http(mut socket: impl Read + Write, tag: &str) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("hello {tag}");
    let _ = write!(
        socket,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether curl is there, installing it with apt-get where that works.
fn curl_installed() -> bool {
    if !which("curl") && which("apt-get") {
        let _ = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl",
            ])
            .stdout(Stdio::null())
            .status();
    }
    if which("curl") {
        return true;
    }
    let message = "skipped: curl not installed (Debian: apt-get install curl)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("{message}");
    false
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {args:?}: {}", explain(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A node with SSH and the native tunnel, alice in its peers, loopback opened for her.
fn node(dir: &Path) -> Served {
    keygen(dir, "node.key");
    let alice = keygen(dir, "alice.key");
    write(
        dir,
        "alknet.toml",
        &format!(
            r#"listen = "127.0.0.1:0"
key_file = "node.key"

[services]
ssh = true
tunnel = true

[[auth.peers]]
id = "alice"
fingerprints = ["{alice}"]

[[forwarding.rules]]
peers = ["alice"]
hosts = ["127.0.0.1"]
action = "allow"

[[forwarding.rules]]
peers = ["alice"]
sockets = ["{sockets}/"]
action = "allow"

[[forwarding.rules]]
peers = ["alice"]
direction = "listen"
sockets = ["{sockets}/"]
action = "allow"
"#,
            sockets = dir.join("sockets").display()
        ),
    );
    std::fs::create_dir(dir.join("sockets")).unwrap();
    unix_http_server(&dir.join("sockets/app.sock"), "unix");
    unix_http_server(&dir.join("other.sock"), "other");
    // At `debug`, so the test sees that no crate's debug lines give away a destination.
    Served::start_env(
        dir,
        &["serve", "--config", "alknet.toml"],
        &[("ALKNET_LOG", "debug")],
    )
}

/// `alknet connect <node> … --key alice.key`, once it announced `lines` listeners.
fn connect(dir: &Path, node: &Served, args: &[&str], lines: usize) -> (Running, Vec<String>) {
    let mut all = vec!["connect", node.address.as_str()];
    all.extend_from_slice(&["--fingerprint", &node.fingerprint, "--key", "alice.key"]);
    all.extend_from_slice(args);
    let mut process = Running::start(dir, &all);
    let announced = (0..lines).map(|_| process.stdout_line()).collect();
    (process, announced)
}

/// The address at the end of an announcement line.
fn last_word(line: &str) -> &str {
    line.rsplit(' ').next().unwrap()
}

/// curl through the announced SOCKS5 proxy (the name resolved on the node) and the `-L` port.
fn socks5_and_local_forward_fetch(lines: &[String], http: u16) {
    let url = format!("http://localhost:{http}/");
    assert_eq!(
        curl(&["--socks5-hostname", last_word(&lines[0]), &url]),
        "hello connect"
    );
    assert_eq!(
        curl(&[&format!("http://{}/", last_word(&lines[1]))]),
        "hello connect"
    );
}

#[test]
fn socks5_local_and_remote_forwards_through_a_served_node() {
    if !curl_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let http = http_server("connect");
    let mut served = node(d);
    let local_spec = format!("0:127.0.0.1:{http}");
    let remote_spec = format!("0:127.0.0.1:{http}");
    let (mut ssh, lines) = connect(
        d,
        &served,
        &[
            "--socks5",
            "127.0.0.1:0",
            "-L",
            &local_spec,
            "-R",
            &remote_spec,
        ],
        3,
    );
    assert!(
        lines[0].starts_with("socks5 listening on 127.0.0.1:"),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!("local {local_spec} listening on {}", last_word(&lines[1]))
    );
    assert!(
        lines[2].starts_with(&format!("remote {remote_spec} listening on node port ")),
        "{lines:?}"
    );
    socks5_and_local_forward_fetch(&lines, http);
    // -R: the node's port comes back here to the HTTP server.
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{}/", last_word(&lines[2]))]),
        "hello connect"
    );
    ssh.signal("TERM");
    assert_eq!(ssh.wait(), Some(0));

    // -L to a Unix socket on the node, which the node's `sockets` rule opens for alice; a socket
    // the rule does not name is refused (curl gets the connection closed). -R to a new socket on
    // the node, which its `listen` rule allows: it comes back here to the HTTP server, and goes
    // when alknet connect stops.
    let socket = format!("0:{}", d.join("sockets/app.sock").display());
    let other = format!("0:{}", d.join("other.sock").display());
    let node_socket = d.join("sockets/in.sock");
    let remote_socket = format!("{}:127.0.0.1:{http}", node_socket.display());
    let (mut unix, lines) = connect(
        d,
        &served,
        &["-L", &socket, "-L", &other, "-R", &remote_socket],
        3,
    );
    assert_eq!(
        lines[2],
        format!(
            "remote {remote_socket} listening on node socket {}",
            node_socket.display()
        )
    );
    assert_eq!(
        curl(&["--unix-socket", node_socket.to_str().unwrap(), "http://x/"]),
        "hello connect"
    );
    // The node logs the forward and the connection it carried, never the path, as plain
    // `field=value` text (no colour codes, no quotes) for fail2ban to match.
    for kind in ["kind=streamlocal-forward ", "kind=forwarded-streamlocal "] {
        let line = served.process.stderr_line_with(kind);
        assert!(
            line.contains("peer=alice")
                && line.contains("result=opened")
                && !line.contains("in.sock")
                && !line.contains('\x1b'),
            "{line}"
        );
    }
    assert_eq!(
        curl(&[&format!("http://{}/", last_word(&lines[0]))]),
        "hello unix"
    );
    let refused = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .arg(format!("http://{}/", last_word(&lines[1])))
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a socket no rule names was reached"
    );
    unix.signal("TERM");
    assert_eq!(unix.wait(), Some(0));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::symlink_metadata(&node_socket).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the -R socket is still there after alknet connect stopped"
        );
        std::thread::yield_now();
    }

    // The native tunnel: SOCKS5 and -L; SIGINT stops it.
    let (mut native, lines) = connect(
        d,
        &served,
        &[
            "--via",
            "tunnel",
            "--socks5",
            "127.0.0.1:0",
            "-L",
            &local_spec,
        ],
        2,
    );
    socks5_and_local_forward_fetch(&lines, http);
    native.signal("INT");
    assert_eq!(native.wait(), Some(0));
    served.process.signal("TERM");
    assert_eq!(served.process.wait(), Some(0));
    // Not a destination, not a socket path, not even at `debug`.
    let log = served.process.whole_log();
    let http_destination = format!("127.0.0.1:{http}");
    for line in &log {
        assert!(
            !line.contains(".sock") && !line.contains(&http_destination),
            "a log line names a destination: {line}"
        );
    }
    assert!(log.iter().any(|line| line.contains("DEBUG")), "{log:?}");
}

#[test]
fn connect_refuses_bad_arguments_with_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (args, needle) in [
        (
            &["connect", "127.0.0.1:1", "--fingerprint", "ed25519:00"][..],
            "needs --socks5",
        ),
        (
            &[
                "connect",
                "127.0.0.1:1",
                "--fingerprint",
                "ed25519:00",
                "-L",
                "8080:host",
            ],
            "expected [bind:]port:host:port",
        ),
        (
            &[
                "connect",
                "127.0.0.1:1",
                "--fingerprint",
                "ed25519:00",
                "--via",
                "tunnel",
                "-R",
                "0:127.0.0.1:80",
            ],
            "-R needs --via ssh",
        ),
        (
            &[
                "connect",
                "127.0.0.1:1",
                "--fingerprint",
                "ed25519:00",
                "--via",
                "tunnel",
                "-L",
                "0:/run/app.sock",
            ],
            "a Unix socket on the node needs --via ssh",
        ),
        (
            &[
                "connect",
                "127.0.0.1:1",
                "--fingerprint",
                "ed25519:00",
                "-R",
                "0:/run/app.sock",
            ],
            "goes to host:port here, not to a Unix socket",
        ),
    ] {
        let out = run(d, args);
        assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(needle),
            "{args:?}: {}",
            explain(&out)
        );
    }
}
