//! The wire protocol between callers and service instances (a public
//! contract; `docs/protocol.md` describes it in full, for implementers in
//! other languages).
//!
//! Requests travel over Arrow Flight `DoExchange`:
//!
//! - the first message carries a PATH descriptor naming the function
//!   ([`function_descriptor`]);
//! - each argument batch carries its request sequence number in
//!   `app_metadata`, a u64 in 8 bytes little-endian ([`encode_sequence`]);
//!   each result batch (one column, the request's row count) carries the
//!   same number back; a message of only `app_metadata` [`encode_cancel`]
//!   cancels a request the caller gave up on;
//! - an argument field whose metadata has [`SCALAR_ARGUMENT_KEY`] = `"true"`
//!   is a constant ([`scalar_argument`]);
//! - the caller's session options that differ from DataFusion's defaults
//!   travel in the argument schema's metadata ([`session_metadata`]);
//! - between a caller and an instance on one host, message bodies may go
//!   through shared memory instead ([`SHARED_MEMORY_HEADER`]; the module
//!   `shared_memory` says how);
//! - errors are Flight statuses; one that concerns a single request names
//!   its sequence number in the status metadata [`SEQUENCE_STATUS_KEY`];
//! - `ListFlights`/`GetFlightInfo` describe a function in the Arrow Flight
//!   UDF convention ([`function_info`]);
//! - every call carries `authorization: Bearer <token>` ([`bearer`]), over
//!   TLS for an `https://` instance ([`ServerTls`] on the instance's side);
//! - `DoAction` answers [`ACTION_HEALTH`], [`ACTION_DRAIN`],
//!   [`ACTION_STATS`] (an [`InstanceStats`] as JSON) and
//!   [`ACTION_PROTOCOL_VERSION`];
//! - a session's registry answers [`ACTION_REGISTER`], [`ACTION_RENEW`] and
//!   [`ACTION_LEAVE`], by which instances on other hosts join a service
//!   (`registration`).
//!
//! Flight UDF servers of other protocols (RisingWave's `arrow-udf`,
//! `databend-udf`) are probed by what each answers (`probe`), and described
//! the same way, Databend's with [`DATABEND_INPUT_COUNT_KEY`].
//!
//! [`BatchEncoder`] turns batches into `FlightData` messages, each with its
//! own `app_metadata`; a dictionary of dictionaries, which Arrow IPC cannot
//! carry, travels as one dictionary of the innermost values.

mod address;
mod arguments;
mod auth;
mod connection;
mod constants;
mod descriptor;
mod dictionaries;
mod encoder;
mod message;
mod probe;
mod registration;
mod sequence;
mod session;
mod shared_memory;
mod stats;
mod tls;

pub use address::{Bind, UNIX_PREFIX};
pub use arguments::{is_scalar_argument, scalar_argument};
pub(crate) use auth::{BearerToken, Secret, check_token};
pub use auth::{MAX_TOKEN_FILE_BYTES, bearer, read_token_file};
pub(crate) use connection::{
    Access, FlightClient, NoAnswer, action, check_endpoint, connect, instance_stats, stats_of,
    stats_within, try_action,
};
pub use constants::*;
pub use descriptor::{
    DATABEND_INPUT_COUNT_KEY, FunctionSignature, function_descriptor, function_info, function_of,
    signature_of,
};
pub(crate) use dictionaries::received;
pub use encoder::BatchEncoder;
pub(crate) use message::message_of;
pub use probe::{ARROW_UDF_PROTOCOL_VERSION, DATABEND_HEALTH_FUNCTION};
pub(crate) use probe::{ProbeFailure, probe};
pub(crate) use registration::registry_action;
pub use registration::{
    ACTION_LEAVE, ACTION_REGISTER, ACTION_RENEW, Admission, Registration, Tenancy,
};
pub use sequence::{
    CANCEL_PREFIX, ENDING, decode_cancel, decode_sequence, encode_cancel, encode_sequence,
};
pub(crate) use sequence::{sequence_of, with_sequence};
pub use session::{has_session_options, session_metadata, session_options};
pub use shared_memory::{HELD_IN_PLACE, MIN_PLACED, PLACEMENT_PREFIX, RING_BYTES, SLOTS};
pub(crate) use shared_memory::{Ring, RingWriter, Segment, take_body};
pub use stats::InstanceStats;
pub use tls::ServerTls;
