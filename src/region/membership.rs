//! The instance set of a service, pushed to every caller.
//!
//! The supervisor publishes a new [`Membership`] on a `tokio::sync::watch`
//! channel at every change of any instance's state (starting, ready,
//! draining, gone, and a slot restarting); callers hold a [`MembershipWatch`] and route only to
//! [`MemberState::Ready`] members. Nobody polls.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

/// The life of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Launched, loading its functions; takes no request yet.
    Starting,
    /// Serving.
    Ready,
    /// Takes no new request; finishes those in flight, then stops.
    Draining,
    /// Missed its last health check: takes no new request until it answers
    /// one again, and is replaced after missing a few in a row.
    Unresponsive,
    /// Stopped or dead.
    Gone,
    /// Not an instance yet: its slot's instance died (or failed to start)
    /// and the next one starts at [`Member::next_start`], after a backoff.
    Restarting,
}

impl fmt::Display for MemberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Draining => "draining",
            Self::Unresponsive => "unresponsive",
            Self::Gone => "gone",
            Self::Restarting => "restarting",
        })
    }
}

/// One instance as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Unique within the region; a restarted instance gets a new id.
    pub id: u64,
    /// The slot (0..parallelism) the instance fills (a registered
    /// instance: a slot of its own, from 2^20).
    pub slot: usize,
    /// Its Flight address, `http://host:port` (empty while starting).
    pub address: String,
    /// Its state.
    pub state: MemberState,
    /// How many times its slot was restarted before this instance.
    pub restarts: u32,
    /// Why the instance (or the one before it in its slot) failed, if it did.
    pub last_error: Option<String>,
    /// When a [`MemberState::Restarting`] slot starts its next instance.
    pub next_start: Option<Instant>,
    /// Joined through a session's registry (`rpcop serve --register`): it
    /// runs elsewhere, keeps its place by renewing a lease, and is not the
    /// region's to start, restart or stop. Its slot is its own, numbered
    /// from 2^20.
    pub registered: bool,
}

/// A snapshot of a service's instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    /// Increases with every published change.
    pub epoch: u64,
    /// The instances, by slot then id.
    pub members: Vec<Member>,
}

impl Membership {
    /// The members that take requests.
    pub fn ready(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Ready)
    }

    /// Is the member with this id ready?
    pub fn is_ready(&self, id: u64) -> bool {
        self.ready().any(|m| m.id == id)
    }
}

/// What a caller holds to follow a service's instances.
pub type MembershipWatch = watch::Receiver<Arc<Membership>>;

/// The publishing side, owned by the supervisor.
#[derive(Debug)]
pub(crate) struct MembershipPublisher {
    sender: watch::Sender<Arc<Membership>>,
}

impl MembershipPublisher {
    pub(crate) fn new() -> Self {
        let (sender, _) = watch::channel(Arc::new(Membership::default()));
        Self { sender }
    }

    pub(crate) fn subscribe(&self) -> MembershipWatch {
        self.sender.subscribe()
    }

    pub(crate) fn current(&self) -> Arc<Membership> {
        Arc::clone(&self.sender.borrow())
    }

    /// Applies `change` to the member `id` (inserting it if new) and
    /// publishes. A member that becomes gone is published as gone, then
    /// removed in a second publication.
    pub(crate) fn update(&self, id: u64, slot: usize, change: impl FnOnce(&mut Member)) {
        self.apply(id, Some(slot), change);
    }

    /// Applies `change` to the member `id` if it is still listed (a member
    /// removed meanwhile stays removed), and publishes.
    pub(crate) fn update_existing(&self, id: u64, change: impl FnOnce(&mut Member)) {
        self.apply(id, None, change);
    }

    /// [`Self::update`]; with no `slot`, a member not listed is left out.
    fn apply(&self, id: u64, slot: Option<usize>, change: impl FnOnce(&mut Member)) {
        let mut gone = false;
        self.sender.send_if_modified(|current| {
            if slot.is_none() && !current.members.iter().any(|m| m.id == id) {
                return false;
            }
            let mut next = Membership {
                epoch: current.epoch + 1,
                members: current.members.clone(),
            };
            let index = match next.members.iter().position(|m| m.id == id) {
                Some(index) => index,
                None => {
                    next.members.push(Member {
                        id,
                        slot: slot.unwrap_or_default(),
                        address: String::new(),
                        state: MemberState::Starting,
                        restarts: 0,
                        last_error: None,
                        next_start: None,
                        registered: false,
                    });
                    next.members.len() - 1
                }
            };
            change(&mut next.members[index]);
            gone = next.members[index].state == MemberState::Gone;
            next.members.sort_by_key(|m| (m.slot, m.id));
            *current = Arc::new(next);
            true
        });
        if gone {
            self.sender.send_modify(|current| {
                *current = Arc::new(Membership {
                    epoch: current.epoch + 1,
                    members: current
                        .members
                        .iter()
                        .filter(|m| m.id != id)
                        .cloned()
                        .collect(),
                });
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn changes_are_pushed_and_gone_members_removed() {
        let publisher = MembershipPublisher::new();
        let mut watch = publisher.subscribe();
        publisher.update(1, 0, |m| m.address = "http://a".into());
        assert!(watch.has_changed().unwrap());
        assert_eq!(
            watch.borrow_and_update().members[0].state,
            MemberState::Starting
        );
        publisher.update(1, 0, |m| m.state = MemberState::Ready);
        assert!(watch.borrow_and_update().is_ready(1));
        publisher.update(2, 1, |m| m.state = MemberState::Ready);
        publisher.update(1, 0, |m| m.state = MemberState::Gone);
        let now = watch.borrow_and_update().clone();
        assert_eq!(now.members.len(), 1);
        assert_eq!(now.members[0].id, 2);
        // starting, ready, second member, gone, removed
        assert_eq!(now.epoch, 5);
        // a member removed stays removed for updates of existing ones only
        publisher.update_existing(1, |m| m.state = MemberState::Ready);
        assert!(!watch.has_changed().unwrap());
        publisher.update_existing(2, |m| m.state = MemberState::Draining);
        assert_eq!(
            watch.borrow_and_update().members[0].state,
            MemberState::Draining
        );
    }
}
