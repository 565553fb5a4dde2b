//! Sync rules per pushed change: the bucket of a row and whether its writer may write it, on
//! the worked example (`examples/rules/teams.toml`), for a row of five fields and a user in
//! three teams. The budget is 5 µs per change (`bucket_of` + `may_write`).
//!
//! Each case is measured twice: `rules_per_change` is criterion's wall time; on a machine
//! shared with other builds that includes the time the thread waits for a core.
//! `rules_per_change_unpreempted` runs the same iterations in chunks of 64 and takes the
//! median chunk: a chunk lasts well under a scheduler time slice, so the median is the cost on
//! a core of its own, which is what the per-change budget is about.
//!
//! `cargo bench -p fero-server --bench rules`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fero_server::rules::{Principal, Rules};
use serde_json::json;

const TEAMS: &str = include_str!("../examples/rules/teams.toml");

/// Iterations per timed chunk: tens of microseconds, far below a scheduler time slice.
const CHUNK: u64 = 64;

/// `iters` runs of `f`, timed in chunks of [`CHUNK`]; the median chunk's time per iteration,
/// times `iters`. Chunks in which the thread was preempted are the slow tail the median
/// leaves out.
fn median_of_chunks(iters: u64, mut f: impl FnMut()) -> Duration {
    let mut per_iteration = Vec::with_capacity(iters.div_ceil(CHUNK) as usize);
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        per_iteration.push(start.elapsed().as_secs_f64() / n as f64);
        left -= n;
    }
    per_iteration.sort_by(f64::total_cmp);
    let median = per_iteration[per_iteration.len() / 2];
    Duration::from_secs_f64(median * iters as f64)
}

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

    let mut group = c.benchmark_group("rules_per_change_unpreempted");
    group.bench_function("tasks_bucket_of_and_default_write", |b| {
        b.iter_custom(|iters| {
            median_of_chunks(iters, || {
                let bucket = tasks
                    .bucket_of(black_box(&task), &user, "task-1", false)
                    .expect("routes");
                let allowed = tasks
                    .may_write(&bucket, black_box(&task), &user, "task-1", false)
                    .expect("decides");
                black_box((bucket, allowed));
            })
        });
    });
    group.bench_function("members_bucket_of_and_cel_write", |b| {
        b.iter_custom(|iters| {
            median_of_chunks(iters, || {
                let bucket = members
                    .bucket_of(black_box(&membership), &user, "m-1", false)
                    .expect("routes");
                let allowed = members
                    .may_write(&bucket, black_box(&membership), &user, "m-1", false)
                    .expect("decides");
                black_box((bucket, allowed));
            })
        });
    });
    group.bench_function("user_context", |b| {
        b.iter_custom(|iters| {
            median_of_chunks(iters, || {
                black_box(rules.user_context(black_box(&ada), &readable));
            })
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
