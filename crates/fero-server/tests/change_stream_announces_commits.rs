//! Over a real loopback connection: a client listening on `GET /v1/changes` gets a `change`
//! event after another client of the same user pushes, and never one for another user's push.

mod support;

use axum::http::{Method, StatusCode};
use fero_protocol::ChangeNotice;
use serde_json::json;
use support::{
    ALICE, BOB, IO_DEADLINE, Running, SseReader, body_bytes, change, request, send, server,
};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_by_one_device_reaches_another_devices_change_stream() {
    let mut running = Running::start(server()).await;
    let addr = running.addr;

    let alices_stream = send(addr, request(Method::GET, addr, "/v1/changes", ALICE, None)).await;
    assert_eq!(alices_stream.status(), StatusCode::OK);
    let content_type = alices_stream
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    let bobs_stream = send(addr, request(Method::GET, addr, "/v1/changes", BOB, None)).await;
    // Both streams are subscribed once their response heads arrived: the pushes below come later.
    let mut alices = SseReader::new(alices_stream);
    let mut bobs = SseReader::new(bobs_stream);

    let body =
        json!({ "changes": [change("ada", None, "alice-laptop", 1, json!({ "name": "Ada" }))] });
    let pushed = send(
        addr,
        request(
            Method::POST,
            addr,
            "/v1/collections/contacts/push",
            ALICE,
            Some(body),
        ),
    )
    .await;
    assert_eq!(pushed.status(), StatusCode::OK);
    body_bytes(pushed).await;

    let event = timeout(IO_DEADLINE, alices.next_event())
        .await
        .expect("no change event in time")
        .expect("stream ended");
    assert_eq!(event.event, "change");
    let notice: ChangeNotice = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        notice,
        ChangeNotice {
            collection: "contacts".into(),
            sync_id: fero::SyncId(1)
        }
    );

    // Bob's stream got nothing for alice's push: his first event is his own later push.
    let body = json!({ "changes": [change("memo", None, "bob-phone", 1, json!("hi"))] });
    let pushed = send(
        addr,
        request(
            Method::POST,
            addr,
            "/v1/collections/notes/push",
            BOB,
            Some(body),
        ),
    )
    .await;
    body_bytes(pushed).await;
    let event = timeout(IO_DEADLINE, bobs.next_event())
        .await
        .expect("no change event in time")
        .expect("stream ended");
    let notice: ChangeNotice = serde_json::from_str(&event.data).unwrap();
    assert_eq!(
        notice.collection, "notes",
        "bob must never hear of alice's collections"
    );

    running.shutdown();
    timeout(IO_DEADLINE, &mut running.serving)
        .await
        .expect("shutdown hung")
        .unwrap()
        .unwrap();
}
