//! Shared service: 4 queries at once on one service (4 instances of
//! `model_sim`). Baseline: the same queries one after another. Target:
//! ratio ≤ 1.0.

use std::sync::Arc;
use std::time::Instant;

use super::harness::{Row, median, row, same, scaled, session, set_rewrite, strings, timed};

pub(super) async fn shared(scale: f64, reps: usize) -> Row {
    const QUERIES: usize = 4;
    let batch = 1024;
    let batches = scaled(32.0, scale, 4);
    let rows = batches * batch;
    let session = Arc::new(session(strings(rows, batch, 1), 1, batch).await);
    session
        .sql(&format!(
            "CREATE RPC SERVICE sim FOR FUNCTION model_sim WITH (parallelism = 4, batch_size = {batch}, max_in_flight = 1)"
        ))
        .await
        .unwrap();
    let sql = "SELECT model_sim(s, 10, 0) FROM t";
    let (mut one_by_one, mut together) = (Vec::new(), Vec::new());
    let mut correct = true;
    set_rewrite(&session, false).await;
    let (expected, _) = timed(&session, sql).await;
    set_rewrite(&session, true).await;
    for _ in 0..reps {
        let start = Instant::now();
        for _ in 0..QUERIES {
            let (out, _) = timed(&session, sql).await;
            correct &= same(&expected, &out);
        }
        one_by_one.push(start.elapsed());
        let start = Instant::now();
        let tasks: Vec<_> = (0..QUERIES)
            .map(|_| {
                let session = Arc::clone(&session);
                tokio::spawn(async move { timed(&session, sql).await.0 })
            })
            .collect();
        for task in tasks {
            correct &= same(&expected, &task.await.unwrap());
        }
        together.push(start.elapsed());
    }
    let (b, r) = (median(one_by_one), median(together));
    row(
        format!("shared service: {QUERIES} queries of {batches} batches, 4 instances"),
        "the same queries one after another",
        (b, r, rows * QUERIES),
        "ratio <= 1.0",
        r / b <= 1.0,
        correct,
    )
}
