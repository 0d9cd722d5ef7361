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
//! longer needs the bytes; the writer reuses the space and slot of any body
//! once it is released, going around the ones still held. A body that does
//! not fit (bigger than half a ring, or with no free slot or gap left)
//! travels inline: shared memory never waits and never fails a request. A
//! reader holds at most [`HELD_IN_PLACE`] bodies of a ring in place and
//! copies any further one out, so one that keeps what it reads never fills
//! the ring.
//!
//! What each side trusts: the instance reads requests in place (zero-copy),
//! trusting its caller not to touch a body before it is released. The caller
//! reads the answers of instances it trusts (rpcop's own serve program) in
//! place as well, and copies any other answer out before decoding it, so an
//! instance that scribbles on its ring cannot change an answer already
//! taken. The seals keep either side from cutting the mapping from under the
//! other. (Which answers are validated: docs/protocol.md, "Validation".)

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use arrow_flight::FlightData;
use bytes::Bytes;
use datafusion::arrow::buffer::{Buffer, MutableBuffer};
use memmap2::MmapRaw;

/// How many bodies of a ring a reader holds in place at most (half its
/// slots); it copies any further one out and releases its slot at once.
pub const HELD_IN_PLACE: usize = SLOTS / 2;
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
    /// Bodies of each ring this side reads in place and still holds (this
    /// process's count, not shared): past [`HELD_IN_PLACE`], it copies.
    held: [AtomicUsize; 2],
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
            held: Default::default(),
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
            held: Default::default(),
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
        self.held[ring as usize].fetch_add(1, Ordering::Relaxed);
        Ok(Bytes::from_owner(Placed {
            segment: Arc::clone(self),
            ring,
            placement,
        }))
    }

    /// Whether this side already holds so many bodies of `ring` in place
    /// that it should copy the next one out: a reader that keeps what it
    /// reads (a query that collects every answer) would otherwise fill the
    /// ring, and the writer would send the rest inline, through the socket.
    pub(crate) fn crowded(&self, ring: Ring) -> bool {
        self.held[ring as usize].load(Ordering::Relaxed) >= HELD_IN_PLACE
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
pub(super) struct Aligned(pub(super) Buffer);

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
        self.segment.held[self.ring as usize].fetch_sub(1, Ordering::Relaxed);
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

/// Places bodies in one ring of a segment, reusing the space and slots of
/// released ones, in whatever order they are released: a body its reader
/// keeps (an answer a query collects) is an island the writer goes around,
/// not a wall it waits behind.
pub(crate) struct RingWriter {
    segment: Arc<Segment>,
    ring: Ring,
    /// Where the next body goes if the space is free: an offset in the ring.
    head: usize,
    /// The bodies placed and not yet seen released: slot, offset, padded
    /// length.
    placed: Vec<(u32, usize, usize)>,
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
            placed: Vec::new(),
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

    /// Copies a message's body, given as the consecutive `parts` it is made
    /// of, into the ring and adds its placement to the message's
    /// `app_metadata` (true), if it is worth it and fits; otherwise (false)
    /// the body travels inline. Writing the parts where they go is the only
    /// copy a body takes on its way.
    pub(crate) fn place(&mut self, app_metadata: &mut Bytes, parts: &[Buffer]) -> bool {
        let Some(placement) = self.write(parts) else {
            return false;
        };
        *app_metadata = placement.after(app_metadata);
        true
    }

    /// Copies the body of `parts` into the ring, or says `None` when it
    /// travels inline.
    fn write(&mut self, parts: &[Buffer]) -> Option<Placement> {
        self.reclaim();
        let len = parts.iter().map(Buffer::len).sum::<usize>();
        if !(MIN_PLACED..=self.limit).contains(&len) {
            return None;
        }
        let padded = len.next_multiple_of(ALIGNMENT);
        let slot = self.free_slot()?;
        let offset = self.free_space(padded)?;
        self.largest = self.largest.max(padded);
        let mut to = offset;
        for part in parts {
            // SAFETY: the parts end at offset + len <= RING_BYTES, and no
            // reader holds these bytes: free_space found no body placed
            // there that is not released
            unsafe {
                std::ptr::copy_nonoverlapping(
                    part.as_ptr(),
                    self.segment.data(self.ring).add(to),
                    part.len(),
                );
            }
            to += part.len();
        }
        self.segment
            .flag(self.ring, slot)
            .store(1, Ordering::Release);
        self.placed.push((slot, offset, padded));
        self.head = offset + padded;
        Some(Placement { slot, offset, len })
    }

    /// A slot no body placed holds, the next in turn after the last used.
    fn free_slot(&mut self) -> Option<u32> {
        if self.placed.len() >= SLOTS {
            return None;
        }
        let slot = (0..SLOTS as u32)
            .map(|i| (self.next_slot + i) % SLOTS as u32)
            .find(|slot| self.placed.iter().all(|&(held, ..)| held != *slot))?;
        self.next_slot = (slot + 1) % SLOTS as u32;
        Some(slot)
    }

    /// Where `padded` bytes that no held body overlaps begin: on from the
    /// last body, going around held ones, over at most one lap. Bodies
    /// start over at the ring's beginning past its end, or past a soft end
    /// (32 of the largest bodies) when the beginning is free by then: the
    /// ring then keeps to the bytes in flight, and so do the pages it
    /// touches.
    fn free_space(&self, padded: usize) -> Option<usize> {
        // the end of the last held body that overlaps `at..at + padded`
        let blocked = |at: usize| {
            self.placed
                .iter()
                .filter(|&&(_, start, len)| start < at + padded && at < start + len)
                .map(|&(_, start, len)| start + len)
                .max()
        };
        let soft_end = (32 * self.largest.max(padded)).clamp(1 << 20, RING_BYTES);
        if self.placed.is_empty() || (self.head + padded > soft_end && blocked(0).is_none()) {
            return Some(0);
        }
        let mut at = self.head;
        let mut wrapped = false;
        loop {
            if at + padded > RING_BYTES {
                if wrapped {
                    return None;
                }
                (at, wrapped) = (0, true);
            }
            match blocked(at) {
                None => return Some(at),
                Some(end) if wrapped && end >= self.head => return None,
                Some(end) => at = end,
            }
        }
    }

    /// How many bodies placed are not released yet.
    #[cfg(test)]
    pub(crate) fn placed(&mut self) -> usize {
        self.reclaim();
        self.placed.len()
    }

    /// Forgets the bodies that their reader released, in any order.
    fn reclaim(&mut self) {
        let (segment, ring) = (&self.segment, self.ring);
        self.placed
            .retain(|&(slot, ..)| segment.flag(ring, slot).load(Ordering::Acquire) != 0);
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
    message.data_body = if copy || segment.crowded(ring) {
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
mod tests;
