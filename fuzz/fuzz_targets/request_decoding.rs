//! An instance's decoding of an exchange (`DoExchange`): the descriptor,
//! Arrow IPC requests with sequence numbers, cancels. It starts from an
//! exchange rpcop's client sends (a batch of strings, lists, dictionaries,
//! structs, ...) and lets the fuzzer overwrite its bytes, drop or repeat
//! messages, and add messages of its own. Whatever arrives, decoding ends
//! with requests or errors: no panic, no hang.
//!
//! A panic inside Arrow's IPC reader that the instance catches (and answers
//! as an error, as it does in service) is not a crash here: the target
//! prints panics instead of aborting on them, and libFuzzer still aborts on
//! one that escapes.
#![no_main]

use arbitrary::Arbitrary;
use arrow_flight::{FlightData, FlightDescriptor};
use libfuzzer_sys::fuzz_target;

/// Where an edit lands in a message.
#[derive(Arbitrary, Debug)]
enum Part {
    Header,
    Body,
    AppMetadata,
}

/// One byte of one message overwritten.
#[derive(Arbitrary, Debug)]
struct Edit {
    message: u8,
    part: Part,
    at: u16,
    byte: u8,
}

/// A message the fuzzer makes up.
#[derive(Arbitrary, Debug)]
struct Made {
    path: Option<Vec<String>>,
    header: Vec<u8>,
    body: Vec<u8>,
    app_metadata: Vec<u8>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    template: u8,
    /// Messages of the template to keep, by index (all when empty).
    keep: Vec<u8>,
    edits: Vec<Edit>,
    /// Truncations: (message, length) of a header or body.
    cuts: Vec<(u8, bool, u16)>,
    made: Vec<Made>,
}

fn overwrite(bytes: &mut bytes::Bytes, at: u16, byte: u8) {
    if bytes.is_empty() {
        return;
    }
    let mut owned = bytes.to_vec();
    let at = usize::from(at) % owned.len();
    owned[at] = byte;
    *bytes = owned.into();
}

fuzz_target!(
    init: {
        std::panic::set_hook(Box::new(|info| eprintln!("panic (caught or not): {info}")));
    },
    |input: Input| {
    let templates = rpcop::fuzz::templates();
    let template = &templates[usize::from(input.template) % templates.len()];
    let mut messages: Vec<FlightData> = if input.keep.is_empty() {
        template.clone()
    } else {
        input
            .keep
            .iter()
            .map(|i| template[usize::from(*i) % template.len()].clone())
            .collect()
    };
    if !messages.is_empty() {
        let n = messages.len();
        for edit in &input.edits {
            let message = &mut messages[usize::from(edit.message) % n];
            let part = match edit.part {
                Part::Header => &mut message.data_header,
                Part::Body => &mut message.data_body,
                Part::AppMetadata => &mut message.app_metadata,
            };
            overwrite(part, edit.at, edit.byte);
        }
        for &(message, header, length) in &input.cuts {
            let message = &mut messages[usize::from(message) % n];
            let part = if header {
                &mut message.data_header
            } else {
                &mut message.data_body
            };
            part.truncate(usize::from(length));
        }
    }
    messages.extend(input.made.into_iter().map(|made| FlightData {
        flight_descriptor: made.path.map(FlightDescriptor::new_path),
        data_header: made.header.into(),
        data_body: made.body.into(),
        app_metadata: made.app_metadata.into(),
    }));
    let _ = rpcop::fuzz::decode_exchange(messages);
    }
);
