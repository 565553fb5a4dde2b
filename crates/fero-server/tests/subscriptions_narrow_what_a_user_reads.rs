//! Partial sync by subscription, over the HTTP API: a pull that names a subscription gets the
//! rows of the buckets its rule selects *and* the user may read, with its own cursor. A
//! subscription never widens what a user reads, a cursor of one subscription is refused for
//! another, and an unknown subscription or bad parameters get a clear 422.

mod support;

use axum::Router;
use axum::http::{Method, StatusCode};
use fero::SyncCheckpoint;
use fero_protocol::{PullResponse, Subscription};
use fero_server::{JwtVerifier, Rules, Server, SqliteStorage};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Answer, call, change, push};

const SECRET: &str = "subscription-test-secret-at-least-32-bytes";

/// Tasks live in their project's bucket; the `projects` claim says which projects a user may
/// read. Two subscriptions: one project, or a list of them.
const RULES: &str = r#"
[access]
read = 'has(user.claims.projects) ? user.claims.projects.map(p, "project:" + p) : []'

[collections.tasks]
bucket = '"project:" + data.project_id'

[collections.tasks.subscriptions]
project = '"project:" + params.project_id'
projects = 'params.ids.map(p, "project:" + p)'
"#;

fn token(sub: &str, projects: &[&str]) -> String {
    let claims = json!({ "sub": sub, "exp": 4_102_444_800u64, "projects": projects });
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn router() -> Router {
    Server::builder()
        .storage(SqliteStorage::open_in_memory().unwrap())
        .tokens(support::tokens())
        .jwt(JwtVerifier::builder().hs256_secret(SECRET).build().unwrap())
        .sharing(std::sync::Arc::new(
            Rules::parse(RULES, "rules.toml").unwrap(),
        ))
        .build()
        .unwrap()
        .router()
}

fn project(id: &str) -> Subscription {
    Subscription::new("project").param("project_id", id)
}

async fn pull_raw(
    router: &Router,
    token: &str,
    collection: &str,
    subscription: Option<&Subscription>,
    checkpoint: Option<&SyncCheckpoint>,
) -> Answer {
    let body = json!({ "checkpoint": checkpoint, "limit": 100, "subscription": subscription });
    call(
        router,
        Method::POST,
        &format!("/v1/collections/{collection}/pull"),
        Some(token),
        Some(body),
    )
    .await
}

async fn pull(
    router: &Router,
    token: &str,
    subscription: Option<&Subscription>,
    checkpoint: Option<&SyncCheckpoint>,
) -> PullResponse {
    let answer = pull_raw(router, token, "tasks", subscription, checkpoint).await;
    assert_eq!(answer.status, StatusCode::OK, "pull failed: {answer:?}");
    serde_json::from_value(answer.body).unwrap()
}

fn ids(page: &PullResponse) -> Vec<(String, bool)> {
    page.items
        .iter()
        .map(|d| (d.id.clone(), d.deleted))
        .collect()
}

/// Writes task `id` into `project` as `writer` (who must read the project).
async fn write(
    router: &Router,
    writer: &str,
    id: &str,
    project: &str,
    seq: u64,
    base: Option<u64>,
) {
    let results = push(
        router,
        writer,
        "tasks",
        vec![change(id, base, "w", seq, json!({ "project_id": project }))],
    )
    .await;
    assert!(
        matches!(
            results[0].outcome,
            fero_protocol::ChangeOutcome::Accepted { .. }
        ),
        "{results:?}"
    );
}

#[tokio::test]
async fn a_subscription_pulls_only_its_projects_rows_with_its_own_cursor() {
    let router = router();
    let admin = token("admin", &["p1", "p2", "p3"]);
    write(&router, &admin, "a1", "p1", 1, None).await;
    write(&router, &admin, "b1", "p2", 2, None).await;
    write(&router, &admin, "a2", "p1", 3, None).await;
    write(&router, &admin, "c1", "p3", 4, None).await;

    let ada = token("ada", &["p1", "p2"]);
    // The whole readable set, without a subscription.
    let all = pull(&router, &ada, None, None).await;
    assert_eq!(
        ids(&all),
        vec![
            ("a1".into(), false),
            ("b1".into(), false),
            ("a2".into(), false)
        ]
    );
    // Project p1 only.
    let p1 = pull(&router, &ada, Some(&project("p1")), None).await;
    assert_eq!(ids(&p1), vec![("a1".into(), false), ("a2".into(), false)]);
    assert!(!p1.has_more);
    // Its cursor goes on from there: a later p1 write comes, a p2 write does not.
    write(&router, &admin, "b2", "p2", 5, None).await;
    write(&router, &admin, "a3", "p1", 6, None).await;
    let next = pull(&router, &ada, Some(&project("p1")), Some(&p1.checkpoint)).await;
    assert_eq!(ids(&next), vec![("a3".into(), false)]);
    // A list subscription.
    let both = Subscription::new("projects").param("ids", json!(["p2", "p3"]));
    let page = pull(&router, &ada, Some(&both), None).await;
    assert_eq!(ids(&page), vec![("b1".into(), false), ("b2".into(), false)]);
}

#[tokio::test]
async fn a_subscription_never_widens_what_a_user_reads() {
    let router = router();
    let admin = token("admin", &["p1", "p3"]);
    write(&router, &admin, "secret", "p3", 1, None).await;
    let ada = token("ada", &["p1"]);
    let page = pull(&router, &ada, Some(&project("p3")), None).await;
    assert!(page.items.is_empty(), "{page:?}");
    let many = Subscription::new("projects").param("ids", json!(["p1", "p3"]));
    assert!(
        pull(&router, &ada, Some(&many), None)
            .await
            .items
            .is_empty()
    );
    // Once ada may read p3 (her token says so), the same subscription serves it.
    let ada = token("ada", &["p1", "p3"]);
    let page = pull(&router, &ada, Some(&project("p3")), None).await;
    assert_eq!(ids(&page), vec![("secret".into(), false)]);
}

#[tokio::test]
async fn losing_access_moves_the_rows_out_of_a_subscription() {
    let router = router();
    let admin = token("admin", &["p1"]);
    write(&router, &admin, "a1", "p1", 1, None).await;
    let ada = token("ada", &["p1"]);
    let page = pull(&router, &ada, Some(&project("p1")), None).await;
    assert_eq!(ids(&page), vec![("a1".into(), false)]);
    // Ada's new token no longer names p1: the subscription's next page removes a1.
    let ada = token("ada", &[]);
    let next = pull(&router, &ada, Some(&project("p1")), Some(&page.checkpoint)).await;
    assert_eq!(ids(&next), vec![("a1".into(), true)]);
    assert_eq!(next.items[0].data, Value::Null, "a removal carries no data");
}

#[tokio::test]
async fn a_row_moved_to_another_project_leaves_one_subscription_and_enters_the_other() {
    let router = router();
    let admin = token("admin", &["p1", "p2"]);
    write(&router, &admin, "t", "p1", 1, None).await;
    let ada = token("ada", &["p1", "p2"]);
    let p1 = pull(&router, &ada, Some(&project("p1")), None).await;
    let p2 = pull(&router, &ada, Some(&project("p2")), None).await;
    assert_eq!(ids(&p1), vec![("t".into(), false)]);
    assert!(p2.items.is_empty());
    write(&router, &admin, "t", "p2", 2, Some(1)).await;
    let p1 = pull(&router, &ada, Some(&project("p1")), Some(&p1.checkpoint)).await;
    assert_eq!(ids(&p1), vec![("t".into(), true)], "a removal from p1");
    let p2 = pull(&router, &ada, Some(&project("p2")), Some(&p2.checkpoint)).await;
    assert_eq!(ids(&p2), vec![("t".into(), false)], "the row in p2");
    assert_eq!(p2.items[0].data["project_id"], "p2");
}

#[tokio::test]
async fn a_cursor_of_one_subscription_is_refused_for_another() {
    let router = router();
    let admin = token("admin", &["p1", "p2"]);
    write(&router, &admin, "a1", "p1", 1, None).await;
    let ada = token("ada", &["p1", "p2"]);
    let p1 = pull(&router, &ada, Some(&project("p1")), None).await;
    for (subscription, what) in [
        (Some(project("p2")), "another subscription's"),
        (None, "the whole set's"),
    ] {
        let answer = pull_raw(
            &router,
            &ada,
            "tasks",
            subscription.as_ref(),
            Some(&p1.checkpoint),
        )
        .await;
        assert_eq!(answer.status, StatusCode::GONE, "{what}: {answer:?}");
        assert_eq!(answer.error_code(), "resync_required");
    }
    // And the reverse: the whole set's cursor for a subscription.
    let all = pull(&router, &ada, None, None).await;
    let answer = pull_raw(
        &router,
        &ada,
        "tasks",
        Some(&project("p1")),
        Some(&all.checkpoint),
    )
    .await;
    assert_eq!(answer.status, StatusCode::GONE, "{answer:?}");
}

#[tokio::test]
async fn unknown_subscriptions_and_bad_parameters_get_a_clear_422() {
    let router = router();
    let ada = token("ada", &["p1"]);
    let unknown = pull_raw(
        &router,
        &ada,
        "tasks",
        Some(&Subscription::new("team")),
        None,
    )
    .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unknown.error_code(), "invalid_request");
    let message = unknown.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"team\"") && message.contains("project, projects"),
        "{message}"
    );

    // A missing parameter: the rule fails, and the message names the rule, not a value.
    let missing = pull_raw(
        &router,
        &ada,
        "tasks",
        Some(&Subscription::new("project").param("id", "p1-secret-value")),
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = missing.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("subscriptions.project"), "{message}");
    assert!(!message.contains("p1-secret-value"), "{message}");

    // A collection the rules do not share has no subscriptions.
    let private = pull_raw(&router, &ada, "notes", Some(&project("p1")), None).await;
    assert_eq!(private.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        private.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not shared"),
        "{private:?}"
    );
}

#[test]
fn subscription_rules_are_checked_when_the_file_is_read() {
    let bad_variable = RULES.replace(
        "project = '\"project:\" + params.project_id'",
        "project = '\"project:\" + data.project_id'",
    );
    let error = Rules::parse(&bad_variable, "rules.toml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("rules.toml:9:") && error.contains("`data` is not available"),
        "{error}"
    );
    let params_elsewhere = RULES.replace(
        "bucket = '\"project:\" + data.project_id'",
        "bucket = '\"project:\" + params.project_id'",
    );
    let error = Rules::parse(&params_elsewhere, "rules.toml")
        .unwrap_err()
        .to_string();
    assert!(error.contains("`params` is not available"), "{error}");
    let not_a_table = RULES.replace(
        "[collections.tasks.subscriptions]\n",
        "subscriptions = 3\n[unused]\n",
    );
    let error = Rules::parse(&not_a_table, "rules.toml")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("[collections.tasks].subscriptions") && error.contains("must be a table"),
        "{error}"
    );
}

async fn digest(router: &Router, token: &str, collection: &str, subscriptions: Value) -> Answer {
    let list = subscriptions.to_string();
    let query: String = url_encode(&list);
    call(
        router,
        Method::GET,
        &format!("/v1/collections/{collection}/digest?version=2&subscriptions={query}"),
        Some(token),
        None,
    )
    .await
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_digest_of_subscriptions_counts_the_rows_they_select_and_the_user_may_read() {
    let router = router();
    let admin = token("admin", &["p1", "p2", "p3"]);
    write(&router, &admin, "a1", "p1", 1, None).await;
    write(&router, &admin, "a2", "p1", 2, None).await;
    write(&router, &admin, "b1", "p2", 3, None).await;
    write(&router, &admin, "c1", "p3", 4, None).await;
    let ada = token("ada", &["p1", "p2"]);
    let count = |answer: &Answer| {
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        answer.body["count"].as_u64().unwrap()
    };
    let p1 = json!([{ "name": "project", "params": { "project_id": "p1" } }]);
    assert_eq!(count(&digest(&router, &ada, "tasks", p1.clone()).await), 2);
    let p1_p2 = json!([
        { "name": "project", "params": { "project_id": "p1" } },
        { "name": "projects", "params": { "ids": ["p2", "p3"] } }
    ]);
    // p3 is selected but not readable: only a1, a2 and b1.
    let both = digest(&router, &ada, "tasks", p1_p2).await;
    assert_eq!(count(&both), 3);
    // The same rows as the whole readable set, so the same digest.
    let all = call(
        &router,
        Method::GET,
        "/v1/collections/tasks/digest?version=2",
        Some(&ada),
        None,
    )
    .await;
    assert_eq!(both.body["digest"], all.body["digest"]);
    let none = digest(&router, &ada, "tasks", json!([])).await;
    assert_eq!(count(&none), 0);

    let unknown = digest(&router, &ada, "tasks", json!([{ "name": "nope" }])).await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    let malformed = digest(&router, &ada, "tasks", json!({ "name": "project" })).await;
    assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY);
    let private = digest(&router, &ada, "notes", p1).await;
    assert_eq!(private.status, StatusCode::UNPROCESSABLE_ENTITY);
}
