//! The protocol's names and limits, as constants.

/// The protocol version an instance reports for the `protocol_version` action.
pub const PROTOCOL_VERSION: u32 = 1;

/// `DoAction` type: is the instance ready? Answers `ok`.
pub const ACTION_HEALTH: &str = "health";
/// `DoAction` type: stop taking new streams; streams already open are served.
pub const ACTION_DRAIN: &str = "drain";
/// `DoAction` type: the instance's counters as JSON ([`InstanceStats`](super::InstanceStats)).
pub const ACTION_STATS: &str = "stats";
/// `DoAction` type: the protocol version, as decimal text.
pub const ACTION_PROTOCOL_VERSION: &str = "protocol_version";

/// Field metadata key marking a constant argument column.
pub const SCALAR_ARGUMENT_KEY: &str = "rpcop.scalar";

/// Schema metadata key prefix of a caller's session option: the rest of
/// the key is a DataFusion option's key (`datafusion.execution.time_zone`).
pub const SESSION_OPTION_PREFIX: &str = "rpcop.session.";

/// Field metadata key of a column sent as one dictionary that was a
/// dictionary of dictionaries (which Arrow IPC cannot carry): its type
/// before, as text, which the receiver casts it back to.
pub const ORIGINAL_TYPE_KEY: &str = "rpcop.original_type";

/// Status metadata key naming the sequence number of the request an error
/// concerns.
pub const SEQUENCE_STATUS_KEY: &str = "x-rpcop-seq";

/// Call metadata by which a caller says it half-closes an exchange when the
/// instance sends [`ENDING`](super::ENDING): an instance may then read its
/// requests ahead on another thread (the Python kit does only then).
pub const ENDING_HEADER: &str = "x-rpcop-ending";

/// Call metadata by which a caller offers a shared-memory segment for the
/// bodies of an exchange (`<pid>:<fd>:<nonce>`), and response metadata by
/// which an instance that mapped it accepts (the same value).
pub const SHARED_MEMORY_HEADER: &str = "x-rpcop-shm";

/// gRPC metadata key of the bearer token.
pub const AUTHORIZATION_KEY: &str = "authorization";

/// The largest gRPC message an instance or client accepts or sends, unless
/// told otherwise (the option `max_message_size`, `rpcop serve
/// --max-message-size`).
pub const MAX_MESSAGE_BYTES: usize = crate::options::DEFAULT_MAX_MESSAGE_SIZE;

/// HTTP/2 flow-control window of one exchange, both ways. HTTP/2's default
/// (64 KiB) is smaller than one request of 8192 short strings, so each
/// request waited for a window update mid-message; what is outstanding is
/// bounded by `max_in_flight` anyway.
pub const STREAM_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// HTTP/2 flow-control window of one connection, both ways.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;
/// The largest HTTP/2 frame each side accepts (and so lets its peer send): a
/// request travels in a few frames, not in HTTP/2's default 16 KiB ones. Together with the windows: Flight
/// pass-through of 4M strings (`cargo bench --bench compare`) median
/// 127 ms -> 97 ms over seven runs each.
pub const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// How often both sides ping an idle HTTP/2 connection.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The variable that tells a child instance process the fd of its
/// *lifeline*: a pipe its parent never writes, which reads end-of-file when
/// the parent is gone; the child then exits.
pub const LIFELINE_ENV: &str = "RPCOP_LIFELINE_FD";
/// The fd number of the lifeline in a child instance process.
pub const LIFELINE_FD: i32 = 3;
/// The fd number of the token in a child instance process; it reads it as
/// [`TOKEN_PATH`].
pub const TOKEN_FD: i32 = 4;
/// The path a child instance process reads its token from (`--token-file`).
pub const TOKEN_PATH: &str = "/dev/fd/4";
