//! The HTTP side against real clients (`curl`, `openssl s_client`) over real TLS on the node's
//! port: the decoy, ALPN handling, the gateway (JSON and Server-Sent Events) and OpenAPI.

mod support;

use std::process::Stdio;
use std::time::Duration;

use alknet_http::{Decoy, Feature, HttpConfig};
use serde_json::{json, Value};
use support::{curl, node, tool, ALICE_TOKEN};
use tokio::io::{AsyncBufReadExt, BufReader};

fn url(addr: std::net::SocketAddr, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", addr.port())
}

/// What must not show to a client without identity (in curl's verbose output: the response
/// lines, `< …`, and TLS messages, `* …`; not the request curl echoes).
fn assert_anonymous(text: &str) {
    let shown: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("> ") && !l.contains("[:path:"))
        .collect();
    let lower = shown.join("\n").to_lowercase();
    for word in ["alknet", "axum", "hyper", "rust"] {
        assert!(!lower.contains(word), "{word:?} shows in:\n{text}");
    }
}

#[tokio::test]
async fn the_decoy_answers_http1_http2_and_clients_without_alpn() {
    let node = node(HttpConfig::default()).await;
    for (version, alpn) in [("--http1.1", "http/1.1"), ("--http2", "h2")] {
        let (code, body, verbose) = curl(&["-v", version, &url(node.addr, "/")]).await;
        assert_eq!(code, 0, "{verbose}");
        assert!(
            verbose.contains(&format!("ALPN: server accepted {alpn}")),
            "{verbose}"
        );
        assert!(body.contains("<h1>Welcome</h1>"), "{body}");
        assert_anonymous(&verbose);
        assert_anonymous(&body);
    }
    // No ALPN offered at all: HTTP/1.1.
    let (code, body, verbose) = curl(&["-v", "--no-alpn", "--http1.1", &url(node.addr, "/")]).await;
    assert_eq!(code, 0, "{verbose}");
    assert!(verbose.contains("HTTP/1.1 200"), "{verbose}");
    assert!(body.contains("<h1>Welcome</h1>"));

    // Unknown paths, and the features that are off, are the decoy's plain 404.
    for path in ["/nope", "/alknet/call", "/call/math/add", "/openapi.json"] {
        let (_, body, verbose) =
            curl(&["-v", "-X", "POST", "-d", "{}", &url(node.addr, path)]).await;
        assert!(
            verbose.contains("HTTP/2 404")
                || verbose.contains("HTTP/1.1 404")
                || verbose.contains("405"),
            "{path}: {verbose}"
        );
        assert_anonymous(&verbose);
        assert_anonymous(&body);
        let (_, body, verbose) = curl(&["-v", &url(node.addr, path)]).await;
        assert!(verbose.contains(" 404"), "{path}: {verbose}");
        assert!(body.contains("Not Found"));
        assert_anonymous(&verbose);
    }
    node.endpoint.shutdown().await;
}

#[tokio::test]
async fn an_unknown_alpn_gets_the_alert_any_tls_server_sends() {
    let node = node(HttpConfig::default()).await;
    let out = tokio::process::Command::new(tool("openssl"))
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", node.addr.port()),
            "-alpn",
            "foo",
            "-brief",
        ])
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("no application protocol"), "{text}");
    assert_anonymous(&text);
    node.endpoint.shutdown().await;
}

#[tokio::test]
async fn the_decoy_serves_a_directory() {
    let dir = std::env::temp_dir().join(format!("decoy-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("docs")).unwrap();
    std::fs::write(dir.join("index.html"), "<p>my site</p>").unwrap();
    std::fs::write(dir.join("docs/a.txt"), "plain text").unwrap();
    let node = node(HttpConfig {
        decoy: Decoy::Dir(dir.clone()),
        ..HttpConfig::default()
    })
    .await;
    assert_eq!(curl(&[&url(node.addr, "/")]).await.1, "<p>my site</p>");
    assert_eq!(
        curl(&[&url(node.addr, "/docs/a.txt")]).await.1,
        "plain text"
    );
    let (_, body, verbose) = curl(&["-v", &url(node.addr, "/missing")]).await;
    assert!(verbose.contains(" 404"), "{verbose}");
    assert_anonymous(&body);
    node.endpoint.shutdown().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_decoy_forwards_to_an_upstream() {
    // The upstream: a real, separate web server (`python3 -m http.server`).
    let dir = std::env::temp_dir().join(format!("upstream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "from upstream").unwrap();
    let mut upstream = tokio::process::Command::new(tool("python3"))
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    // It is ready once it says where it serves: "Serving HTTP on 127.0.0.1 port N (…)".
    let mut lines = BufReader::new(upstream.stdout.take().unwrap()).lines();
    let line = lines
        .next_line()
        .await
        .unwrap()
        .expect("python3 says where it serves");
    let port: u16 = line
        .split(" port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let node = node(HttpConfig {
        decoy: Decoy::Proxy(format!("http://127.0.0.1:{port}")),
        ..HttpConfig::default()
    })
    .await;
    let body = curl(&[&url(node.addr, "/hello.txt")]).await.1;
    assert_eq!(body, "from upstream");
    node.endpoint.shutdown().await;
    upstream.kill().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

fn gateway() -> HttpConfig {
    HttpConfig {
        gateway: Feature::ON,
        openapi: Feature::ON,
        ..HttpConfig::default()
    }
}

/// POSTs `body` to `/call/<operation>`; returns (status, JSON body).
async fn post(
    addr: std::net::SocketAddr,
    operation: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec![
        "-w",
        "\n%{http_code}",
        "-H",
        "content-type: application/json",
        "-d",
        body,
    ];
    if let Some(auth) = &auth {
        args.extend(["-H", auth.as_str()]);
    }
    let target = url(addr, &format!("/call/{operation}"));
    args.push(&target);
    let (code, out, err) = curl(&args).await;
    assert_eq!(code, 0, "{err}");
    let (json, status) = out.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(json).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_gateway_calls_with_the_same_checks_and_maps_error_codes_to_statuses() {
    let node = node(gateway()).await;
    assert_eq!(
        post(node.addr, "math/add", r#"{"a": 2, "b": 5}"#, None).await,
        (200, json!(7.0))
    );

    let (status, body) = post(node.addr, "math/add", r#"{"a": "x"}"#, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_INPUT"))
    );
    let (status, body) = post(node.addr, "math/add", "not json", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("INVALID_INPUT"))
    );
    let (status, body) = post(node.addr, "no/such", "{}", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );

    let (status, body) = post(node.addr, "todo/secret", "{}", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let (status, body) = post(node.addr, "todo/secret", "{}", Some("wrong")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    assert_eq!(
        post(node.addr, "todo/secret", "{}", Some(ALICE_TOKEN)).await,
        (200, json!("alice"))
    );
    node.endpoint.shutdown().await;
}

#[tokio::test]
async fn a_subscription_streams_server_sent_events_and_a_disconnect_cancels_it() {
    let mut node = node(gateway()).await;
    let mut curl = tokio::process::Command::new(tool("curl"))
        .args([
            "-skN",
            "-X",
            "POST",
            "-d",
            "{}",
            &url(node.addr, "/call/slow/ticks"),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let mut data = Vec::new();
    while data.len() < 3 {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("events keep coming");
        if let Some(item) = line.strip_prefix("data: ") {
            data.push(item.to_owned());
        }
    }
    assert_eq!(data, ["0", "1", "2"]);
    curl.kill().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), node.cancelled.recv())
        .await
        .expect("the client's disconnect cancels the subscription on the node");
    node.endpoint.shutdown().await;
}

#[tokio::test]
async fn openapi_lists_what_the_caller_may_call() {
    let node = node(gateway()).await;
    let (code, anonymous, err) = curl(&[&url(node.addr, "/openapi.json")]).await;
    assert_eq!(code, 0, "{err}");
    let anonymous: Value = serde_json::from_str(&anonymous).unwrap();
    assert_eq!(anonymous["openapi"], "3.1.0");
    let add = &anonymous["paths"]["/call/math/add"]["post"];
    assert_eq!(
        add["requestBody"]["content"]["application/json"]["schema"]["required"],
        json!(["a", "b"])
    );
    assert!(anonymous["paths"].get("/call/todo/secret").is_none());

    let auth = format!("Authorization: Bearer {ALICE_TOKEN}");
    let (_, alice, _) = curl(&["-H", &auth, &url(node.addr, "/openapi.json")]).await;
    let alice: Value = serde_json::from_str(&alice).unwrap();
    assert!(alice["paths"].get("/call/todo/secret").is_some());
    let ticks = &alice["paths"]["/call/slow/ticks"]["post"]["responses"]["200"]["content"];
    assert!(ticks.get("text/event-stream").is_some(), "{ticks}");
    node.endpoint.shutdown().await;
}

/// The response's status line, headers (but `date`) and body, as curl shows them.
async fn response(method: &str, target: &str, token: Option<&str>) -> String {
    let auth = format!("Authorization: Bearer {}", token.unwrap_or_default());
    let mut args = vec!["-v", "-X", method, target];
    if token.is_some() {
        args.extend(["-H", auth.as_str()]);
    }
    if method == "POST" {
        args.extend(["-d", "{}"]);
    }
    let (_, body, verbose) = curl(&args).await;
    let head: Vec<&str> = verbose
        .lines()
        .filter(|l| l.starts_with("< ") && !l.starts_with("< date:"))
        .collect();
    format!("{}\n{body}", head.join("\n"))
}

#[tokio::test]
async fn a_feature_that_requires_an_identity_is_the_decoy_to_everyone_else() {
    let private = Feature {
        enabled: true,
        require_identity: true,
    };
    let node = node(HttpConfig {
        gateway: private,
        openapi: private,
        ..HttpConfig::default()
    })
    .await;
    // Exactly what an unknown path gets.
    for (method, path, token) in [
        ("POST", "/call/math/add", None),
        ("POST", "/call/math/add", Some("wrong")),
        ("GET", "/openapi.json", None),
        ("GET", "/openapi.json", Some("wrong")),
    ] {
        let seen = response(method, &url(node.addr, path), token).await;
        let unknown = response(method, &url(node.addr, "/nope"), token).await;
        assert_eq!(seen, unknown, "{method} {path}");
        assert_anonymous(&seen);
    }
    assert_eq!(
        post(
            node.addr,
            "math/add",
            r#"{"a": 1, "b": 2}"#,
            Some(ALICE_TOKEN)
        )
        .await,
        (200, json!(3.0))
    );
    node.endpoint.shutdown().await;
}
