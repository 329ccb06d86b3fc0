//! The WebSocket carrier against a real node, with a real WebSocket client (tokio-tungstenite)
//! over real TLS: calls, subscriptions, the bearer subprotocol, and every kind of bad input.

mod support;

use std::time::Duration;

use alknet_call::CallOptions;
use alknet_http::{Feature, HttpConfig};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{node, node_with, tls, ALICE_TOKEN, BOB_TOKEN, KEY_TOKEN};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn websocket() -> HttpConfig {
    HttpConfig {
        websocket: Feature::ON,
        ..HttpConfig::default()
    }
}

/// Opens `/alknet/call` offering `protocols`; returns the socket and the selected subprotocol.
async fn open(addr: std::net::SocketAddr, protocols: &str) -> (Ws, Option<String>) {
    let stream = tls(addr, &[b"http/1.1"]).await;
    let mut request = "wss://localhost/alknet/call".into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocols).unwrap(),
    );
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    let selected = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    (ws, selected)
}

fn requested(id: &str, operation: &str, input: Value) -> Message {
    envelope(id, json!({ "operationId": operation, "input": input }))
}

fn envelope(id: &str, payload: Value) -> Message {
    let json = json!({ "type": "call.requested", "id": id, "payload": payload });
    Message::Binary(serde_json::to_vec(&json).unwrap().into())
}

/// The next envelope (binary messages only; anything else fails the test).
async fn next(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("socket open").expect("no error") {
            Message::Binary(b) => return serde_json::from_slice(&b).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a binary message, got {other:?}"),
        }
    }
}

/// The close code the server sends next (it may first answer what was in flight).
async fn close_code(ws: &mut Ws) -> CloseCode {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code,
            Some(Ok(Message::Close(None))) => panic!("closed without a code"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("socket failed before a close frame: {e}"),
            None => panic!("socket ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn a_call_and_a_subscription_over_a_websocket() {
    let node = node(websocket()).await;
    let (mut ws, selected) = open(node.addr, "alknet.call").await;
    assert_eq!(selected.as_deref(), Some("alknet.call"));
    ws.send(requested("1", "/math/add", json!({"a": 2, "b": 3})))
        .await
        .unwrap();
    let answer = next(&mut ws).await;
    assert_eq!(answer["type"], "call.responded");
    assert_eq!(answer["id"], "1");
    assert_eq!(answer["payload"]["output"], json!(5.0));

    // Schema checks apply as on every carrier.
    ws.send(requested("2", "/math/add", json!({"a": "x"})))
        .await
        .unwrap();
    let answer = next(&mut ws).await;
    assert_eq!(answer["type"], "call.error");
    assert_eq!(answer["payload"]["code"], "INVALID_INPUT");

    // A subscription streams until aborted; the abort cancels it on the node.
    let mut node = node;
    ws.send(requested("3", "/slow/ticks", json!({})))
        .await
        .unwrap();
    for n in 0..3 {
        let item = next(&mut ws).await;
        assert_eq!(
            (item["type"].as_str(), item["payload"]["output"].as_u64()),
            (Some("call.responded"), Some(n))
        );
    }
    let abort = json!({ "type": "call.aborted", "id": "3", "payload": {} });
    ws.send(Message::Binary(serde_json::to_vec(&abort).unwrap().into()))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), node.cancelled.recv())
        .await
        .expect("the subscription is cancelled on the node");
    ws.close(None).await.unwrap();
    node.endpoint.shutdown().await;
}

#[tokio::test]
async fn a_bearer_subprotocol_gives_the_connection_its_identity_and_is_never_echoed() {
    let node = node(websocket()).await;
    let offered = format!("alknet.call, alknet.bearer.{ALICE_TOKEN}");
    let (mut ws, selected) = open(node.addr, &offered).await;
    assert_eq!(selected.as_deref(), Some("alknet.call"));
    ws.send(requested("1", "/todo/secret", json!({})))
        .await
        .unwrap();
    let answer = next(&mut ws).await;
    assert_eq!(answer["payload"]["output"], "alice", "{answer}");

    // An invalid token does not fail the upgrade: the connection has no identity.
    let (mut anonymous, selected) = open(node.addr, "alknet.call, alknet.bearer.wrong").await;
    assert_eq!(selected.as_deref(), Some("alknet.call"));
    anonymous
        .send(requested("1", "/todo/secret", json!({})))
        .await
        .unwrap();
    let answer = next(&mut anonymous).await;
    assert_eq!(answer["type"], "call.error");
    assert_eq!(answer["payload"]["code"], "UNAUTHENTICATED");
    // Open operations still work, and a per-request auth_token still counts.
    anonymous
        .send(requested("2", "/math/add", json!({"a": 1, "b": 1})))
        .await
        .unwrap();
    assert_eq!(next(&mut anonymous).await["payload"]["output"], json!(2.0));
    anonymous
        .send(envelope(
            "3",
            json!({"operationId": "/todo/secret", "input": {}, "auth_token": ALICE_TOKEN}),
        ))
        .await
        .unwrap();
    assert_eq!(next(&mut anonymous).await["payload"]["output"], "alice");
    node.endpoint.shutdown().await;
}

#[tokio::test]
async fn bad_input_closes_that_socket_with_the_contract_code_and_others_go_on() {
    let options = CallOptions {
        max_frame: 4096,
        ..CallOptions::default()
    };
    let node = node_with(websocket(), options).await;
    // A bystander, open across all the bad clients.
    let (mut bystander, _) = open(node.addr, "alknet.call").await;

    let (mut ws, _) = open(node.addr, "alknet.call").await;
    ws.send(Message::Text("{}".into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Unsupported);

    let (mut ws, _) = open(node.addr, "alknet.call").await;
    ws.send(Message::Binary(vec![b' '; 5000].into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Size);

    let (mut ws, _) = open(node.addr, "alknet.call").await;
    ws.send(Message::Binary(b"not json".to_vec().into()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Protocol);

    let (mut ws, _) = open(node.addr, "alknet.call").await;
    ws.send(Message::Binary(
        br#"{"type":"call.requested"}"#.to_vec().into(),
    ))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Protocol);

    let (mut ws, _) = open(node.addr, "alknet.call").await;
    ws.send(Message::Binary(Vec::new().into())).await.unwrap();
    assert_eq!(close_code(&mut ws).await, CloseCode::Protocol);

    bystander
        .send(requested("1", "/math/add", json!({"a": 4, "b": 4})))
        .await
        .unwrap();
    assert_eq!(next(&mut bystander).await["payload"]["output"], json!(8.0));
    node.endpoint.shutdown().await;
}

#[tokio::test]
async fn without_the_feature_the_path_is_the_decoy() {
    let node = node(HttpConfig::default()).await;
    let stream = tls(node.addr, &[b"http/1.1"]).await;
    let mut request = "wss://localhost/alknet/call".into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("alknet.call"),
    );
    let err = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(response) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected the decoy's 404, got {other}"),
    }
    node.endpoint.shutdown().await;
}

#[tokio::test]
async fn a_draining_node_answers_what_is_in_flight_then_closes_with_going_away() {
    let node = node(websocket()).await;
    let (mut ws, _) = open(node.addr, "alknet.call").await;
    ws.send(requested("1", "/math/add", json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await["payload"]["output"], json!(3.0));
    let shutdown = tokio::spawn(node.endpoint.shutdown());
    assert_eq!(close_code(&mut ws).await, CloseCode::Away);
    shutdown.await.unwrap();
}

/// The next `call.error` envelope, skipping what was answered before it.
async fn next_error(ws: &mut Ws) -> Value {
    loop {
        let envelope = next(ws).await;
        if envelope["type"] == "call.error" {
            return envelope;
        }
        assert_eq!(envelope["type"], "call.responded", "{envelope}");
    }
}

#[tokio::test]
async fn a_reload_that_revokes_a_sockets_bearer_token_ends_its_subscription_and_spares_others() {
    let mut node = node(websocket()).await;
    let bearer = |token: &str| format!("alknet.call, alknet.bearer.{token}");
    let (mut alice, _) = open(node.addr, &bearer(ALICE_TOKEN)).await;
    let (mut keyed, _) = open(node.addr, &bearer(KEY_TOKEN)).await;
    let (mut bob, _) = open(node.addr, &bearer(BOB_TOKEN)).await;
    for ws in [&mut alice, &mut keyed, &mut bob] {
        ws.send(requested("s", "/slow/ticks", json!({})))
            .await
            .unwrap();
        assert_eq!(next(ws).await["payload"]["output"], json!(0));
    }

    // Alice's peer is disabled and the API key revoked.
    node.reload_auth(|auth| {
        auth.peers
            .iter_mut()
            .filter(|p| p.id == "alice")
            .for_each(|p| p.enabled = false);
        auth.api_keys.clear();
    });
    for ws in [&mut alice, &mut keyed] {
        let ended = tokio::time::timeout(Duration::from_secs(10), next_error(ws))
            .await
            .expect("the revoked socket's subscription ends");
        assert_eq!(ended["id"], "s", "{ended}");
        assert_eq!(ended["payload"]["code"], "UNAUTHENTICATED", "{ended}");
    }
    // Their handlers see their signal abort.
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), node.cancelled.recv())
            .await
            .expect("the revoked subscription is cancelled on the node");
    }
    // Bob's subscription goes on.
    let n = next(&mut bob).await["payload"]["output"].as_u64().unwrap();
    assert_eq!(next(&mut bob).await["payload"]["output"], json!(n + 1));
    // The revoked sockets stay open without an identity: what needs one is refused, open
    // operations still work.
    alice
        .send(requested("1", "/todo/secret", json!({})))
        .await
        .unwrap();
    assert_eq!(next(&mut alice).await["payload"]["code"], "UNAUTHENTICATED");
    keyed
        .send(requested("2", "/math/add", json!({"a": 1, "b": 2})))
        .await
        .unwrap();
    assert_eq!(next(&mut keyed).await["payload"]["output"], json!(3.0));
    for mut ws in [alice, keyed, bob] {
        ws.close(None).await.unwrap();
    }
    node.endpoint.shutdown().await;
}
