//! `GET /v1/collections/{name}/digest?version=2` answers the content digest (ids, versions and
//! canonical data), equal to a client's `fero_protocol::ContentDigest` over the pulled rows;
//! without `version` (or with `version=1`) the answer stays version 1 for older clients, and an
//! unknown version is a 422.

mod support;

use axum::http::{Method, StatusCode};
use fero_protocol::{ContentDigest, ContentDigestResponse, Digest, DigestResponse};
use serde_json::json;
use support::{ALICE, call, change, pull, push, server};

#[tokio::test]
async fn version_2_digests_the_content_and_version_1_stays_the_default() {
    let server = server();
    let router = server.router();
    push(
        &router,
        ALICE,
        "notes",
        vec![
            change(
                "n1",
                None,
                "d",
                1,
                json!({ "b": [1, { "y": "東京" }], "a": "é" }),
            ),
            change("n2", None, "d", 2, json!({ "text": "line\n\"quoted\"" })),
        ],
    )
    .await;
    let page = pull(&router, ALICE, "notes", None, 100).await;
    let (mut v1, mut v2) = (Digest::default(), ContentDigest::default());
    for document in page.items.iter().filter(|d| !d.deleted) {
        v1.add(&document.id, document.version.0);
        v2.add(&document.id, document.version.0, &document.data);
    }

    let answer = call(
        &router,
        Method::GET,
        "/v1/collections/notes/digest?version=2",
        Some(ALICE),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let content: ContentDigestResponse = serde_json::from_value(answer.body).unwrap();
    assert_eq!(
        content,
        ContentDigestResponse {
            version: 2,
            count: 2,
            digest: v2.hex()
        }
    );

    for path in [
        "/v1/collections/notes/digest",
        "/v1/collections/notes/digest?version=1",
    ] {
        let answer = call(&router, Method::GET, path, Some(ALICE), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert_eq!(
            answer.body,
            json!({ "count": 2, "digest": v1.hex() }),
            "{path}"
        );
        let _: DigestResponse = serde_json::from_value(answer.body).unwrap();
    }
}

#[tokio::test]
async fn an_unknown_digest_version_is_a_422() {
    let server = server();
    let router = server.router();
    for version in ["3", "0", "two", ""] {
        let answer = call(
            &router,
            Method::GET,
            &format!("/v1/collections/notes/digest?version={version}"),
            Some(ALICE),
            None,
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{version:?}"
        );
        assert_eq!(
            answer.body["error"]["code"], "invalid_request",
            "{version:?}"
        );
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.contains("versions 1"), "{message}");
    }
}
