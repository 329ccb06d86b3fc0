//! Requests that are given up before they went out leave nothing registered behind.

mod support;

use alknet_call::Peer;
use alknet_core::connection::memory;
use serde_json::json;
use support::client_service;

#[tokio::test]
async fn requests_dropped_while_waiting_to_be_sent_withdraw_their_registration() {
    // The other end never reads: the writer's queue fills and later requests wait for room.
    let (ours, _theirs) = memory::single_stream_pair(alknet_call::ALPN);
    let peer = Peer::connect(ours, client_service(), None);
    const CALLS: usize = 1000;
    let payload = "x".repeat(4096);
    let calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let (peer, payload) = (peer.clone(), payload.clone());
            tokio::spawn(async move { peer.call("remote/op", json!(payload)).await })
        })
        .collect();
    // Every request is registered: those sent wait for answers, the rest for room to be sent.
    while peer.pending_requests() < CALLS {
        tokio::task::yield_now().await;
    }
    for call in &calls {
        call.abort();
    }
    for call in calls {
        assert!(call.await.unwrap_err().is_cancelled());
    }
    assert_eq!(peer.pending_requests(), 0);
}
