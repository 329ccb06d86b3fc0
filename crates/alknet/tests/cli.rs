//! The `alknet` command as an operator uses it: real processes, real sockets on loopback,
//! signals sent with `kill`. Every wait is for a line the process prints, never a sleep.

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;
use support::{explain, keygen, run, write, Running, Served};

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", explain(out)))
}

/// The operator quick start of the README: a node key, a client key, a 10-line config.
fn quick_start(dir: &std::path::Path) -> String {
    keygen(dir, "node.key");
    let alice = keygen(dir, "alice.key");
    write(
        dir,
        "alknet.toml",
        &format!(
            r#"# alknet.toml
listen = "127.0.0.1:0"          # QUIC and TCP+TLS on this port ("0.0.0.0:4433" in production)
key_file = "node.key"           # beside this file

[[auth.peers]]
id = "alice"
fingerprints = ["{alice}"]      # `alknet id alice.key`
scopes = ["admin"]
"#
        ),
    );
    alice
}

#[test]
fn keygen_serve_and_call_run_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    quick_start(dir.path());
    let mut node = Served::start(dir.path(), "alknet.toml");
    let out = node.run(dir.path(), "call", &["services/list", "--key", "alice.key"]);
    assert!(out.status.success(), "{}", explain(&out));
    let names: Vec<String> = json(&out)["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"alknet/admin/status".to_string()),
        "{names:?}"
    );

    let out = node.run(dir.path(), "status", &["--key", "alice.key"]);
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(json(&out)["fingerprint"], node.fingerprint);

    node.process.signal("TERM");
    node.process.stderr_line_with("stopped");
    assert_eq!(node.process.wait(), Some(0));
}

#[test]
fn a_second_stop_signal_ends_the_drain_at_once() {
    let dir = tempfile::tempdir().unwrap();
    quick_start(dir.path());
    let text = std::fs::read_to_string(dir.path().join("alknet.toml")).unwrap();
    // Without the second signal, the drain would wait up to ten minutes for the subscriber.
    write(
        dir.path(),
        "alknet.toml",
        &format!("drain_timeout_ms = 600000\n{text}"),
    );
    let mut node = Served::start(dir.path(), "alknet.toml");
    let mut subscriber = Running::start(
        dir.path(),
        &[
            "subscribe",
            &node.address,
            "pubsub/subscribe",
            r#"{"topic":"t/>"}"#,
            "--fingerprint",
            &node.fingerprint,
            "--key",
            "alice.key",
        ],
    );
    // Wait until the subscription is in flight on the node: a publish reaches it.
    (0..200)
        .find(|_| {
            let out = node.run(dir.path(), "pub", &["t/x", "1", "--key", "alice.key"]);
            String::from_utf8_lossy(&out.stdout).trim() == "1"
        })
        .expect("the subscription reached the node");
    assert_eq!(subscriber.stdout_line(), r#"{"data":1,"topic":"t/x"}"#);

    node.process.signal("TERM");
    node.process.stderr_line_with("draining");
    node.process.signal("TERM");
    node.process.stderr_line_with("stopped at once");
    assert_eq!(node.process.wait(), Some(0));
}

#[test]
fn keygen_writes_mode_0600_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let fingerprint = keygen(dir.path(), "node.key");
    let key = dir.path().join("node.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let before = std::fs::read(&key).unwrap();
    let out = run(dir.path(), &["keygen", "-o", "node.key"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&key).unwrap(), before);

    let out = run(dir.path(), &["id", "node.key"]);
    assert!(out.status.success(), "{}", explain(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("fingerprint {fingerprint}")),
        "{text}"
    );
    let hex = fingerprint.strip_prefix("ed25519:").unwrap();
    assert!(text.contains(&format!("iroh:{hex}")), "{text}");
}

#[test]
fn a_minted_token_is_printed_once_and_its_hash_entry_authenticates_it() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "node.key");
    let out = run(
        dir.path(),
        &["token", "new", "--prefix", "ci", "--scope", "admin"],
    );
    assert!(out.status.success(), "{}", explain(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("alk_ci_"), "{token}");
    let entry = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!entry.contains(&token), "the token is printed only once");
    let entry: String = entry
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    write(
        dir.path(),
        "alknet.toml",
        &format!("listen = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n{entry}"),
    );
    let node = Served::start(dir.path(), "alknet.toml");
    let out = node.run(dir.path(), "peers", &["--token", &token]);
    assert!(out.status.success(), "{}", explain(&out));
    let peers = json(&out);
    assert_eq!(peers["api_keys"][0]["prefix"], "ci");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("sha256:"),
        "no hashes in the peer list"
    );

    let out = node.run(dir.path(), "peers", &["--token", "alk_ci_wrong"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"),
        "{}",
        explain(&out)
    );
}

#[test]
fn check_accepts_a_good_file_and_refuses_a_bad_one_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    quick_start(dir.path());
    let out = run(dir.path(), &["serve", "--check", "--config", "alknet.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));

    write(
        dir.path(),
        "bad.toml",
        "listen = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n\n[limits]\nconections_per_ip = 4\n",
    );
    let out = run(dir.path(), &["serve", "--check", "--config", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:5:1:") && err.contains("conections_per_ip"),
        "{err}"
    );

    write(
        dir.path(),
        "nokey.toml",
        "listen = \"127.0.0.1:0\"\nkey_file = \"missing.key\"\n",
    );
    let out = run(dir.path(), &["serve", "--check", "--config", "nokey.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("alknet keygen"),
        "{}",
        explain(&out)
    );
}

#[test]
fn sighup_reload_adds_a_peer_and_a_broken_file_keeps_the_old_config() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "node.key");
    let bob = keygen(dir.path(), "bob.key");
    let base = "listen = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n";
    write(dir.path(), "alknet.toml", base);
    let mut node = Served::start(dir.path(), "alknet.toml");
    let out = node.run(dir.path(), "status", &["--key", "bob.key"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"),
        "{}",
        explain(&out)
    );

    write(
        dir.path(),
        "alknet.toml",
        &format!("{base}[[auth.peers]]\nid = \"bob\"\nfingerprints = [\"{bob}\"]\nscopes = [\"admin\"]\n"),
    );
    node.process.signal("HUP");
    node.process.stderr_line_with("configuration reloaded");
    let out = node.run(dir.path(), "status", &["--key", "bob.key"]);
    assert!(out.status.success(), "{}", explain(&out));

    write(
        dir.path(),
        "alknet.toml",
        &format!("{base}[[auth.peers]]\nid = \"bob\"\nfingerprints = [\"{bob}\"\n"),
    );
    node.process.signal("HUP");
    let refused = node.process.stderr_line_with("reload refused");
    assert!(
        refused.contains("alknet.toml:5:"),
        "the line is named: {refused}"
    );
    let out = node.run(dir.path(), "status", &["--key", "bob.key"]);
    assert!(
        out.status.success(),
        "the old config stays: {}",
        explain(&out)
    );
}

#[test]
fn watch_reloads_when_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "node.key");
    let bob = keygen(dir.path(), "bob.key");
    let base = "listen = \"127.0.0.1:0\"\nkey_file = \"node.key\"\n";
    write(dir.path(), "alknet.toml", base);
    let mut node = Served::start_with(
        dir.path(),
        &[
            "serve",
            "--config",
            "alknet.toml",
            "--watch",
            "--watch-interval-ms",
            "100",
        ],
    );
    write(
        dir.path(),
        "alknet.toml",
        &format!("{base}[[auth.peers]]\nid = \"bob\"\nfingerprints = [\"{bob}\"]\nscopes = [\"admin\"]\n"),
    );
    node.process.stderr_line_with("configuration reloaded");
    let out = node.run(dir.path(), "status", &["--key", "bob.key"]);
    assert!(out.status.success(), "{}", explain(&out));
}

#[test]
fn the_reload_command_applies_the_file_and_reports_static_changes() {
    let dir = tempfile::tempdir().unwrap();
    quick_start(dir.path());
    let node = Served::start(dir.path(), "alknet.toml");
    let text = std::fs::read_to_string(dir.path().join("alknet.toml")).unwrap();
    write(
        dir.path(),
        "alknet.toml",
        &format!("{text}\n[[auth.peers]]\nid = \"carol\"\n"),
    );
    write(
        dir.path(),
        "alknet.toml",
        &std::fs::read_to_string(dir.path().join("alknet.toml"))
            .unwrap()
            .replace(
                "listen = \"127.0.0.1:0\"",
                "listen = \"127.0.0.1:1\"\ntcp = false",
            ),
    );
    let out = node.run(dir.path(), "reload", &["--key", "alice.key"]);
    assert!(out.status.success(), "{}", explain(&out));
    assert_eq!(
        json(&out)["restart_needed"],
        serde_json::json!(["listen", "tcp"])
    );
    let out = node.run(dir.path(), "peers", &["--key", "alice.key"]);
    let ids: Vec<Value> = json(&out)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].clone())
        .collect();
    assert_eq!(ids, ["alice", "carol"]);

    write(dir.path(), "alknet.toml", "listen = 7\n");
    let out = node.run(dir.path(), "reload", &["--key", "alice.key"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("CONFIG_REFUSED") && err.contains("alknet.toml:1:"),
        "{err}"
    );
}

#[test]
fn call_errors_exit_1_with_the_code_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    quick_start(dir.path());
    let node = Served::start(dir.path(), "alknet.toml");
    let out = node.run(dir.path(), "call", &["nothing/here"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("alknet: NOT_FOUND:"),
        "{}",
        explain(&out)
    );

    let out = run(dir.path(), &["call", &node.address, "services/list"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--fingerprint"),
        "{}",
        explain(&out)
    );

    let out = node.run(dir.path(), "call", &["services/list", "{not json"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));

    let out = run(dir.path(), &["call"]);
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out));
}

#[test]
fn pub_reaches_a_subscriber_of_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    // Identified callers (alice) may publish and subscribe anywhere by default.
    quick_start(dir.path());
    let node = Served::start(dir.path(), "alknet.toml");
    let mut subscriber = Running::start(
        dir.path(),
        &[
            "subscribe",
            &node.address,
            "pubsub/subscribe",
            r#"{"topic":"news/>"}"#,
            "--fingerprint",
            &node.fingerprint,
            "--key",
            "alice.key",
        ],
    );
    // The subscription exists once the node counts it as a receiver: publish until it does.
    let delivered = (0..200)
        .find_map(|_| {
            let out = node.run(
                dir.path(),
                "pub",
                &["news/today", r#"{"headline":"hi"}"#, "--key", "alice.key"],
            );
            assert!(out.status.success(), "{}", explain(&out));
            let n: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
            (n > 0).then_some(n)
        })
        .expect("the subscription reached the node");
    assert_eq!(delivered, 1);
    let line: Value = serde_json::from_str(&subscriber.stdout_line()).unwrap();
    assert_eq!(
        line,
        serde_json::json!({"topic": "news/today", "data": {"headline": "hi"}})
    );
}

#[test]
fn completions_and_man_page_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["completions", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("alknet"));
    let out = run(dir.path(), &["man"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains(".TH alknet"));
}
