//! Cutting argument batches into requests of at most `batch_size` rows and
//! about `max_batch_bytes` bytes, without copying (slices share buffers).

use datafusion::arrow::record_batch::RecordBatch;

/// Splits a batch into requests of at most `rows` rows and about `bytes` bytes.
pub(crate) fn slices(batch: &RecordBatch, rows: usize, bytes: usize) -> Vec<RecordBatch> {
    let total = batch.num_rows();
    if total == 0 {
        return vec![batch.clone()];
    }
    let size = batch.get_array_memory_size().max(1);
    let by_bytes = (bytes.saturating_mul(total) / size).max(1);
    let step = rows.min(by_bytes).max(1);
    (0..total)
        .step_by(step)
        .map(|offset| batch.slice(offset, step.min(total - offset)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int32Array};
    use std::sync::Arc;

    #[test]
    fn slices_cover_every_row_once() {
        let array: ArrayRef = Arc::new(Int32Array::from_iter_values(0..10_000));
        let batch = RecordBatch::try_from_iter([("a", array)]).unwrap();
        let parts = slices(&batch, 3000, usize::MAX);
        assert_eq!(
            parts.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(),
            [3000, 3000, 3000, 1000]
        );
        let parts = slices(&batch, 10_000, 4000);
        assert!(parts.len() >= 10, "{}", parts.len());
        assert_eq!(
            parts.iter().map(RecordBatch::num_rows).sum::<usize>(),
            10_000
        );
        assert_eq!(slices(&batch.slice(0, 0), 10, 10).len(), 1);
    }
}
