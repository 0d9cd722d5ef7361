//! Guests: instances that run elsewhere and joined a region through a
//! session's registry (`rpcop serve --register`).
//!
//! A guest is a member of the region like any other: published on the
//! membership watch, routed to while ready, health-checked every
//! half-second (out of routing at the first missed check, dropped after
//! three). It also holds a *lease*: each renewal extends it, and a guest
//! whose lease runs out (it vanished, froze, or lost its way to the
//! registry) is dropped even while its address still answers. A guest that
//! leaves is drained first: out of routing, then told to drain, and let go
//! once its callers' requests in flight have finished. The region never
//! starts, restarts or stops a guest; each has a slot of its own, from
//! [`GUEST_SLOTS_FROM`], so it never stands in for one of the region's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::membership::{Member, MemberState};
use super::process::random_token;
use super::supervisor::{
    Check, HEALTH_INTERVAL, HEALTH_TIMEOUT, MISSED_LEASE, RegionShared, drain, unhealthy,
};
use crate::error::RpcError;
use crate::wire::{self, Access, FlightClient, Secret, connect};

/// The first slot number of guests: beyond any region's own slots.
pub(crate) const GUEST_SLOTS_FROM: usize = 1 << 20;

/// What a guest's keeper is told.
enum GuestCommand {
    /// The lease starts again.
    Renew,
    /// Drain and let go; answered when done.
    Leave(oneshot::Sender<()>),
}

struct Guest {
    secret: Secret,
    commands: mpsc::Sender<GuestCommand>,
    task: JoinHandle<()>,
}

/// A region's guests, by member id.
#[derive(Default)]
pub(crate) struct Guests {
    book: Mutex<HashMap<u64, Guest>>,
    /// The region is going: no guest is admitted any more.
    closed: AtomicBool,
}

impl Guests {
    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Guest>> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits the instance at `address` with `lease`: publishes it as
    /// starting, and ready once it answers a health check. Returns its
    /// member id and secret; `None` once the region is going.
    pub(crate) fn admit(
        self: &Arc<Self>,
        shared: &Arc<RegionShared>,
        address: String,
        lease: Duration,
    ) -> Result<Option<(u64, String)>, RpcError> {
        let secret = random_token()?;
        // the book holds the guest before its keeper can end and remove it
        let mut book = self.book();
        if self.closed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = GUEST_SLOTS_FROM.saturating_add(usize::try_from(id).unwrap_or(usize::MAX));
        // listed before the keeper runs: the keeper only changes it, so
        // once dismissed it stays gone
        shared.publisher.update(id, slot, |m| {
            m.address = address.clone();
            m.state = MemberState::Starting;
            m.registered = true;
        });
        let (commands, receiver) = mpsc::channel(4);
        let keeper = Keeper {
            shared: Arc::clone(shared),
            id,
            address,
            lease,
        };
        let guests = Arc::clone(self);
        let task = tokio::spawn(async move {
            keeper.keep(receiver).await;
            guests.book().remove(&id);
        });
        let guest = Guest {
            secret: Secret::new(secret.as_str()),
            commands,
            task,
        };
        book.insert(id, guest);
        Ok(Some((id, secret)))
    }

    /// The commands of guest `id`, if its secret is `secret`.
    fn commands_of(&self, id: u64, secret: &str) -> Option<mpsc::Sender<GuestCommand>> {
        let book = self.book();
        let guest = book.get(&id)?;
        (guest.secret.expose() == secret).then(|| guest.commands.clone())
    }

    /// Renews the lease of guest `id`; false if there is no such guest
    /// with that secret (its lease ran out, it left, or it never joined).
    pub(crate) fn renew(&self, id: u64, secret: &str) -> bool {
        let Some(commands) = self.commands_of(id, secret) else {
            return false;
        };
        // a renewal already queued renews as well
        match commands.try_send(GuestCommand::Renew) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Drains guest `id` and lets it go; returns when it has drained, or
    /// false at once if there is no such guest with that secret.
    pub(crate) async fn leave(&self, id: u64, secret: &str) -> bool {
        let Some(commands) = self.commands_of(id, secret) else {
            return false;
        };
        let (reply, done) = oneshot::channel();
        if commands.send(GuestCommand::Leave(reply)).await.is_err() {
            return false;
        }
        done.await.is_ok()
    }

    /// Stops keeping every guest (the region is going): admits no more,
    /// publishes them as gone, and leaves them running.
    pub(crate) fn dismiss_all(&self, shared: &RegionShared) {
        let guests: Vec<(u64, Guest)> = {
            let mut book = self.book();
            self.closed.store(true, Ordering::Release);
            book.drain().collect()
        };
        for (id, guest) in guests {
            guest.task.abort();
            // a keeper still running changes only listed members: once
            // removed, it cannot bring this one back
            shared
                .publisher
                .update_existing(id, |m| m.state = MemberState::Gone);
        }
    }
}

/// Keeps one guest's membership true.
struct Keeper {
    shared: Arc<RegionShared>,
    id: u64,
    address: String,
    lease: Duration,
}

impl Keeper {
    async fn keep(self, mut commands: mpsc::Receiver<GuestCommand>) {
        let left = match self.watch(&mut commands).await {
            Ok(reply) => reply,
            Err(reason) => {
                tracing::warn!(service = %self.shared.name(), address = %self.address, %reason,
                    "registered instance dropped");
                self.publish(|m| {
                    m.state = MemberState::Gone;
                    m.last_error = Some(reason);
                });
                return;
            }
        };
        tracing::info!(service = %self.shared.name(), address = %self.address,
            "registered instance left, drained");
        self.publish(|m| m.state = MemberState::Gone);
        if let Some(reply) = left {
            let _ = reply.send(());
        }
    }

    fn publish(&self, change: impl FnOnce(&mut Member)) {
        self.shared.publisher.update_existing(self.id, change);
    }

    /// Follows the guest until it leaves (`Ok`, with whom to tell once it
    /// is gone; drained) or is dropped (`Err`, with why).
    async fn watch(
        &self,
        commands: &mut mpsc::Receiver<GuestCommand>,
    ) -> Result<Option<oneshot::Sender<()>>, String> {
        let options = self.shared.options();
        let control = Access::of(self.shared.spec.token.expose(), &options)
            .and_then(|access| connect(&self.address, &access, HEALTH_TIMEOUT))
            .map_err(|e| format!("cannot reach {}: {e}", self.address))?;
        let lease = tokio::time::sleep(self.lease);
        tokio::pin!(lease);
        let expired = || {
            format!(
                "{MISSED_LEASE}: no renewal in {:?} (the instance vanished, froze, or cannot \
                 reach the registry); it joins again when it renews",
                self.lease
            )
        };
        // starting: ready at its first answer, which renewals do not wait
        // for longer than one lease
        let first_answer = async {
            while wire::action(&control, wire::ACTION_HEALTH, HEALTH_TIMEOUT)
                .await
                .is_none()
            {
                tokio::time::sleep(HEALTH_INTERVAL / 5).await;
            }
        };
        tokio::pin!(first_answer);
        let start_by = tokio::time::sleep(self.lease);
        tokio::pin!(start_by);
        loop {
            tokio::select! {
                () = &mut first_answer => break,
                () = &mut start_by => return Err(format!(
                    "never answered a health check at {} within its lease of {:?}; check that \
                     the address it registered (--advertise) reaches it from here, and that \
                     this host trusts its TLS certificate",
                    self.address, self.lease
                )),
                () = &mut lease => return Err(expired()),
                command = commands.recv() => match command {
                    Some(GuestCommand::Renew) => lease.as_mut().reset(tokio::time::Instant::now() + self.lease),
                    Some(GuestCommand::Leave(reply)) => return Ok(Some(reply)),
                    None => return Ok(None),
                },
            }
        }
        self.publish(|m| m.state = MemberState::Ready);
        let responsive = |answering: bool| {
            self.publish(|m| {
                m.state = if answering {
                    MemberState::Ready
                } else {
                    MemberState::Unresponsive
                };
            });
        };
        let health = unhealthy(Some(&control), Check::Health, responsive);
        tokio::pin!(health);
        loop {
            tokio::select! {
                reason = &mut health => return Err(reason),
                () = &mut lease => return Err(expired()),
                command = commands.recv() => match command {
                    Some(GuestCommand::Renew) => lease.as_mut().reset(tokio::time::Instant::now() + self.lease),
                    Some(GuestCommand::Leave(reply)) => {
                        self.drain(&control).await;
                        return Ok(Some(reply));
                    }
                    None => return Ok(None),
                },
            }
        }
    }

    /// Out of routing, then drained: its callers' requests in flight finish.
    async fn drain(&self, control: &FlightClient) {
        self.publish(|m| m.state = MemberState::Draining);
        drain(control, self.shared.options().timeout).await;
    }
}
