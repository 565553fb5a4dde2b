//! Sync rules per pushed change: the bucket of a row and whether its writer may write it, on
//! the worked example (`examples/rules/teams.toml`), for a row of five fields and a user in
//! three teams. The budget is 5 µs per change (`bucket_of` + `may_write`).
//!
//! `cargo bench -p fero-server --bench rules`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fero_server::rules::{Principal, Rules};
use serde_json::json;

const TEAMS: &str = include_str!("../examples/rules/teams.toml");

fn per_change(c: &mut Criterion) {
    let rules = Rules::parse(TEAMS, "teams.toml").expect("the worked example loads");
    let claims = json!({ "teams": [3, 7, 11], "roles": ["member"], "sub": "ada" });
    let ada = Principal {
        id: "ada",
        claims: &claims,
    };
    let grants = vec!["team:42".to_owned()];
    let readable = rules
        .readable_buckets(&ada, &grants)
        .expect("claims are well formed");
    let user = rules.user_context(&ada, &readable);
    let task = json!({
        "team_id": 7,
        "title": "write the release notes",
        "done": false,
        "priority": 2,
        "assignee": "ada",
    });
    let membership = json!({
        "user_id": "bob",
        "team_id": 7,
        "role": "member",
        "since": "2026-12-01",
        "invited_by": "ada",
    });
    let tasks = rules.collection("tasks").expect("tasks is ruled");
    let members = rules.collection("members").expect("members is ruled");

    let mut group = c.benchmark_group("rules_per_change");
    group.bench_function("tasks_bucket_of_and_default_write", |b| {
        b.iter(|| {
            let bucket = tasks
                .bucket_of(black_box(&task), &user, "task-1", false)
                .expect("routes");
            let allowed = tasks
                .may_write(&bucket, black_box(&task), &user, "task-1", false)
                .expect("decides");
            black_box((bucket, allowed))
        });
    });
    group.bench_function("members_bucket_of_and_cel_write", |b| {
        b.iter(|| {
            let bucket = members
                .bucket_of(black_box(&membership), &user, "m-1", false)
                .expect("routes");
            let allowed = members
                .may_write(&bucket, black_box(&membership), &user, "m-1", false)
                .expect("decides");
            black_box((bucket, allowed))
        });
    });
    group.bench_function("tasks_with_user_context_rebuilt_per_change", |b| {
        b.iter(|| {
            let user = rules.user_context(&ada, &readable);
            let bucket = tasks
                .bucket_of(black_box(&task), &user, "task-1", false)
                .expect("routes");
            let allowed = tasks
                .may_write(&bucket, black_box(&task), &user, "task-1", false)
                .expect("decides");
            black_box((bucket, allowed))
        });
    });
    group.finish();

    let mut group = c.benchmark_group("rules_per_request");
    group.bench_function("readable_buckets", |b| {
        b.iter(|| {
            rules
                .readable_buckets(black_box(&ada), &grants)
                .expect("claims are well formed")
        });
    });
    group.bench_function("user_context", |b| {
        b.iter(|| rules.user_context(black_box(&ada), &readable));
    });
    group.bench_function("grant_of", |b| {
        b.iter(|| {
            rules
                .grant_of("members", black_box(&membership))
                .expect("grants")
        });
    });
    group.finish();
}

criterion_group!(benches, per_change);
criterion_main!(benches);
