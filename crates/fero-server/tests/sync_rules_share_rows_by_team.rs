//! The example rules file (`examples/rules/teams.toml`) on a server that takes HS256 JWTs: the
//! token's `teams` claim and the `members` rows decide who reads a team's tasks, only an admin
//! (`roles` claim) writes memberships, notes stay private to their writer, and a collection the
//! rules do not name keeps its rows per user. Security: nothing of a foreign team comes back
//! through pull, digest, push answers or error messages.

mod support;

use axum::Router;
use axum::http::{Method, StatusCode};
use fero_protocol::{ChangeOutcome, ChangeResult};
use fero_server::{JwtVerifier, Rules, Server, SqliteStorage};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{call, change, deletion, pull, push};

const SECRET: &str = "sharing-test-secret-at-least-32-bytes";

fn token(sub: &str, extra: Value) -> String {
    let mut claims = json!({ "sub": sub, "exp": 4_102_444_800u64 });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        claims.extend(extra.clone());
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn router() -> Router {
    let rules = Rules::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/rules/teams.toml"
    ))
    .unwrap();
    Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(support::tokens())
        .jwt(JwtVerifier::builder().hs256_secret(SECRET).build().unwrap())
        .sharing(std::sync::Arc::new(rules))
        .build()
        .unwrap()
        .router()
}

fn code(result: &ChangeResult) -> String {
    match &result.outcome {
        ChangeOutcome::Accepted { .. } => "accepted".into(),
        ChangeOutcome::Conflict { .. } => "conflict".into(),
        ChangeOutcome::Rejected { code, .. } => code.clone(),
    }
}

async fn ids(router: &Router, token: &str, collection: &str) -> Vec<String> {
    let page = pull(router, token, collection, None, 1_000).await;
    assert!(!page.has_more);
    page.items
        .into_iter()
        .filter(|d| !d.deleted)
        .map(|d| d.id)
        .collect()
}

#[tokio::test]
async fn claims_and_memberships_decide_who_reads_a_teams_rows() {
    let router = router();
    let ada = token("ada", json!({ "teams": ["red"] }));
    let ben = token("ben", json!({}));
    let cy = token("cy", json!({ "teams": ["blue"] }));
    let boss = token("boss", json!({ "teams": ["red"], "roles": ["admin"] }));

    // Ada (red by her claims) writes a red task; Cy (blue) writes a blue one.
    let red = push(
        &router,
        &ada,
        "tasks",
        vec![change(
            "t-red",
            None,
            "ada-1",
            1,
            json!({ "team_id": "red", "title": "secret plan" }),
        )],
    )
    .await;
    assert_eq!(code(&red[0]), "accepted");
    let blue = push(
        &router,
        &cy,
        "tasks",
        vec![change(
            "t-blue",
            None,
            "cy-1",
            1,
            json!({ "team_id": "blue" }),
        )],
    )
    .await;
    assert_eq!(code(&blue[0]), "accepted");
    assert_eq!(ids(&router, &ada, "tasks").await, vec!["t-red"]);
    assert_eq!(ids(&router, &cy, "tasks").await, vec!["t-blue"]);
    assert!(ids(&router, &ben, "tasks").await.is_empty());

    // Ben may not write red, nor over red's row: `forbidden`, and the answer names no content.
    let refused = push(
        &router,
        &ben,
        "tasks",
        vec![
            change("t-new", None, "ben-1", 1, json!({ "team_id": "red" })),
            change("t-red", Some(1), "ben-1", 2, json!({ "team_id": "green" })),
            change("t-red", Some(9), "ben-1", 3, json!({ "team_id": "green" })),
        ],
    )
    .await;
    for result in &refused {
        assert_eq!(code(result), "forbidden", "{result:?}");
        let text = serde_json::to_string(result).unwrap();
        assert!(!text.contains("secret plan"), "content leaked: {text}");
    }
    // A task without the field its bucket needs: `rule_failed`.
    let failed = push(
        &router,
        &ada,
        "tasks",
        vec![change(
            "t-x",
            None,
            "ada-1",
            2,
            json!({ "title": "no team" }),
        )],
    )
    .await;
    assert_eq!(code(&failed[0]), "rule_failed");

    // Only an admin writes memberships: Ada (not admin) is refused; the boss adds Ben to red.
    let by_ada = push(
        &router,
        &ada,
        "members",
        vec![change(
            "m-ben",
            None,
            "ada-1",
            3,
            json!({ "team_id": "red", "user_id": "ben" }),
        )],
    )
    .await;
    assert_eq!(code(&by_ada[0]), "forbidden");
    let by_boss = push(
        &router,
        &boss,
        "members",
        vec![change(
            "m-ben",
            None,
            "boss-1",
            1,
            json!({ "team_id": "red", "user_id": "ben" }),
        )],
    )
    .await;
    assert_eq!(code(&by_boss[0]), "accepted");
    assert_eq!(ids(&router, &ben, "tasks").await, vec!["t-red"]);
    let digest = call(
        &router,
        Method::GET,
        "/v1/collections/tasks/digest",
        Some(&ben),
        None,
    )
    .await;
    assert_eq!(digest.body["count"], json!(1), "{:?}", digest.body);

    // Removed: Ben keeps his cursor; the next pull removes red's task and carries no content.
    let before = pull(&router, &ben, "tasks", None, 1_000).await;
    let removed = push(
        &router,
        &boss,
        "members",
        vec![deletion("m-ben", 1, "boss-1", 2)],
    )
    .await;
    assert_eq!(code(&removed[0]), "accepted");
    push(
        &router,
        &ada,
        "tasks",
        vec![change(
            "t-after",
            None,
            "ada-1",
            4,
            json!({ "team_id": "red" }),
        )],
    )
    .await;
    let after = pull(&router, &ben, "tasks", Some(&before.checkpoint), 1_000).await;
    assert_eq!(after.items.len(), 1, "{:?}", after.items);
    assert_eq!(after.items[0].id, "t-red");
    assert!(after.items[0].deleted && after.items[0].data.is_null());
    let again = pull(&router, &ben, "tasks", Some(&after.checkpoint), 1_000).await;
    assert!(
        again.items.is_empty(),
        "a write after the removal reached ben: {:?}",
        again.items
    );
    let digest = call(
        &router,
        Method::GET,
        "/v1/collections/tasks/digest",
        Some(&ben),
        None,
    )
    .await;
    assert_eq!(digest.body["count"], json!(0));

    // Notes are private per writer (a `user:` bucket), contacts are not ruled at all.
    push(
        &router,
        &ada,
        "notes",
        vec![change("n1", None, "ada-1", 5, json!({ "text": "mine" }))],
    )
    .await;
    let over = push(
        &router,
        &cy,
        "notes",
        vec![change(
            "n1",
            Some(1),
            "cy-1",
            2,
            json!({ "text": "theirs" }),
        )],
    )
    .await;
    assert_eq!(code(&over[0]), "forbidden");
    assert!(ids(&router, &cy, "notes").await.is_empty());
    push(
        &router,
        &ada,
        "contacts",
        vec![change("c1", None, "ada-1", 6, json!({ "name": "Ann" }))],
    )
    .await;
    let private = pull(&router, &ada, "contacts", None, 10).await;
    assert!(
        private
            .checkpoint
            .cursor
            .as_deref()
            .is_some_and(|c| c.starts_with("s1-")),
        "a collection the rules do not name keeps the per-user feed"
    );
    assert!(ids(&router, &cy, "contacts").await.is_empty());
}

#[tokio::test]
async fn claims_the_rules_cannot_read_get_403_and_a_private_cursor_gets_410() {
    let router = router();
    // `teams` must be a list: a string makes `[access].read` fail for this caller only.
    let odd = token("odd", json!({ "teams": "red" }));
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/tasks/pull",
        Some(&odd),
        Some(json!({ "limit": 10 })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
    assert_eq!(answer.error_code(), "forbidden");
    // A position in a private feed for a shared collection: pull again from the beginning.
    let ada = token("ada", json!({ "teams": ["red"] }));
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/tasks/pull",
        Some(&ada),
        Some(json!({ "limit": 10, "checkpoint": { "last_sync_id": 5, "cursor": "s1-5" } })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::GONE);
    assert_eq!(answer.error_code(), "resync_required");
    // Another user's cursor (it names ada's readable set) is refused the same way, and says
    // nothing of ada's rows.
    push(
        &router,
        &ada,
        "tasks",
        vec![change("t1", None, "ada-1", 1, json!({ "team_id": "red" }))],
    )
    .await;
    let adas = pull(&router, &ada, "tasks", None, 10).await;
    let cy = token("cy", json!({ "teams": ["blue"] }));
    let answer = call(
        &router,
        Method::POST,
        "/v1/collections/tasks/pull",
        Some(&cy),
        Some(json!({ "limit": 10, "checkpoint": adas.checkpoint })),
    )
    .await;
    assert_eq!(answer.status, StatusCode::GONE, "{:?}", answer.body);
    assert_eq!(answer.error_code(), "resync_required");
    assert!(!answer.body.to_string().contains("t1"));
}

#[tokio::test]
async fn the_example_team_subscription_serves_one_readable_team() {
    let router = router();
    let boss = token("boss", json!({ "teams": ["red", "blue"] }));
    for (id, team, seq) in [("t-red", "red", 1), ("t-blue", "blue", 2)] {
        let result = push(
            &router,
            &boss,
            "tasks",
            vec![change(id, None, "boss-1", seq, json!({ "team_id": team }))],
        )
        .await;
        assert_eq!(code(&result[0]), "accepted");
    }
    let ada = token("ada", json!({ "teams": ["red"] }));
    let pull_team = |team: &'static str| {
        let router = router.clone();
        let ada = ada.clone();
        async move {
            let body = json!({
                "limit": 100,
                "subscription": { "name": "team", "params": { "team_id": team } }
            });
            let answer = call(
                &router,
                Method::POST,
                "/v1/collections/tasks/pull",
                Some(&ada),
                Some(body),
            )
            .await;
            assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
            answer.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(pull_team("red").await, vec!["t-red"]);
    assert!(pull_team("blue").await.is_empty(), "not ada's team");
}
