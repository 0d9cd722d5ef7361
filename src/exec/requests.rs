//! The input of a proxy operator cut into requests, and the time its output
//! waits for answers.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::Time;
use futures::{Stream, StreamExt, stream};

use crate::client::slices;

/// The input cut into requests: small batches coalesced, big ones sliced,
/// to `rows` rows and about `bytes` bytes each.
pub(crate) fn requests(
    input: SendableRecordBatchStream,
    rows: usize,
    bytes: usize,
) -> impl Stream<Item = Result<RecordBatch>> + Send {
    let schema = input.schema();
    // a batch without columns (a call of constants only) has nothing to copy
    let coalescer = (!schema.fields().is_empty()).then(|| {
        BatchCoalescer::new(schema, rows).with_biggest_coalesce_batch_size(Some(rows / 2))
    });
    let state = (Some(input), coalescer, VecDeque::<RecordBatch>::new());
    stream::unfold(
        state,
        move |(mut input, mut coalescer, mut ready)| async move {
            loop {
                if let Some(request) = ready.pop_front() {
                    return Some((Ok(request), (input, coalescer, ready)));
                }
                let stream = input.as_mut()?;
                let pushed = match stream.next().await {
                    Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                    Some(Ok(batch)) => match coalescer.as_mut() {
                        Some(c) => c.push_batch(batch),
                        None => {
                            ready.extend(slices(&batch, rows, bytes));
                            continue;
                        }
                    },
                    Some(Err(error)) => return Some((Err(error), (None, coalescer, ready))),
                    None => {
                        input = None;
                        match coalescer.as_mut() {
                            Some(c) => c.finish_buffered_batch(),
                            None => continue,
                        }
                    }
                };
                if let Err(error) = pushed {
                    return Some((Err(error.into()), (None, coalescer, ready)));
                }
                if let Some(c) = coalescer.as_mut() {
                    while let Some(batch) = c.next_completed_batch() {
                        ready.extend(slices(&batch, rows, bytes));
                    }
                }
            }
        },
    )
}

/// Adds to `wait_time` the time the output is pending while requests are out.
pub(crate) struct Waiting<S> {
    pub(crate) inner: Pin<Box<S>>,
    pub(crate) in_flight: Arc<AtomicUsize>,
    pub(crate) wait_time: Time,
    pub(crate) since: Option<Instant>,
}

impl<S: Stream> Stream for Waiting<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let poll = this.inner.as_mut().poll_next(cx);
        match poll {
            Poll::Pending => {
                if this.since.is_none() && this.in_flight.load(Ordering::Relaxed) > 0 {
                    this.since = Some(Instant::now());
                }
            }
            Poll::Ready(_) => {
                if let Some(since) = this.since.take() {
                    this.wait_time.add_elapsed(since);
                }
            }
        }
        poll
    }
}
