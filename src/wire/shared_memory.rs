//! Shared memory between a caller and an instance on one host: the bodies of
//! the Arrow IPC messages of an exchange go through a segment both map, and
//! only their headers, with a small placement, cross the Flight stream.
//!
//! The caller creates the [`Segment`] (a memfd, sealed so that neither side
//! can shrink or grow it) and offers it when it opens an exchange, in the
//! call metadata [`SHARED_MEMORY_HEADER`](super::SHARED_MEMORY_HEADER) as
//! `<pid>:<fd>:<nonce>`. An instance accepts by opening `/proc/<pid>/fd/<fd>`,
//! finding the same nonce at the segment's head, and answering the header
//! back in its response metadata. An instance on another host or of another
//! user cannot open it (or finds another nonce), and one that does not know
//! the header ignores it: the exchange then carries every body inline.
//!
//! The segment is a header page and two rings of [`RING_BYTES`]: the
//! requests' (the caller writes) and the answers' (the instance writes).
//! A writer copies a message's body into its ring at a 64-byte boundary,
//! sets the body's slot flag in the header page, and sends the message with
//! an empty body and the placement ([`PLACEMENT_PREFIX`], slot, offset,
//! length) after its `app_metadata`. The reader clears the flag when it no
//! longer needs the bytes; the writer reuses the space of the oldest bodies
//! once they are released. A body that does not fit (bigger than half a
//! ring, or while the ring is full of unreleased bodies) travels inline:
//! shared memory never waits and never fails a request.
//!
//! What each side trusts: the instance reads requests in place (zero-copy),
//! trusting its caller not to touch a body before it is released. The caller
//! copies each answer out before decoding it, so an instance that scribbles
//! on its ring cannot change an answer already taken, and the seals keep it
//! from cutting the mapping from under the caller. (Which answers are then
//! validated: docs/protocol.md, "Validation".)

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use arrow_flight::FlightData;
use bytes::Bytes;
use datafusion::arrow::buffer::{Buffer, MutableBuffer};
use memmap2::MmapRaw;

/// How a placement starts, after the message's own `app_metadata`.
pub const PLACEMENT_PREFIX: &[u8] = b"rpcop-shm";
/// Bytes of a placement: the prefix, slot (u32), offset, length (u64s, LE).
const PLACEMENT_BYTES: usize = PLACEMENT_PREFIX.len() + 4 + 8 + 8;

/// Bytes of each of the two rings.
pub const RING_BYTES: usize = 64 << 20;
/// Bodies one ring holds at once.
pub const SLOTS: usize = 256;
/// Bodies smaller than this travel inline (placing them saves too little).
pub const MIN_PLACED: usize = 4096;

const MAGIC: &[u8; 8] = b"rpcopshm";
const VERSION: u32 = 1;
const NONCE_BYTES: usize = 16;
/// The header page: magic, nonce, version, slots, ring bytes, then each
/// ring's slot flags.
const HEADER_BYTES: usize = 4096;
const FLAGS_AT: usize = 64;
const ALIGNMENT: usize = 64;
const SEGMENT_BYTES: usize = HEADER_BYTES + 2 * RING_BYTES;
const _: () = assert!(FLAGS_AT + 2 * SLOTS * 4 <= HEADER_BYTES);

/// One of a segment's two rings, by its index in the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ring {
    /// Written by the caller, read by the instance.
    Requests = 0,
    /// Written by the instance, read by the caller.
    Answers = 1,
}

/// A shared-memory segment, mapped.
#[derive(Debug)]
pub(crate) struct Segment {
    map: MmapRaw,
    /// `<pid>:<fd>:<nonce>`, what the caller offers.
    offer: String,
    _file: File,
}

// SAFETY: the mapping lives as long as the segment; its bytes are read and
// written only through the rings' protocol (a body is written before its
// message is sent and read after it arrives) and the flags are atomics.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    /// A new segment of this process, to offer to an instance.
    pub(crate) fn create() -> io::Result<Arc<Self>> {
        // SAFETY: a valid C string, and flags memfd_create documents
        let fd = unsafe {
            libc::memfd_create(
                c"rpcop-shm".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor, owned by nothing else
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(SEGMENT_BYTES as u64)?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor this function owns
        if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let map = MmapRaw::map_raw(&file)?;
        let mut nonce = [0u8; NONCE_BYTES];
        // SAFETY: writes at most nonce.len() bytes into nonce
        let got = unsafe { libc::getrandom(nonce.as_mut_ptr().cast(), nonce.len(), 0) };
        if usize::try_from(got).ok() != Some(nonce.len()) {
            return Err(io::Error::other("getrandom gave no nonce"));
        }
        let mut header = Vec::with_capacity(FLAGS_AT);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&nonce);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&(SLOTS as u32).to_le_bytes());
        header.extend_from_slice(&(RING_BYTES as u64).to_le_bytes());
        // SAFETY: the header fits the mapping's first page, which nothing
        // else touches yet
        unsafe { std::ptr::copy_nonoverlapping(header.as_ptr(), map.as_mut_ptr(), header.len()) };
        let offer = format!("{}:{fd}:{}", std::process::id(), hex(&nonce));
        Ok(Arc::new(Self {
            map,
            offer,
            _file: file,
        }))
    }

    /// What the caller offers in [`SHARED_MEMORY_HEADER`](super::SHARED_MEMORY_HEADER).
    pub(crate) fn offer(&self) -> &str {
        &self.offer
    }

    /// The segment a caller offered, mapped; an error says why it cannot
    /// be used (another host, another user, not a segment).
    pub(crate) fn open(offer: &str) -> Result<Arc<Self>, String> {
        let parts: Vec<&str> = offer.split(':').collect();
        let [pid, fd, nonce] = parts.as_slice() else {
            return Err(format!("'{offer}' is not <pid>:<fd>:<nonce>"));
        };
        let (Ok(pid), Ok(fd)) = (pid.parse::<u32>(), fd.parse::<u32>()) else {
            return Err(format!("'{offer}' is not <pid>:<fd>:<nonce>"));
        };
        let path = format!("/proc/{pid}/fd/{fd}");
        // never block on, or adopt as a terminal, whatever the path names
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
            .map_err(|e| format!("cannot open {path}: {e}"))?;
        let metadata = file.metadata().map_err(|e| e.to_string())?;
        if !metadata.is_file() || metadata.len() != SEGMENT_BYTES as u64 {
            return Err(format!("{path} is not an rpcop segment"));
        }
        let map = MmapRaw::map_raw(&file).map_err(|e| format!("cannot map {path}: {e}"))?;
        // SAFETY: the mapping is SEGMENT_BYTES long, more than its header
        let head = unsafe { std::slice::from_raw_parts(map.as_ptr(), FLAGS_AT) };
        let expected = format!("{}{nonce}{VERSION}:{SLOTS}:{RING_BYTES}", hex(MAGIC));
        let found = format!(
            "{}{}{}:{}:{}",
            hex(&head[..8]),
            hex(&head[8..8 + NONCE_BYTES]),
            u32::from_le_bytes(head[24..28].try_into().unwrap_or_default()),
            u32::from_le_bytes(head[28..32].try_into().unwrap_or_default()),
            u64::from_le_bytes(head[32..40].try_into().unwrap_or_default()),
        );
        if found != expected {
            return Err(format!("{path} is not the segment offered"));
        }
        Ok(Arc::new(Self {
            map,
            offer: offer.to_string(),
            _file: file,
        }))
    }

    fn flag(&self, ring: Ring, slot: u32) -> &AtomicU32 {
        let at = FLAGS_AT + ((ring as usize) * SLOTS + slot as usize % SLOTS) * 4;
        // SAFETY: within the header page, 4-byte aligned (the mapping is
        // page-aligned), and only ever accessed atomically
        unsafe { &*self.map.as_ptr().add(at).cast::<AtomicU32>() }
    }

    fn data(&self, ring: Ring) -> *mut u8 {
        // SAFETY: both rings lie within the mapping
        unsafe {
            self.map
                .as_mut_ptr()
                .add(HEADER_BYTES + (ring as usize) * RING_BYTES)
        }
    }

    /// The bytes of `placement` in `ring`, in place: its slot is released
    /// when the last clone of them drops.
    pub(crate) fn view(
        self: &Arc<Self>,
        ring: Ring,
        placement: Placement,
    ) -> Result<Bytes, String> {
        placement.check()?;
        Ok(Bytes::from_owner(Placed {
            segment: Arc::clone(self),
            ring,
            placement,
        }))
    }

    /// A copy of the bytes of `placement` in `ring` (64-byte aligned, as
    /// Arrow's readers want them); the slot is released at once.
    pub(crate) fn copy(&self, ring: Ring, placement: Placement) -> Result<Bytes, String> {
        placement.check()?;
        let mut copy = MutableBuffer::with_capacity(placement.len);
        // SAFETY: check() kept the placement within the ring
        let bytes = unsafe {
            std::slice::from_raw_parts(self.data(ring).add(placement.offset), placement.len)
        };
        copy.extend_from_slice(bytes);
        self.flag(ring, placement.slot).store(0, Ordering::Release);
        Ok(Bytes::from_owner(Aligned(copy.into())))
    }
}

/// An Arrow buffer as the bytes of a message body.
struct Aligned(Buffer);

impl AsRef<[u8]> for Aligned {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// A body read in place, released when dropped.
struct Placed {
    segment: Arc<Segment>,
    ring: Ring,
    placement: Placement,
}

impl AsRef<[u8]> for Placed {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the placement was checked to lie within the ring, and the
        // writer leaves it alone until the flag is cleared (on drop)
        unsafe {
            std::slice::from_raw_parts(
                self.segment.data(self.ring).add(self.placement.offset),
                self.placement.len,
            )
        }
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        self.segment
            .flag(self.ring, self.placement.slot)
            .store(0, Ordering::Release);
    }
}

/// Where a body lies in a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    slot: u32,
    offset: usize,
    len: usize,
}

impl Placement {
    fn check(self) -> Result<(), String> {
        let fits = (self.slot as usize) < SLOTS
            && self.offset.is_multiple_of(ALIGNMENT)
            && self
                .offset
                .checked_add(self.len)
                .is_some_and(|end| end <= RING_BYTES);
        if fits {
            Ok(())
        } else {
            Err(format!(
                "a body placed at slot {}, offset {}, length {} lies outside the shared ring",
                self.slot, self.offset, self.len
            ))
        }
    }

    /// `app_metadata` followed by this placement.
    fn after(self, app_metadata: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(app_metadata.len() + PLACEMENT_BYTES);
        out.extend_from_slice(app_metadata);
        out.extend_from_slice(PLACEMENT_PREFIX);
        out.extend_from_slice(&self.slot.to_le_bytes());
        out.extend_from_slice(&(self.offset as u64).to_le_bytes());
        out.extend_from_slice(&(self.len as u64).to_le_bytes());
        Bytes::from(out)
    }

    /// The placement at the end of `app_metadata`, if there is one, and
    /// the metadata before it.
    fn split(app_metadata: &Bytes) -> Option<(Bytes, Self)> {
        let at = app_metadata.len().checked_sub(PLACEMENT_BYTES)?;
        let tail = app_metadata.get(at..)?.strip_prefix(PLACEMENT_PREFIX)?;
        let word = |from: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                tail.get(from..from + 8)?.try_into().ok()?,
            ))
        };
        let slot = u32::from_le_bytes(tail.get(..4)?.try_into().ok()?);
        let offset = usize::try_from(word(4)?).ok()?;
        let len = usize::try_from(word(12)?).ok()?;
        Some((app_metadata.slice(..at), Self { slot, offset, len }))
    }
}

/// Places bodies in one ring of a segment, reusing the space of released
/// ones.
pub(crate) struct RingWriter {
    segment: Arc<Segment>,
    ring: Ring,
    /// Bytes placed so far, across wraps: a body lies at `start % RING_BYTES`.
    head: usize,
    /// The bodies not yet reclaimed, oldest first: slot, start, end.
    placed: VecDeque<(u32, usize, usize)>,
    /// The largest body it places (bigger ones travel inline).
    limit: usize,
    next_slot: u32,
    /// The largest body placed (padded), which sets the ring's soft end.
    largest: usize,
}

impl RingWriter {
    /// A writer of `ring` of `segment`.
    pub(crate) fn new(segment: Arc<Segment>, ring: Ring) -> Self {
        Self {
            segment,
            ring,
            head: 0,
            placed: VecDeque::new(),
            limit: RING_BYTES / 2,
            next_slot: 0,
            largest: 0,
        }
    }

    /// The writer, placing no body over `bytes` (a peer's message limit).
    pub(crate) fn with_limit(self, bytes: usize) -> Self {
        Self {
            limit: bytes.min(RING_BYTES / 2),
            ..self
        }
    }

    /// Moves `message`'s body into the ring if it is worth it and fits
    /// (true); otherwise it stays inline.
    pub(crate) fn place(&mut self, message: &mut FlightData) -> bool {
        let Some(placement) = self.write(&message.data_body) else {
            return false;
        };
        message.app_metadata = placement.after(&message.app_metadata);
        message.data_body = Bytes::new();
        true
    }

    /// Copies `body` into the ring, or says `None` when it travels inline.
    fn write(&mut self, body: &[u8]) -> Option<Placement> {
        self.reclaim();
        let len = body.len();
        if !(MIN_PLACED..=self.limit).contains(&len) || self.placed.len() >= SLOTS {
            return None;
        }
        let padded = len.next_multiple_of(ALIGNMENT);
        self.largest = self.largest.max(padded);
        let tail = self
            .placed
            .front()
            .map_or(self.head, |&(_, start, _)| start);
        let at = self.head % RING_BYTES;
        // bodies go on from the last one, and start over at the ring's
        // beginning past its end, or past a soft end (32 of the largest
        // bodies) when the beginning is free by then: the ring then keeps to
        // the bytes in flight, and so do the pages it touches
        let soft_end = (32 * self.largest).clamp(1 << 20, RING_BYTES);
        let next_lap = self.head.next_multiple_of(RING_BYTES);
        let fits = |start: usize| start + padded - tail <= RING_BYTES;
        let start = if at == 0 {
            self.head
        } else if self.placed.is_empty() {
            // nothing to run into: start over
            next_lap
        } else if at + padded > soft_end && fits(next_lap) {
            next_lap
        } else if at + padded <= RING_BYTES {
            self.head
        } else {
            next_lap
        };
        if !self.placed.is_empty() && !fits(start) {
            return None;
        }
        let end = start + padded;
        let offset = start % RING_BYTES;
        // SAFETY: offset + len <= RING_BYTES, and no reader holds these
        // bytes: every body that lay there was released
        unsafe {
            std::ptr::copy_nonoverlapping(
                body.as_ptr(),
                self.segment.data(self.ring).add(offset),
                len,
            );
        }
        let slot = self.next_slot;
        self.next_slot = (self.next_slot + 1) % SLOTS as u32;
        self.segment
            .flag(self.ring, slot)
            .store(1, Ordering::Release);
        self.placed.push_back((slot, start, end));
        self.head = end;
        Some(Placement { slot, offset, len })
    }

    /// Forgets the oldest bodies that their reader released.
    fn reclaim(&mut self) {
        while let Some(&(slot, _, _)) = self.placed.front() {
            if self.segment.flag(self.ring, slot).load(Ordering::Acquire) != 0 {
                break;
            }
            self.placed.pop_front();
        }
    }
}

/// Puts back the body of `message` if it was placed in `ring` of `segment`
/// (true): in place, or a copy (`copy`); a message without a placement is
/// left as it is. An error names what was wrong with the placement.
pub(crate) fn take_body(
    message: &mut FlightData,
    segment: Option<&Arc<Segment>>,
    ring: Ring,
    copy: bool,
) -> Result<bool, String> {
    let Some((metadata, placement)) = Placement::split(&message.app_metadata) else {
        return Ok(false);
    };
    let Some(segment) = segment else {
        return Err(
            "a message's body was placed in shared memory, but no segment was shared".to_string(),
        );
    };
    message.data_body = if copy {
        segment.copy(ring, placement)?
    } else {
        segment.view(ring, placement)?
    };
    message.app_metadata = metadata;
    Ok(true)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: Vec<u8>, seq: u64) -> FlightData {
        FlightData {
            app_metadata: super::super::encode_sequence(seq),
            data_body: Bytes::from(body),
            ..FlightData::default()
        }
    }

    #[test]
    fn bodies_travel_through_an_opened_segment_and_come_back_the_same() {
        let caller = Segment::create().unwrap();
        let instance = Segment::open(caller.offer()).unwrap();
        let mut writer = RingWriter::new(Arc::clone(&caller), Ring::Requests);
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent = message(body.clone(), 7);
        writer.place(&mut sent);
        assert!(sent.data_body.is_empty(), "placed, not inline");
        let mut received = sent.clone();
        take_body(&mut received, Some(&instance), Ring::Requests, false).unwrap();
        assert_eq!(received.data_body.as_ref(), body.as_slice());
        assert_eq!(received.app_metadata, super::super::encode_sequence(7));
        assert_eq!(received.data_body.as_ptr() as usize % ALIGNMENT, 0);
        // held in place until dropped; a copy releases at once
        assert_eq!(instance.flag(Ring::Requests, 0).load(Ordering::Acquire), 1);
        drop(received);
        assert_eq!(instance.flag(Ring::Requests, 0).load(Ordering::Acquire), 0);
        let mut answer = message(body.clone(), 8);
        RingWriter::new(Arc::clone(&instance), Ring::Answers).place(&mut answer);
        take_body(&mut answer, Some(&caller), Ring::Answers, true).unwrap();
        assert_eq!(answer.data_body.as_ref(), body.as_slice());
        assert_eq!(caller.flag(Ring::Answers, 0).load(Ordering::Acquire), 0);
    }

    #[test]
    fn small_huge_and_unreleased_bodies_stay_inline() {
        let segment = Segment::create().unwrap();
        let mut writer = RingWriter::new(Arc::clone(&segment), Ring::Requests);
        let mut small = message(vec![1; MIN_PLACED - 1], 1);
        writer.place(&mut small);
        assert_eq!(small.data_body.len(), MIN_PLACED - 1);
        let mut huge = message(vec![1; RING_BYTES / 2 + 1], 2);
        writer.place(&mut huge);
        assert_eq!(huge.data_body.len(), RING_BYTES / 2 + 1);
        // four bodies of a quarter of the ring fill it: a fifth finds no
        // room until the first is released
        let quarter = RING_BYTES / 4;
        let mut held = Vec::new();
        for seq in 0..4 {
            let mut m = message(vec![2; quarter], seq);
            writer.place(&mut m);
            assert!(m.data_body.is_empty(), "body {seq} placed");
            held.push(m);
        }
        let mut fifth = message(vec![3; quarter], 9);
        writer.place(&mut fifth);
        assert_eq!(fifth.data_body.len(), quarter, "no room: inline");
        let mut first = held.remove(0);
        take_body(&mut first, Some(&segment), Ring::Requests, true).unwrap();
        let mut fourth = message(vec![3; quarter], 9);
        writer.place(&mut fourth);
        assert!(fourth.data_body.is_empty(), "room again once released");
    }

    #[test]
    fn a_ring_in_steady_use_stays_at_its_beginning() {
        let segment = Segment::create().unwrap();
        let mut writer = RingWriter::new(Arc::clone(&segment), Ring::Requests);
        let mut highest = 0;
        let mut in_flight = VecDeque::new();
        for seq in 0..1000 {
            let mut m = message(vec![4; 100_000], seq);
            writer.place(&mut m);
            let (_, placement) = Placement::split(&m.app_metadata).unwrap();
            highest = highest.max(placement.offset + placement.len);
            in_flight.push_back(m);
            if in_flight.len() > 8 {
                let mut done = in_flight.pop_front().unwrap();
                take_body(&mut done, Some(&segment), Ring::Requests, true).unwrap();
            }
        }
        // the soft end: 32 of the largest bodies
        assert!(
            highest <= 33 * 100_096,
            "touched {highest} bytes for 9 in flight"
        );
        // all released: the next body starts over at the beginning
        for mut done in in_flight {
            take_body(&mut done, Some(&segment), Ring::Requests, true).unwrap();
        }
        let mut m = message(vec![5; 100_000], 1000);
        assert!(writer.place(&mut m), "placed once the ring is empty");
        assert_eq!(Placement::split(&m.app_metadata).unwrap().1.offset, 0);
    }

    #[test]
    fn bad_offers_and_placements_are_refused_with_why() {
        assert!(
            Segment::open("nonsense")
                .unwrap_err()
                .contains("<pid>:<fd>:<nonce>")
        );
        let segment = Segment::create().unwrap();
        let forged = segment.offer().rsplit_once(':').unwrap().0.to_string() + ":00";
        assert!(
            Segment::open(&forged)
                .unwrap_err()
                .contains("not the segment offered")
        );
        // this process's stdin is no segment
        let stdin = format!("{}:0:00", std::process::id());
        assert!(Segment::open(&stdin).is_err());
        let outside = Placement {
            slot: 0,
            offset: RING_BYTES - 64,
            len: 128,
        };
        let mut m = FlightData {
            app_metadata: outside.after(b""),
            ..FlightData::default()
        };
        let error = take_body(&mut m, Some(&segment), Ring::Answers, true).unwrap_err();
        assert!(error.contains("outside the shared ring"), "{error}");
        let error = take_body(&mut m, None, Ring::Answers, true).unwrap_err();
        assert!(error.contains("no segment was shared"), "{error}");
    }
}
