//! Cutting a stream of argument batches into requests, and keeping up to
//! `max_in_flight` of them outstanding, with results in request order.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt, stream};

use super::ServiceClient;
use crate::error::RpcError;

impl ServiceClient {
    /// Evaluates `function` over a stream of argument batches, each sliced to
    /// `batch_size` rows (and `max_batch_bytes`), with up to `max_in_flight`
    /// requests outstanding. Yields one result array per request, in order;
    /// pulls input only when a request slot is free, so nothing is buffered
    /// without bound.
    pub fn call_stream<S>(
        &self,
        function: &str,
        input: S,
    ) -> impl Stream<Item = Result<ArrayRef, RpcError>> + Send + use<S>
    where
        S: Stream<Item = RecordBatch> + Send,
    {
        let client = self.clone();
        let function: Arc<str> = Arc::from(function);
        let options = self.options();
        let (rows, bytes) = (options.batch_size, options.max_batch_bytes);
        input
            .flat_map(move |batch| stream::iter(slices(&batch, rows, bytes)))
            .map(move |request| {
                let client = client.clone();
                let function = Arc::clone(&function);
                async move { client.call(&function, request).await }
            })
            .buffered(options.max_in_flight)
    }
}

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
    use datafusion::arrow::array::Int32Array;

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
