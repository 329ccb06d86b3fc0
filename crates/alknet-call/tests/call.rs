//! The call protocol end to end over in-memory connections (the same code runs over QUIC and
//! TCP+TLS; see `carriers.rs`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use alknet_call::{CallOptions, ErrorCode, RequestOptions, Subscription};
use futures::StreamExt;
use serde_json::{json, Value};
use support::*;
use tokio_util::sync::CancellationToken;

fn code_of(r: Result<Value, alknet_call::CallError>) -> String {
    r.unwrap_err().code
}

#[tokio::test]
async fn query_returns_its_output() {
    let (probe, _) = probe();
    let p = pair(&probe);
    assert_eq!(
        p.client
            .call("math/add", json!({"a": 1, "b": 2}))
            .await
            .unwrap(),
        json!(3.0)
    );
    assert_eq!(
        p.client.call("/test/echo", json!([1, "x"])).await.unwrap(),
        json!([1, "x"])
    );
}

#[tokio::test]
async fn unknown_and_internal_operations_are_not_found() {
    let (probe, _) = probe();
    let p = pair(&probe);
    assert_eq!(
        code_of(p.client.call("nope/nope", json!({})).await),
        "NOT_FOUND"
    );
    assert_eq!(
        code_of(p.client.call("test/secret", json!({})).await),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn internal_operations_are_callable_by_composition() {
    let (probe, _) = probe();
    let p = pair(&probe);
    assert_eq!(
        p.client.call("test/compose", json!({})).await.unwrap(),
        json!({"inner": "inside"})
    );
}

#[tokio::test]
async fn composing_a_subscription_as_a_call_is_invalid_operation_type() {
    let (probe, _) = probe();
    let p = pair(&probe);
    assert_eq!(
        code_of(p.client.call("test/compose-sub", json!({})).await),
        "INVALID_OPERATION_TYPE"
    );
}

#[tokio::test]
async fn restricted_operation_without_identity_is_unauthenticated() {
    let (probe, _) = probe();
    let p = pair(&probe);
    assert_eq!(
        code_of(p.client.call("test/admin", json!({})).await),
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn invalid_auth_token_is_unauthenticated_never_a_fallback() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let options = RequestOptions {
        auth_token: Some("forged".into()),
        ..Default::default()
    };
    // Even an open operation refuses a bad token.
    let err = p
        .client
        .call_with("test/echo", json!(1), options)
        .await
        .unwrap_err();
    assert_eq!(err.code, "UNAUTHENTICATED");
    assert!(!err.retryable);
}

#[tokio::test]
async fn token_identity_applies_to_that_request_only() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let admin = RequestOptions {
        auth_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    assert_eq!(
        p.client
            .call_with("test/admin", json!({}), admin)
            .await
            .unwrap(),
        json!("root")
    );
    assert_eq!(
        code_of(p.client.call("test/admin", json!({})).await),
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn identity_without_scope_is_forbidden() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let reader = RequestOptions {
        auth_token: Some(READER_TOKEN.into()),
        ..Default::default()
    };
    let err = p
        .client
        .call_with("test/admin", json!({}), reader)
        .await
        .unwrap_err();
    assert_eq!(err.code, "FORBIDDEN");
}

#[tokio::test]
async fn input_that_fails_the_schema_is_invalid_input_with_details() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let err = p
        .client
        .call("math/add", json!({"a": "one"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "INVALID_INPUT");
    let details = err.details.unwrap();
    assert!(
        details["errors"].as_array().unwrap().len() >= 2,
        "{details}"
    );
}

#[tokio::test]
async fn declared_handler_error_reaches_the_caller_with_details() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let err = p
        .client
        .call("test/fail", json!({"how": "declared"}))
        .await
        .unwrap_err();
    assert_eq!(err.code, "BOOM");
    assert_eq!(err.details, Some(json!({"why": "asked"})));
}

#[tokio::test]
async fn undeclared_error_and_panic_become_internal_without_leaking() {
    let (probe, _) = probe();
    let p = pair(&probe);
    for how in ["undeclared", "panic"] {
        let err = p
            .client
            .call("test/fail", json!({"how": how}))
            .await
            .unwrap_err();
        assert_eq!(err.code, "INTERNAL", "{how}");
        assert!(!err.message.contains("hunter2"));
        assert!(err.details.is_none());
    }
    // The node carries on.
    assert_eq!(
        p.client.call("test/echo", json!(7)).await.unwrap(),
        json!(7)
    );
}

#[tokio::test]
async fn output_that_fails_its_schema_is_internal_unless_validation_is_off() {
    let (probe, _) = probe();
    let p = pair(&probe);
    assert_eq!(
        code_of(p.client.call("test/badoutput", json!({})).await),
        "INTERNAL"
    );
    let off = pair_with(
        &probe,
        CallOptions {
            validate_output: false,
            ..Default::default()
        },
        false,
    );
    assert_eq!(
        off.client.call("test/badoutput", json!({})).await.unwrap(),
        json!(42)
    );
}

#[tokio::test]
async fn deadline_cancels_the_handler_and_answers_timeout() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let options = RequestOptions {
        timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let err = p
        .client
        .call_with("test/hold", json!({}), options)
        .await
        .unwrap_err();
    assert_eq!(err.code, "TIMEOUT");
    assert!(err.retryable);
    assert_eq!(dropped.recv().await, Some("hold"));
}

/// The request's one token ends with it, after its answer went out: the answer is not
/// suppressed and work the handler left behind is cancelled.
#[tokio::test]
async fn a_finished_request_cancels_its_token_after_answering() {
    for single_stream in [false, true] {
        let (probe, mut dropped) = probe();
        let p = pair_with(&probe, CallOptions::default(), single_stream);
        for n in 0..3 {
            assert_eq!(
                p.client.call("test/spawns", json!({"n": n})).await.unwrap(),
                json!({"n": n})
            );
            assert_eq!(dropped.recv().await, Some("spawned"));
        }
    }
}

#[tokio::test]
async fn a_handler_cancelling_its_token_still_answers() {
    for single_stream in [false, true] {
        let (probe, _dropped) = probe();
        let p = pair_with(&probe, CallOptions::default(), single_stream);
        assert_eq!(
            p.client
                .call("test/cancels-own-token", json!({"kept": true}))
                .await
                .unwrap(),
            json!({"kept": true})
        );
    }
}

#[tokio::test]
async fn default_deadline_applies_to_queries() {
    let (probe, mut dropped) = probe();
    let p = pair_with(
        &probe,
        CallOptions {
            default_timeout: Duration::from_millis(50),
            ..Default::default()
        },
        false,
    );
    assert_eq!(
        code_of(p.client.call("test/hold", json!({})).await),
        "TIMEOUT"
    );
    assert_eq!(dropped.recv().await, Some("hold"));
}

#[tokio::test]
async fn cancelling_a_call_aborts_the_remote_handler() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let cancel = CancellationToken::new();
    let client = p.client.clone();
    let token = cancel.clone();
    let call = tokio::spawn(async move {
        client
            .call_with(
                "test/hold",
                json!({}),
                RequestOptions {
                    cancel: Some(token),
                    // Only the cancel, never the deadline, may end the handler in this test.
                    timeout: Some(Duration::from_secs(3600)),
                    ..Default::default()
                },
            )
            .await
    });
    assert_eq!(probe.wait_started().await, "hold");
    cancel.cancel();
    assert_eq!(call.await.unwrap().unwrap_err().code, "CANCELLED");
    assert_eq!(dropped.recv().await, Some("hold"));
}

#[tokio::test]
async fn dropping_a_subscription_cancels_the_remote_stream() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut ticks = p.client.subscribe("test/ticks", json!({})).await.unwrap();
    assert_eq!(ticks.next().await.unwrap().unwrap(), json!(0));
    assert_eq!(ticks.next().await.unwrap().unwrap(), json!(1));
    drop(ticks);
    assert_eq!(dropped.recv().await, Some("ticks"));
}

#[tokio::test]
async fn subscription_yields_items_then_completes() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let items: Vec<Value> = p
        .client
        .subscribe("test/ticks", json!({"n": 5}))
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(
        items,
        vec![json!(0), json!(1), json!(2), json!(3), json!(4)]
    );
}

/// Outputs whose JSON text needs care: unicode, escapes, control characters, nesting, numbers.
fn tricky_items() -> Vec<Value> {
    vec![
        json!("plain"),
        json!("é ü 日本 🦀"),
        json!("quote \" backslash \\ slash / newline \n tab \t nul \u{0} bell \u{7}"),
        json!({"k\"ey": ["\u{2028}\u{2029}", null, true, -1.5e-7, 18446744073709551615u64]}),
        json!({"nested": {"deeper": [[[{"x": "\\u0041"}]]]}}),
        json!([]),
        json!(null),
    ]
}

#[tokio::test]
async fn raw_items_arrive_intact_as_json_text_and_as_values() {
    let (probe, _) = probe();
    for single_stream in [false, true] {
        let p = pair_with(&probe, CallOptions::default(), single_stream);
        let input = json!({ "items": tricky_items() });
        let mut raw = p
            .client
            .subscribe("test/items", input.clone())
            .await
            .unwrap();
        let mut values = p.client.subscribe("test/items", input).await.unwrap();
        for want in tricky_items() {
            let item = raw.next_raw().await.unwrap().unwrap();
            let text: Value = serde_json::from_str(&item.json()).unwrap();
            assert_eq!(text, want, "single stream: {single_stream}");
            assert_eq!(item.deserialize::<Value>().unwrap(), want);
            assert_eq!(item.into_value().unwrap(), want);
            assert_eq!(values.next().await.unwrap().unwrap(), want);
        }
        assert!(raw.next_raw().await.is_none());
        assert!(values.next().await.is_none());
    }
}

#[tokio::test]
async fn next_as_deserializes_items_into_the_callers_type() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Point {
        x: i64,
        label: String,
    }
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let input = json!({ "items": [{"x": 1, "label": "é\n"}, {"x": "one"}], "hold": true });
    let mut points = p.client.subscribe("test/items", input).await.unwrap();
    assert_eq!(
        points.next_as::<Point>().await.unwrap().unwrap(),
        Point {
            x: 1,
            label: "é\n".into()
        }
    );
    // An item that does not fit the type ends the subscription and cancels the remote side.
    let err = points.next_as::<Point>().await.unwrap().unwrap_err();
    assert_eq!(err.code, "INTERNAL");
    assert!(points.next_as::<Point>().await.is_none());
    assert_eq!(dropped.recv().await, Some("items"));
}

#[tokio::test]
async fn an_error_mid_stream_ends_the_raw_items() {
    let (probe, _) = probe();
    for single_stream in [false, true] {
        let p = pair_with(&probe, CallOptions::default(), single_stream);
        let input = json!({ "items": [1, "two"], "fail": true });
        let mut sub = p.client.subscribe("test/items", input).await.unwrap();
        assert_eq!(sub.next_raw().await.unwrap().unwrap().json(), "1");
        assert_eq!(sub.next_raw().await.unwrap().unwrap().json(), "\"two\"");
        let err = sub.next_raw().await.unwrap().unwrap_err();
        assert_eq!(err.code, "UNAVAILABLE");
        assert_eq!(err.message, "the source went away");
        assert!(sub.next_raw().await.is_none());
    }
}

#[tokio::test]
async fn dropping_a_subscription_read_raw_cancels_the_remote_stream() {
    let (probe, mut dropped) = probe();
    for single_stream in [false, true] {
        let p = pair_with(&probe, CallOptions::default(), single_stream);
        let input = json!({ "items": ["a"], "hold": true });
        let mut sub = p.client.subscribe("test/items", input).await.unwrap();
        assert_eq!(sub.next_raw().await.unwrap().unwrap().json(), "\"a\"");
        drop(sub);
        assert_eq!(dropped.recv().await, Some("items"));
    }
}

#[tokio::test]
async fn slow_request_does_not_hold_up_a_fast_one_on_the_same_stream() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &request("slow", "/test/slow", json!("s"))).await;
    send_raw(&mut stream, &request("fast", "/test/echo", json!("f"))).await;
    let first = recv_raw(&mut stream).await.unwrap();
    assert_eq!(first["id"], "fast");
    assert_eq!(first["payload"]["output"], "f");
    probe.release.notify_one();
    let second = recv_raw(&mut stream).await.unwrap();
    assert_eq!(second["id"], "slow");
}

#[tokio::test]
async fn abort_cancels_the_handler_and_nothing_follows_for_that_id() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &request("h", "/test/hold", json!({}))).await;
    send_raw(&mut stream, &request("e1", "/test/echo", json!(1))).await;
    assert_eq!(recv_raw(&mut stream).await.unwrap()["id"], "e1");
    send_raw(
        &mut stream,
        &json!({"type": "call.aborted", "id": "h", "payload": {}}).to_string(),
    )
    .await;
    assert_eq!(dropped.recv().await, Some("hold"));
    // Aborting again, or an unknown id, is a no-op.
    send_raw(
        &mut stream,
        &json!({"type": "call.aborted", "id": "h", "payload": {}}).to_string(),
    )
    .await;
    send_raw(
        &mut stream,
        &json!({"type": "call.aborted", "id": "zz", "payload": {}}).to_string(),
    )
    .await;
    send_raw(&mut stream, &request("e2", "/test/echo", json!(2))).await;
    let next = recv_raw(&mut stream).await.unwrap();
    assert_eq!(next["id"], "e2", "no frame for the aborted id: {next}");
}

#[tokio::test]
async fn abort_cascades_across_two_hops() {
    // A → B → C: aborting at A cancels B's handler and, through B's own call.aborted, C's.
    let (probe_b, mut dropped_b) = probe();
    let (probe_c, mut dropped_c) = probe();
    let bc = pair(&probe_c); // B is the client of C
    probe_b.forward_to.set(bc.client.clone()).ok().unwrap();
    let ab = pair(&probe_b); // A is the client of B
    let cancel = CancellationToken::new();
    let a = ab.client.clone();
    let token = cancel.clone();
    let call = tokio::spawn(async move {
        a.call_with(
            "test/forward",
            json!({}),
            RequestOptions {
                cancel: Some(token),
                ..Default::default()
            },
        )
        .await
    });
    assert_eq!(probe_c.wait_started().await, "hold");
    cancel.cancel();
    assert_eq!(call.await.unwrap().unwrap_err().code, "CANCELLED");
    assert_eq!(dropped_b.recv().await, Some("forward"));
    assert_eq!(dropped_c.recv().await, Some("hold"));
}

#[tokio::test]
async fn server_calls_an_operation_the_client_registered() {
    let (probe, _) = probe();
    let p = pair(&probe);
    assert_eq!(
        p.client.call("test/callback", json!("you")).await.unwrap(),
        json!({"hello": "you"})
    );
    assert_eq!(
        p.server.call("client/hello", json!(1)).await.unwrap(),
        json!({"hello": 1})
    );
}

#[tokio::test]
async fn closed_connection_fails_pending_requests_on_both_sides_with_unavailable() {
    let (probe, mut dropped) = probe();
    let p = pair(&probe);
    let client = p.client.clone();
    let from_client = tokio::spawn(async move { client.call("test/hold", json!({})).await });
    let server = p.server.clone();
    assert_eq!(probe.wait_started().await, "hold");
    p.client_conn.close(0, "gone");
    let err = from_client.await.unwrap().unwrap_err();
    assert_eq!(err.code, "UNAVAILABLE");
    assert!(err.retryable);
    assert_eq!(dropped.recv().await, Some("hold"));
    assert_eq!(
        server
            .call("client/hello", json!(1))
            .await
            .unwrap_err()
            .code,
        "UNAVAILABLE"
    );
}

#[tokio::test]
async fn concurrent_request_limit_answers_overloaded() {
    let (probe, _) = probe();
    let p = pair_with(
        &probe,
        CallOptions {
            max_concurrent: 1,
            ..Default::default()
        },
        false,
    );
    let client = p.client.clone();
    let held = tokio::spawn(async move { client.call("test/slow", json!(1)).await });
    // Once the slow one holds the only slot, the next request is refused.
    let mut refused = None;
    for _ in 0..1000 {
        match p.client.call("test/echo", json!(2)).await {
            Err(e) if e.code == "OVERLOADED" => {
                refused = Some(e);
                break;
            }
            _ => tokio::task::yield_now().await,
        }
    }
    let refused = refused.expect("a second concurrent request must be refused");
    assert!(refused.retryable);
    probe.release.notify_one();
    assert_eq!(held.await.unwrap().unwrap(), json!(1));
}

#[tokio::test]
async fn services_list_shows_only_what_the_caller_may_call() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let names = |v: Value| -> Vec<String> {
        v["operations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    let anonymous = names(p.client.call("services/list", json!({})).await.unwrap());
    assert!(anonymous.contains(&"math/add".to_string()));
    assert!(!anonymous.contains(&"test/admin".to_string()));
    assert!(!anonymous.contains(&"test/secret".to_string()));
    let admin = RequestOptions {
        auth_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let as_admin = names(
        p.client
            .call_with("services/list", json!({}), admin)
            .await
            .unwrap(),
    );
    assert!(as_admin.contains(&"test/admin".to_string()));
}

#[tokio::test]
async fn services_schema_describes_an_operation_and_hides_forbidden_ones() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let schema = p
        .client
        .call("services/schema", json!({"name": "test/fail"}))
        .await
        .unwrap();
    assert_eq!(schema["type"], "query");
    assert_eq!(schema["errors"][0]["code"], "BOOM");
    assert!(schema["input_schema"].is_object());
    assert_eq!(
        code_of(
            p.client
                .call("services/schema", json!({"name": "test/admin"}))
                .await
        ),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn invalid_request_payloads_are_invalid_input_and_the_stream_carries_on() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    for (id, payload) in [
        ("a", json!({})),
        ("b", json!({"operationId": 5})),
        ("c", json!({"operationId": "/test/echo", "timeout_ms": 0})),
        ("d", json!({"operationId": "/test/echo", "timeout_ms": -5})),
        ("e", json!({"operationId": "/test/echo", "timeout_ms": 1.5})),
    ] {
        send_raw(
            &mut stream,
            &json!({"type": "call.requested", "id": id, "payload": payload}).to_string(),
        )
        .await;
        let reply = recv_raw(&mut stream).await.unwrap();
        assert_eq!(reply["id"], id);
        assert_eq!(reply["payload"]["code"], "INVALID_INPUT", "{payload}");
    }
    send_raw(
        &mut stream,
        &json!({"type": "call.future", "id": "x", "payload": {}}).to_string(),
    )
    .await;
    send_raw(&mut stream, &request("ok", "/test/echo", json!("still"))).await;
    assert_eq!(
        recv_raw(&mut stream).await.unwrap()["payload"]["output"],
        "still"
    );
}

async fn violation_resets_only_that_stream(bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    let (probe, _) = probe();
    let p = pair(&probe);
    let mut bad = p.client_conn.open_bi().await.unwrap();
    bad.write_all(bytes).await.unwrap();
    assert!(recv_raw(&mut bad).await.is_none(), "the stream must end");
    assert_eq!(
        p.client.call("test/echo", json!("ok")).await.unwrap(),
        json!("ok")
    );
}

#[tokio::test]
async fn zero_length_frame_resets_the_stream() {
    violation_resets_only_that_stream(&[0, 0, 0, 0]).await;
}

#[tokio::test]
async fn oversized_frame_resets_the_stream_before_its_body_arrives() {
    violation_resets_only_that_stream(&[0x7f, 0xff, 0xff, 0xff]).await;
}

#[tokio::test]
async fn non_json_frame_resets_the_stream() {
    violation_resets_only_that_stream(&[0, 0, 0, 3, b'{', b'{', b'x']).await;
}

#[tokio::test]
async fn non_envelope_json_resets_the_stream() {
    violation_resets_only_that_stream(b"\0\0\0\x0a{\"type\":1}").await;
}

#[tokio::test]
async fn duplicate_open_id_resets_the_stream() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let mut stream = p.client_conn.open_bi().await.unwrap();
    send_raw(&mut stream, &request("same", "/test/hold", json!({}))).await;
    send_raw(&mut stream, &request("same", "/test/echo", json!({}))).await;
    assert!(recv_raw(&mut stream).await.is_none());
    assert_eq!(
        p.client.call("test/echo", json!("ok")).await.unwrap(),
        json!("ok")
    );
}

#[tokio::test]
async fn violation_on_a_single_stream_carrier_closes_that_connection_only() {
    use tokio::io::AsyncWriteExt;
    let (probe, _) = probe();
    let p = pair_with(&probe, CallOptions::default(), true);
    assert_eq!(
        p.client.call("test/echo", json!(1)).await.unwrap(),
        json!(1)
    );
    let other = pair_with(&probe, CallOptions::default(), true);
    // Write garbage straight onto the server side's single stream from a raw client.
    let (s, mut c) = {
        let (s, c) = alknet_core::connection::memory::single_stream_pair(alknet_call::ALPN);
        (s, c.accept_bi().await.unwrap())
    };
    let served = alknet_call::Peer::connect(s, p.service.clone(), None);
    c.write_all(&[0, 0, 0, 0]).await.unwrap();
    served.closed().await;
    assert_eq!(
        other.client.call("test/echo", json!(2)).await.unwrap(),
        json!(2)
    );
}

#[tokio::test]
async fn single_stream_carrier_multiplexes_calls_and_subscriptions() {
    let (probe, _) = probe();
    let p = pair_with(&probe, CallOptions::default(), true);
    let (a, b) = tokio::join!(
        p.client.call("math/add", json!({"a": 2, "b": 3})),
        p.client.subscribe("test/ticks", json!({"n": 3})),
    );
    assert_eq!(a.unwrap(), json!(5.0));
    let items: Vec<_> = b.unwrap().map(|r| r.unwrap()).collect().await;
    assert_eq!(items.len(), 3);
    assert_eq!(
        p.client.call("test/callback", json!(1)).await.unwrap(),
        json!({"hello": 1})
    );
}

async fn skip_warmups(s: &mut alknet_call::Subscription) -> Value {
    loop {
        let item = s.next().await.unwrap().unwrap();
        if item["topic"] != "news/warmup" {
            return item;
        }
    }
}

#[tokio::test]
async fn publish_and_subscribe_with_wildcards() {
    let (probe, _) = probe();
    let p = pair(&probe);
    let admin = RequestOptions {
        auth_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let mut all = p
        .client
        .subscribe_with(
            "pubsub/subscribe",
            json!({"topic": "news/>"}),
            admin.clone(),
        )
        .await
        .unwrap();
    let mut one = p
        .client
        .subscribe_with(
            "pubsub/subscribe",
            json!({"topic": "news/*"}),
            admin.clone(),
        )
        .await
        .unwrap();
    // The subscription is registered once the callee reads it; publish until both see it.
    let mut delivered = 0;
    for _ in 0..1000 {
        delivered = p.service.publish("news/warmup", &json!(null)).unwrap();
        if delivered == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(delivered, 2);
    let out = p
        .client
        .call_with(
            "pubsub/publish",
            json!({"topic": "news/a/b", "data": 1}),
            admin.clone(),
        )
        .await
        .unwrap();
    assert_eq!(out, json!({"delivered": 1}));
    p.service.publish("news/c", &json!(2)).unwrap();
    assert_eq!(
        skip_warmups(&mut all).await,
        json!({"topic": "news/a/b", "data": 1})
    );
    assert_eq!(
        skip_warmups(&mut all).await,
        json!({"topic": "news/c", "data": 2})
    );
    assert_eq!(
        skip_warmups(&mut one).await,
        json!({"topic": "news/c", "data": 2})
    );
}

#[tokio::test]
async fn pubsub_needs_an_identity_by_default_and_rejects_wildcard_publish() {
    let (probe, _) = probe();
    let p = pair(&probe);
    assert_eq!(
        code_of(
            p.client
                .call("pubsub/publish", json!({"topic": "a", "data": 1}))
                .await
        ),
        "UNAUTHENTICATED"
    );
    let mut sub = p.client.topic("a/>").await.unwrap();
    assert_eq!(
        sub.next().await.unwrap().unwrap_err().code,
        "UNAUTHENTICATED"
    );
    let admin = RequestOptions {
        auth_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let err = p
        .client
        .call_with("pubsub/publish", json!({"topic": "a/*", "data": 1}), admin)
        .await
        .unwrap_err();
    assert_eq!(err.code, "INVALID_INPUT");
}

#[tokio::test]
async fn topic_rules_reload_takes_effect_for_the_next_publish() {
    use alknet_call::{PubSubPolicy, TopicRule};
    let (probe, _) = probe();
    let p = pair(&probe);
    let reader = RequestOptions {
        auth_token: Some(READER_TOKEN.into()),
        ..Default::default()
    };
    let publish = || {
        p.client.call_with(
            "pubsub/publish",
            json!({"topic": "ops/x", "data": 1}),
            reader.clone(),
        )
    };
    assert!(publish().await.is_ok());
    let rules = PubSubPolicy {
        rules: vec![TopicRule {
            pattern: "ops/>".into(),
            publish: Some(vec!["admin".into()]),
            subscribe: None,
            anonymous: false,
        }],
    };
    p.store.pubsub.reload(rules).unwrap();
    assert_eq!(publish().await.unwrap_err().code, "FORBIDDEN");
}

/// Two admin subscriptions to topic `t` on the pair's client, both registered with the broker.
async fn two_subscriptions_to_t(p: &Pair) -> (Subscription, Subscription) {
    let admin = RequestOptions {
        auth_token: Some(ADMIN_TOKEN.into()),
        ..Default::default()
    };
    let first = p
        .client
        .subscribe_with("pubsub/subscribe", json!({"topic": "t"}), admin.clone())
        .await
        .unwrap();
    let second = p
        .client
        .subscribe_with("pubsub/subscribe", json!({"topic": "t"}), admin)
        .await
        .unwrap();
    for _ in 0..1000 {
        if p.service.broker().len() == 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(p.service.broker().len(), 2);
    (first, second)
}

#[tokio::test]
async fn slow_subscriber_gets_overloaded_while_others_keep_receiving() {
    let (probe, _) = probe();
    let p = pair_with(
        &probe,
        CallOptions {
            subscription_queue: 4,
            ..Default::default()
        },
        false,
    );
    let (mut slow, mut fast) = two_subscriptions_to_t(&p).await;
    // Big messages fill the slow subscriber's stream window and then its queue.
    let blob = "x".repeat(64 * 1024);
    let mut sent = 0u64;
    for i in 0..10_000u64 {
        let delivered = p
            .service
            .publish("t", &json!({"i": i, "blob": blob}))
            .unwrap();
        sent += 1;
        let item = fast.next().await.unwrap().unwrap();
        assert_eq!(item["data"]["i"], i);
        if delivered == 1 {
            break;
        }
    }
    assert!(sent < 10_000, "the slow subscriber was never dropped");
    // The fast one keeps receiving.
    p.service.publish("t", &json!({"i": "after"})).unwrap();
    assert_eq!(fast.next().await.unwrap().unwrap()["data"]["i"], "after");
    // The slow one reads what was in flight, then OVERLOADED, then the end.
    let mut last = None;
    while let Some(item) = slow.next().await {
        last = Some(item);
    }
    let err = last.unwrap().unwrap_err();
    assert_eq!(err.code, "OVERLOADED");
    assert_eq!(ErrorCode::parse(&err.code), Some(ErrorCode::Overloaded));
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_bounded_in_bytes_not_items() {
    let (probe, _) = probe();
    let p = pair_with(
        &probe,
        CallOptions {
            // Items alone would let the idle subscriber hold gigabytes.
            subscription_queue: 1_000_000,
            subscription_bytes: 1 << 20,
            ..Default::default()
        },
        false,
    );
    let (mut idle, mut reader) = two_subscriptions_to_t(&p).await;
    let blob = "x".repeat(256 * 1024);
    let mut dropped_after = None;
    for i in 0..200u64 {
        let delivered = p
            .service
            .publish("t", &json!({"i": i, "blob": blob}))
            .unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap()["data"]["i"], i);
        if delivered == 1 {
            dropped_after = Some(i);
            break;
        }
    }
    // The transport's windows plus 1 MiB of queue: a few dozen items at most, not 200 × 256 KiB.
    let dropped_after = dropped_after.expect("the idle subscriber was never ended");
    assert!(dropped_after < 40, "ended after {dropped_after} items");
    let mut last = None;
    while let Some(item) = idle.next().await {
        last = Some(item);
    }
    assert_eq!(last.unwrap().unwrap_err().code, "OVERLOADED");
}

#[tokio::test]
async fn single_stream_subscription_larger_than_the_queue_is_flow_controlled_not_dropped() {
    let (probe, _) = probe();
    let p = pair_with(
        &probe,
        CallOptions {
            subscription_queue: 16,
            ..Default::default()
        },
        true,
    );
    let count = p
        .client
        .subscribe("test/ticks", json!({"n": 5000}))
        .await
        .unwrap()
        .fold(0, |n, item| async move {
            item.unwrap();
            n + 1
        })
        .await;
    assert_eq!(count, 5000);
}

/// Log lines written while it lives, for asserting on what an operator's fail2ban would read.
#[derive(Clone, Default)]
struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn invalid_tokens_are_logged_without_their_text_and_throttled_per_address() {
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (probe, _) = probe();
    let p = pair(&probe);
    let with_token = |token: &str| RequestOptions {
        auth_token: Some(token.into()),
        ..Default::default()
    };
    let failures = alknet_call::throttle::FAILURES;
    for i in 0..failures {
        let err = p
            .client
            .call_with("test/admin", json!({}), with_token(&format!("guess-{i}")))
            .await
            .unwrap_err();
        assert_eq!(err.code, "UNAUTHENTICATED");
        assert!(err.message.contains("not valid"), "{}", err.message);
    }
    // Now even a valid token from this address is refused unread, for a while.
    let err = p
        .client
        .call_with("test/admin", json!({}), with_token(ADMIN_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code, "UNAUTHENTICATED");
    assert!(err.message.contains("too many"), "{}", err.message);
    // Requests without a token are not affected.
    assert_eq!(
        p.client
            .call("math/add", json!({"a": 1, "b": 1}))
            .await
            .unwrap(),
        json!(2.0)
    );
    let text = log.text();
    assert_eq!(
        text.matches("authentication rejected: invalid token")
            .count(),
        failures as usize,
        "{text}"
    );
    assert!(text.contains("throttling this address"), "{text}");
    assert!(text.contains("remote="), "{text}");
    assert!(
        !text.contains("guess-") && !text.contains(ADMIN_TOKEN),
        "{text}"
    );
}
