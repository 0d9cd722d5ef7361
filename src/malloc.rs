//! glibc's malloc, set for a process that moves Arrow batches between threads.
//!
//! glibc's defaults return memory to the kernel eagerly: a block of at
//! least 128 KiB (the starting, dynamic mmap threshold) gets a mapping of
//! its own that is unmapped on free, and free memory above 128 KiB at the
//! top of an arena is trimmed. Arrow buffers of one request (8192 short
//! strings are about 100-130 KB) straddle those sizes, and an instance's
//! evaluation threads allocate results that the query's threads free, so
//! with the defaults every request maps, faults in and unmaps fresh pages.
//! [`tune`] fixes both thresholds so freed pages stay in the arenas for the
//! next request. The `rpcop` binary (shell and `rpcop serve`) calls it at
//! start; a program that embeds rpcop may call it too, or use an allocator
//! of its own. It keeps `RLIMIT_DATA` (a service's `memory` option) exact,
//! which an allocator that reserves address space up front would not.
//!
//! Measured with `cargo bench --bench compare` (cheap function, `upper` on
//! 4M rows through one instance vs in-process): rpcop/in-process ratio
//! 1.24-1.57 with the defaults, 0.88-0.95 tuned (five runs each).

/// Blocks up to this size come from an arena, not a mapping of their own
/// (the largest value glibc's dynamic threshold would reach by itself).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 * 1024 * 1024;
/// Free memory at the top of an arena kept before it is given back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 * 1024 * 1024;

/// Sets glibc's mmap and trim thresholds (see the module documentation).
/// Returns whether both were set; a no-op returning `false` elsewhere than
/// Linux with glibc.
pub fn tune() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; any value is
        // valid for these two.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tuning_is_accepted_on_glibc() {
        assert_eq!(
            super::tune(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
