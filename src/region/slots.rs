//! The slots of a region: resizing them, and the autoscaler's loop that
//! resizes them to the demand.
//!
//! A region's slots are a list behind an async lock; growing pushes slots
//! whose keepers (`supervisor`) start their instances, shrinking pops the
//! last ones, which drain before they stop. [`keep_scaled`] samples the
//! region's demand and asks the pure `Scaler` (`autoscale`) whether to
//! resize.

use std::sync::{Arc, PoisonError};

use tokio::sync::oneshot;

use super::autoscale::{self, Scaler, Scaling};
use super::supervisor::{RegionShared, Slot, SlotCommand};
use crate::error::RpcError;

/// The slots of a region, in order; the last ones go first when it shrinks.
pub(crate) type Slots = tokio::sync::Mutex<SlotList>;

/// Slots whose keepers are aborted when the list is dropped (the region and
/// its autoscaler both hold it; the last to go stops them).
#[derive(Default)]
pub(crate) struct SlotList(Vec<Slot>);

impl std::ops::Deref for SlotList {
    type Target = Vec<Slot>;
    fn deref(&self) -> &Vec<Slot> {
        &self.0
    }
}

impl std::ops::DerefMut for SlotList {
    fn deref_mut(&mut self) -> &mut Vec<Slot> {
        &mut self.0
    }
}

impl Drop for SlotList {
    fn drop(&mut self) {
        for slot in &self.0 {
            slot.task.abort();
        }
    }
}

/// Starts or stops slots until `slots` has `parallelism`: returns when the
/// new instances are ready (or with the first one's start-up error), and the
/// removed ones have drained and stopped.
pub(crate) async fn resize_slots(
    shared: &Arc<RegionShared>,
    slots: &Slots,
    parallelism: usize,
) -> Result<(), RpcError> {
    if parallelism == 0 {
        return Err(RpcError::NoParallelism {
            service: shared.name().to_string(),
        });
    }
    let mut slots = slots.lock().await;
    let mut started = Vec::new();
    while slots.len() < parallelism {
        let (ready, ready_rx) = oneshot::channel();
        let index = slots.len();
        slots.push(Slot::start(shared, index, ready));
        started.push(ready_rx);
    }
    let mut stopping = Vec::new();
    while slots.len() > parallelism {
        if let Some(slot) = slots.pop() {
            let _ = slot.commands.send(SlotCommand::Stop).await;
            stopping.push(slot.task);
        }
    }
    shared
        .options
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .parallelism = parallelism;
    drop(slots);
    let mut first_error = None;
    for ready in started {
        let outcome = ready
            .await
            .unwrap_or_else(|_| Err("the slot ended before it was ready".into()));
        if let Err(reason) = outcome {
            first_error.get_or_insert(reason);
        }
    }
    for task in stopping {
        let _ = task.await;
    }
    match first_error {
        None => Ok(()),
        Some(reason) => Err(RpcError::InstanceStart {
            service: shared.name().to_string(),
            reason,
        }),
    }
}

/// Keeps a region sized to its demand while it has `max_parallelism` (read
/// again at each sample, so ALTER turns it on, off or changes it).
pub(crate) async fn keep_scaled(shared: Arc<RegionShared>, slots: Arc<Slots>) {
    let mut scaler = Scaler::new(std::time::Instant::now());
    loop {
        let options = shared.options();
        tokio::time::sleep(autoscale::tick(&options)).await;
        let options = shared.options();
        let size = slots.lock().await.len();
        let now = std::time::Instant::now();
        let Some((to, why)) = scaler.observe(now, shared.demand.now(), size, &options) else {
            continue;
        };
        tracing::info!(service = %shared.name(), from = size, to, %why, "autoscaling");
        let decision = Scaling {
            at: std::time::SystemTime::now(),
            from: size,
            to,
            why,
        };
        // told before the resize ends: a caller that sees the new size
        // also sees why
        *shared
            .scaling
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(decision.clone());
        if let Err(error) = resize_slots(&shared, &slots, to).await {
            tracing::warn!(service = %shared.name(), %error, "autoscaling failed; back to {size}");
            let _ = resize_slots(&shared, &slots, size).await;
            *shared
                .scaling
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Scaling {
                why: format!("{}; not done: {error}", decision.why),
                ..decision
            });
        }
        scaler.restart(std::time::Instant::now());
    }
}
