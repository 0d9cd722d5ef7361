//! Tests of the shared memory: segments, rings and placements.

use std::collections::VecDeque;

use super::*;

fn message(body: Vec<u8>, seq: u64) -> FlightData {
    FlightData {
        app_metadata: super::super::encode_sequence(seq),
        data_body: Bytes::from(body),
        ..FlightData::default()
    }
}

/// Places `message`'s body, in two parts, as an encoder does (true), or
/// leaves it inline.
fn place(writer: &mut RingWriter, message: &mut FlightData) -> bool {
    let body = Buffer::from(message.data_body.clone());
    let half = body.len() / 2;
    let parts = [body.slice_with_length(0, half), body.slice(half)];
    let placed = writer.place(&mut message.app_metadata, &parts);
    if placed {
        message.data_body = Bytes::new();
    }
    placed
}

#[test]
fn bodies_travel_through_an_opened_segment_and_come_back_the_same() {
    let caller = Segment::create().unwrap();
    let instance = Segment::open(caller.offer()).unwrap();
    let mut writer = RingWriter::new(Arc::clone(&caller), Ring::Requests);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = message(body.clone(), 7);
    place(&mut writer, &mut sent);
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
    place(
        &mut RingWriter::new(Arc::clone(&instance), Ring::Answers),
        &mut answer,
    );
    take_body(&mut answer, Some(&caller), Ring::Answers, true).unwrap();
    assert_eq!(answer.data_body.as_ref(), body.as_slice());
    assert_eq!(caller.flag(Ring::Answers, 0).load(Ordering::Acquire), 0);
}

#[test]
fn small_huge_and_unreleased_bodies_stay_inline() {
    let segment = Segment::create().unwrap();
    let mut writer = RingWriter::new(Arc::clone(&segment), Ring::Requests);
    let mut small = message(vec![1; MIN_PLACED - 1], 1);
    place(&mut writer, &mut small);
    assert_eq!(small.data_body.len(), MIN_PLACED - 1);
    let mut huge = message(vec![1; RING_BYTES / 2 + 1], 2);
    place(&mut writer, &mut huge);
    assert_eq!(huge.data_body.len(), RING_BYTES / 2 + 1);
    // four bodies of a quarter of the ring fill it: a fifth finds no
    // room until the first is released
    let quarter = RING_BYTES / 4;
    let mut held = Vec::new();
    for seq in 0..4 {
        let mut m = message(vec![2; quarter], seq);
        place(&mut writer, &mut m);
        assert!(m.data_body.is_empty(), "body {seq} placed");
        held.push(m);
    }
    let mut fifth = message(vec![3; quarter], 9);
    place(&mut writer, &mut fifth);
    assert_eq!(fifth.data_body.len(), quarter, "no room: inline");
    let mut first = held.remove(0);
    take_body(&mut first, Some(&segment), Ring::Requests, true).unwrap();
    let mut fourth = message(vec![3; quarter], 9);
    place(&mut writer, &mut fourth);
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
        place(&mut writer, &mut m);
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
    assert!(place(&mut writer, &mut m), "placed once the ring is empty");
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

#[test]
fn bodies_a_reader_keeps_are_gone_around_not_waited_behind() {
    let segment = Segment::create().unwrap();
    let mut writer = RingWriter::new(Arc::clone(&segment), Ring::Answers);
    // bodies of 1 MiB, over four laps of the ring; the reader keeps one in
    // eight in place (as a query keeps answers) and drops the rest
    let size = 1 << 20;
    let mut kept = Vec::new();
    for seq in 0..256u64 {
        let mut m = message(vec![(seq % 251) as u8; size], seq);
        assert!(place(&mut writer, &mut m), "body {seq} went inline");
        take_body(&mut m, Some(&segment), Ring::Answers, false).unwrap();
        if seq % 8 == 0 {
            kept.push((seq, m));
        }
    }
    // no body was written over one kept
    for (seq, m) in &kept {
        assert!(
            m.data_body.iter().all(|&b| b == (seq % 251) as u8),
            "kept body {seq} was overwritten"
        );
    }
    assert_eq!(writer.placed(), kept.len());
    drop(kept);
    assert_eq!(writer.placed(), 0);
}

#[test]
fn a_reader_holding_half_a_ring_copies_what_comes_next() {
    let segment = Segment::create().unwrap();
    let mut writer = RingWriter::new(Arc::clone(&segment), Ring::Answers);
    let mut read = |seq: u64| {
        let mut m = message(vec![7; MIN_PLACED], seq);
        assert!(place(&mut writer, &mut m));
        take_body(&mut m, Some(&segment), Ring::Answers, false).unwrap();
        m
    };
    let mut held: Vec<FlightData> = (0..HELD_IN_PLACE as u64).map(&mut read).collect();
    assert!(segment.crowded(Ring::Answers));
    // copied out: its slot is released at once, the held ones stay held
    let copied = read(HELD_IN_PLACE as u64);
    assert_eq!(copied.data_body.as_ref(), vec![7; MIN_PLACED].as_slice());
    assert_eq!(writer.placed(), HELD_IN_PLACE);
    held.pop();
    assert!(
        !segment.crowded(Ring::Answers),
        "one dropped: in place again"
    );
    assert_eq!(writer.placed(), HELD_IN_PLACE - 1);
}
