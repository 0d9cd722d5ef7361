//! Every scenario of the comparison bench (`benches/compare/`) at a tiny
//! scale, in the test profile: it checks only that rpcop's answers equal
//! each baseline's. Speed lives in `cargo bench --bench compare`.

#[path = "../benches/compare/main.rs"]
mod compare;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_answers_like_its_baseline() {
    let rows = tokio::time::timeout(std::time::Duration::from_secs(300), compare::run(0.001, 1))
        .await
        .expect("the smoke run finishes within five minutes");
    assert_eq!(rows.len(), 33);
    for row in rows {
        assert!(row.correct, "{row:?}");
        assert!(row.baseline_ms > 0.0 && row.rpcop_ms > 0.0, "{row:?}");
    }
}
