//! Protocol v1.1: a caller on a stream of its own finishes its send side right after
//! `call.requested`, and cancels by stopping its receive side (STOP_SENDING, code 0). Over the
//! in-memory QUIC-like pair; `carriers.rs` in alknet-node runs the same over real QUIC.

mod support;

use alknet_call::carrier::STOP_CANCELLED;
use alknet_call::RequestOptions;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_caller_that_half_closes_its_stream_still_gets_its_answer() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    half_closed_request_gets_its_answer(&mut stream).await;
}

#[tokio::test]
async fn a_half_closed_subscription_streams_until_it_completes() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &request("s", "/test/ticks", json!({"n": 3}))).await;
    stream.shutdown().await.unwrap();
    let mut kinds = Vec::new();
    while let Some(frame) = recv_raw(&mut stream).await {
        kinds.push(frame["type"].as_str().unwrap().to_string());
    }
    assert_eq!(
        kinds,
        [
            "call.responded",
            "call.responded",
            "call.responded",
            "call.completed"
        ]
    );
}

#[tokio::test]
async fn stop_sending_cancels_the_request_and_drops_its_handler() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &held_request("h")).await;
    stream.shutdown().await.unwrap();
    assert_eq!(probe.wait_started().await, "hold");
    stream.stop(STOP_CANCELLED);
    assert_eq!(dropped.recv().await, Some("hold"));
}

#[tokio::test]
async fn after_stop_sending_the_callee_writes_nothing_more_and_ends_the_stream() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    // Without `n` the subscription never ends by itself.
    send_raw(&mut stream, &request("t", "/test/ticks", json!({}))).await;
    stream.shutdown().await.unwrap();
    assert_eq!(recv_raw(&mut stream).await.unwrap()["payload"]["output"], 0);
    stream.stop(STOP_CANCELLED);
    assert_eq!(dropped.recv().await, Some("ticks"));
    // What was written before the stop may still arrive; then the stream ends.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
}

#[tokio::test]
async fn stop_sending_cancels_every_request_answered_on_that_stream() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &held_request("h")).await;
    send_raw(&mut stream, &request("t", "/test/ticks", json!({}))).await;
    assert_eq!(probe.wait_started().await, "hold");
    assert_eq!(recv_raw(&mut stream).await.unwrap()["id"], "t");
    stream.stop(STOP_CANCELLED);
    let mut gone = vec![dropped.recv().await.unwrap(), dropped.recv().await.unwrap()];
    gone.sort_unstable();
    assert_eq!(gone, ["hold", "ticks"]);
}

#[tokio::test]
async fn a_lost_connection_cancels_a_half_closed_request() {
    // The FIN said nothing about the request; losing the connection (a killed caller, seen as a
    // QUIC idle timeout) does cancel it.
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &held_request("h")).await;
    stream.shutdown().await.unwrap();
    assert_eq!(probe.wait_started().await, "hold");
    p.client_conn.close(0, "gone");
    assert_eq!(dropped.recv().await, Some("hold"));
}

#[tokio::test]
async fn an_old_style_call_aborted_on_an_open_stream_still_cancels() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &held_request("h")).await;
    assert_eq!(probe.wait_started().await, "hold");
    send_raw(
        &mut stream,
        &json!({"type": "call.aborted", "id": "h", "payload": {}}).to_string(),
    )
    .await;
    assert_eq!(dropped.recv().await, Some("hold"));
}

/// A raw callee: the client `Peer` talks to a bare connection this test reads by hand.
fn raw_callee() -> (alknet_call::Peer, alknet_core::Connection) {
    let (raw, c) = alknet_core::connection::memory::pair(alknet_call::ALPN);
    (alknet_call::Peer::connect(c, client_service(), None), raw)
}

#[tokio::test]
async fn a_peer_finishes_its_send_side_right_after_the_request() {
    let (client, raw) = raw_callee();
    let call = tokio::spawn(async move { client.call("test/echo", json!("hi")).await });
    let mut stream = raw.accept_bi().await.unwrap();
    let asked = recv_raw(&mut stream).await.unwrap();
    assert_eq!(asked["type"], "call.requested");
    // The FIN follows the request at once: nothing more to read.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    let id = asked["id"].as_str().unwrap();
    send_raw(
        &mut stream,
        &json!({"type": "call.responded", "id": id, "payload": {"output": "hi"}}).to_string(),
    )
    .await;
    assert_eq!(call.await.unwrap().unwrap(), json!("hi"));
}

#[tokio::test]
async fn a_peer_cancels_its_own_stream_by_stop_sending_with_code_0() {
    let (client, raw) = raw_callee();
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let call = tokio::spawn(async move {
        let options = RequestOptions {
            cancel: Some(token),
            ..Default::default()
        };
        client.call_with("test/echo", json!("hi"), options).await
    });
    let stream = raw.accept_bi().await.unwrap();
    let stopped = stream.stopped();
    cancel.cancel();
    assert_eq!(call.await.unwrap().unwrap_err().code, "CANCELLED");
    assert_eq!(stopped.await, Some(STOP_CANCELLED));
}

#[tokio::test]
async fn dropping_a_subscription_stops_its_stream() {
    let (client, raw) = raw_callee();
    let subscribing = tokio::spawn(async move { client.subscribe("test/ticks", json!({})).await });
    let stream = raw.accept_bi().await.unwrap();
    let stopped = stream.stopped();
    drop(subscribing.await.unwrap().unwrap());
    assert_eq!(stopped.await, Some(STOP_CANCELLED));
}

// The first request of a stream runs in the task that reads the stream (no task of its own):
// what ends it there must end it as a spawned request would be ended, and release its id.

#[tokio::test]
async fn a_violation_after_a_running_request_cancels_it_and_resets_the_stream() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &held_request("h")).await;
    assert_eq!(probe.wait_started().await, "hold");
    stream.write_all(&[0, 0, 0, 0]).await.unwrap();
    assert_eq!(dropped.recv().await, Some("hold"));
    assert!(
        recv_raw(&mut stream).await.is_none(),
        "nothing is written for the cancelled request and the stream ends"
    );
    // The connection goes on serving.
    let mut next = p.client_conn.open_bi().await.unwrap();
    half_closed_request_gets_its_answer(&mut next).await;
}

#[tokio::test]
async fn a_stopped_request_releases_its_id_for_a_later_stream() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut first = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut first, &held_request("1")).await;
    first.shutdown().await.unwrap();
    assert_eq!(probe.wait_started().await, "hold");
    first.stop(STOP_CANCELLED);
    assert_eq!(dropped.recv().await, Some("hold"));
    // The cancelled request forgot its id before the handler was dropped: `1` may be used again.
    let mut second = p.client_conn.open_bi().await.unwrap();
    half_closed_request_gets_its_answer(&mut second).await;
}
