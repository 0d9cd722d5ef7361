//! Where candle computes: on the encoder's own pool only.
//!
//! A [`SentenceEncoder`](super::SentenceEncoder) runs its forward pass on a
//! rayon pool of its own `threads`, so that instances sharing a process
//! (`isolation = 'thread'`) each keep their threads. candle also has one
//! pool per process for elementwise ops on large tensors (65,536 elements
//! or more), sized by `CANDLE_NUM_THREADS` (default: the cores), whose
//! workers spin between ops and whose calls take one lock. Instances in one
//! process queue on that lock, and its spinning workers take cores from
//! the encoders' own threads. With it off, those ops run on the thread that
//! calls them, an encoder pool's.
//!
//! Measured with `RPCOP_BENCH_ONLY=model cargo bench --bench compare`
//! (2,089 sentences, 2 cores, median of 5): with candle's pool, in-process
//! 13,808 ms, 2 thread instances 16,169 ms (1.17×), 2 process instances
//! 14,813 ms (1.07×); without it, 11,927 ms, 11,035 ms (0.93×) and
//! 11,371 ms (0.95×). Every path is faster without it, in-process too.
//!
//! [`use_encoder_threads_only`] turns it off for the process. The `rpcop`
//! binary calls it at start (so `rpcop serve` instances do too); a program
//! that embeds rpcop's model functions may call it, or set the variable.

/// The variable candle sizes its process-wide pool by.
pub const CANDLE_THREADS_VAR: &str = "CANDLE_NUM_THREADS";

/// Turns candle's process-wide pool off (`CANDLE_NUM_THREADS=1`: no
/// workers, each op on its caller's thread) unless the variable is set
/// already, which is then left as the user set it. Returns whether it set
/// the variable.
///
/// # Safety
///
/// It sets an environment variable: call it before the process starts
/// any other thread (at the top of `main`), as [`std::env::set_var`]
/// requires.
pub unsafe fn use_encoder_threads_only() -> bool {
    if std::env::var_os(CANDLE_THREADS_VAR).is_some() {
        return false;
    }
    // SAFETY: the caller guarantees no other thread runs yet.
    unsafe { std::env::set_var(CANDLE_THREADS_VAR, "1") };
    true
}
