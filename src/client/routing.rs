//! Which instance serves a client's next request.
//!
//! A [`Router`] follows a service's membership watch, keeps one
//! [`Connection`] per ready instance, and picks among them by the service's
//! policy ([`LoadBalance`]), among the instances a request has failed on
//! least often. It waits (up to the timeout) while no instance is ready, and closes
//! connections to instances that left the ready set once nothing is
//! outstanding on them, which ends their exchanges and lets a draining
//! instance stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::RpcError;
use crate::options::{Isolation, LoadBalance, Protocol, ServiceOptions, Transport};
use crate::region::{Member, MemberState, Membership, MembershipWatch};
use crate::transport::Connection;
use crate::wire::{Access, connect};

/// How long a client waits, after a connection broke, for the region to say
/// whether (and why) the instance died. The supervisor notices a process's
/// exit at once; a broken connection to a live instance costs this wait.
const DEATH_NOTICE: Duration = Duration::from_secs(1);

/// Picks instances for one client (see the module documentation).
pub(crate) struct Router {
    service: String,
    policy: LoadBalance,
    transport: Transport,
    /// What the instances speak.
    protocol: Protocol,
    /// Are they instances this region started from rpcop's own serve
    /// program (`isolation = 'process'`, no command), whose answers the
    /// client decodes without validating them again?
    own_instances: bool,
    timeout: Duration,
    access: Access,
    membership: MembershipWatch,
    connections: Mutex<HashMap<u64, Arc<Connection>>>,
    cursor: AtomicUsize,
    random: AtomicU64,
}

impl Router {
    /// A router of the service `service` by `options`' policy, transport and
    /// timeout, following `membership`; ends its pruning task when dropped.
    pub(crate) fn new(
        service: String,
        options: &ServiceOptions,
        access: Access,
        membership: MembershipWatch,
    ) -> Arc<Self> {
        let seed = std::hash::BuildHasher::hash_one(
            &std::collections::hash_map::RandomState::new(),
            std::time::SystemTime::now(),
        );
        let router = Arc::new(Self {
            service,
            policy: options.load_balance,
            transport: options.transport,
            protocol: options.protocol,
            own_instances: options.protocol.is_rpcop()
                && options.isolation == Isolation::Process
                && options.command.is_none(),
            timeout: options.timeout,
            access,
            membership,
            connections: Mutex::new(HashMap::new()),
            cursor: AtomicUsize::new(0),
            random: AtomicU64::new(seed | 1),
        });
        tokio::spawn(prune_on_change(
            Arc::downgrade(&router),
            router.membership.clone(),
        ));
        router
    }

    /// How many instances are ready now.
    pub(crate) fn ready_instances(&self) -> usize {
        self.membership.borrow().ready().count()
    }

    fn connections(&self) -> MutexGuard<'_, HashMap<u64, Arc<Connection>>> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Picks a ready instance by policy among those `tried` (the ids of the
    /// instances a request failed on, once per failure) names least, so a
    /// retry goes to another instance whenever there is one; waits up to the
    /// timeout for one to be ready.
    pub(crate) async fn pick(
        &self,
        function: &str,
        tried: &[u64],
    ) -> Result<Arc<Connection>, RpcError> {
        let deadline = Instant::now() + self.timeout;
        let mut watch = self.membership.clone();
        loop {
            let snapshot = Arc::clone(&watch.borrow_and_update());
            let ready: Vec<&Member> = snapshot.ready().collect();
            if !ready.is_empty() {
                // the instances this request tried least: each in turn
                let tries = |m: &Member| tried.iter().filter(|id| **id == m.id).count();
                let least = ready.iter().map(|m| tries(m)).min().unwrap_or(0);
                let mut candidates: Vec<&Member> =
                    ready.into_iter().filter(|m| tries(m) == least).collect();
                // in turn: not the one it just failed on, if there is another
                if candidates.len() > 1
                    && let Some(last) = tried.last()
                {
                    candidates.retain(|m| m.id != *last);
                }
                let connections = self.connections_for(&candidates)?;
                return Ok(self.choose(connections));
            }
            match tokio::time::timeout_at(deadline, watch.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(RpcError::Stopped {
                        service: self.service.clone(),
                    });
                }
                Err(_) => {
                    return Err(RpcError::NoInstance {
                        service: self.service.clone(),
                        function: function.to_string(),
                        waited: self.timeout,
                    });
                }
            }
        }
    }

    /// A ready instance other than `id`, by policy, without waiting: the
    /// target of a hedge. `None` if `id` is the only one.
    pub(crate) fn try_pick_other(&self, id: u64) -> Option<Arc<Connection>> {
        let snapshot = Arc::clone(&self.membership.borrow());
        let others: Vec<&Member> = snapshot.ready().filter(|m| m.id != id).collect();
        if others.is_empty() {
            return None;
        }
        let connections = self.connections_for(&others).ok()?;
        Some(self.choose(connections))
    }

    /// Why the instance `id` (of `slot`) died, if it did: waits (up to
    /// [`DEATH_NOTICE`]) for the region to publish that it left the ready
    /// set and why. `None` if it is still ready when the wait ends, or left
    /// without a reason.
    pub(crate) async fn death_of(&self, id: u64, slot: usize) -> Option<String> {
        let deadline = Instant::now() + DEATH_NOTICE;
        let mut watch = self.membership.clone();
        loop {
            {
                let snapshot = watch.borrow_and_update();
                let member = snapshot.members.iter().find(|m| m.id == id);
                let gone = member.is_none_or(|m| m.state == MemberState::Gone);
                // its own reason, or the one its successor in the slot
                // carries (a gone member is soon removed)
                let why = member.and_then(|m| m.last_error.clone()).or_else(|| {
                    snapshot
                        .members
                        .iter()
                        .filter(|m| m.slot == slot && m.id > id)
                        .find_map(|m| m.last_error.clone())
                });
                // gone, and its reason published (its last words may come
                // a moment after its exit)
                if gone && why.is_some() {
                    return why;
                }
            }
            match tokio::time::timeout_at(deadline, watch.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    fn connections_for(&self, members: &[&Member]) -> Result<Vec<Arc<Connection>>, RpcError> {
        let mut connections = self.connections();
        members
            .iter()
            .map(|m| {
                if let Some(connection) = connections.get(&m.id) {
                    return Ok(Arc::clone(connection));
                }
                let client = connect(&m.address, &self.access, self.timeout)?;
                let direct = self.transport == Transport::Auto;
                let connection = Arc::new(Connection::new(
                    m.id,
                    m.slot,
                    &m.address,
                    client,
                    direct,
                    self.protocol,
                    // a registered instance is another host's, not started here
                    self.own_instances && !m.registered,
                ));
                connections.insert(m.id, Arc::clone(&connection));
                Ok(connection)
            })
            .collect()
    }

    fn choose(&self, mut connections: Vec<Arc<Connection>>) -> Arc<Connection> {
        let n = connections.len();
        // the expected wait at an instance: its requests outstanding (and
        // this one) times its recent answer time, so a straggler gets fewer.
        // An idle instance (nothing outstanding, nothing given up that it is
        // probably still working on), or one not yet timed, counts as the
        // fastest: an estimate can never starve an instance, which is tried
        // when idle and its estimate renewed
        let fastest = connections
            .iter()
            .map(|c| c.latency_us())
            .filter(|l| *l > 0)
            .min()
            .unwrap_or(1);
        let load = |c: &Arc<Connection>| {
            let outstanding = c.outstanding.load(Ordering::Relaxed) as u64;
            let latency = match c.latency_us() {
                l if l == 0 || c.is_idle() => fastest,
                l => l,
            };
            (outstanding + 1).saturating_mul(latency)
        };
        let index = match self.policy {
            LoadBalance::RoundRobin => self.cursor.fetch_add(1, Ordering::Relaxed) % n,
            LoadBalance::LeastOutstanding => {
                // start the scan at a rotating offset so ties spread evenly
                let start = self.cursor.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|i| load(&connections[*i]))
                    .unwrap_or(0)
            }
            LoadBalance::PowerOfTwo => {
                let a = self.random_below(n);
                let b = if n > 1 {
                    (a + 1 + self.random_below(n - 1)) % n
                } else {
                    a
                };
                if load(&connections[b]) < load(&connections[a]) {
                    b
                } else {
                    a
                }
            }
        };
        connections.swap_remove(index)
    }

    fn random_below(&self, n: usize) -> usize {
        // xorshift64*: good enough to spread load, no dependency needed
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random.store(x, Ordering::Relaxed);
        let r = x.wrapping_mul(0x2545F4914F6CDD1D);
        usize::try_from(r % n as u64).unwrap_or(0)
    }

    /// Closes the connection to an instance that is no longer ready once no
    /// request is outstanding on it.
    pub(crate) fn prune_if_idle(&self, connection: &Connection) {
        let ready = self.membership.borrow().is_ready(connection.id);
        if !ready && connection.outstanding.load(Ordering::Relaxed) == 0 {
            self.connections().remove(&connection.id);
        }
    }
}

/// Closes idle connections to members that left the ready set, whenever the
/// membership changes, and fails the requests still waiting on a member
/// that is gone (died, replaced); ends with the router or the region.
async fn prune_on_change(router: Weak<Router>, mut watch: MembershipWatch) {
    while watch.changed().await.is_ok() {
        let Some(router) = router.upgrade() else {
            return;
        };
        let snapshot = Arc::clone(&watch.borrow_and_update());
        router.connections().retain(|id, connection| {
            let member = snapshot.members.iter().find(|m| m.id == *id);
            if member.is_none_or(|m| m.state == MemberState::Gone) {
                connection.abandon(gone_reason(&snapshot, *id, connection.slot, member));
                return false;
            }
            snapshot.is_ready(*id) || connection.outstanding.load(Ordering::Relaxed) > 0
        });
    }
}

/// Why the member `id` of `slot` left: its own last error, or the one its
/// successor in the slot carries (a gone member is soon removed).
fn gone_reason(snapshot: &Membership, id: u64, slot: usize, member: Option<&Member>) -> String {
    member
        .and_then(|m| m.last_error.clone())
        .or_else(|| {
            snapshot
                .members
                .iter()
                .filter(|m| m.slot == slot && m.id > id)
                .find_map(|m| m.last_error.clone())
        })
        .map_or_else(
            || "the instance left the service".to_string(),
            |why| format!("the instance left the service: {why}"),
        )
}
