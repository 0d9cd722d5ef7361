//! What ties a child instance process to this process, so that none
//! outlives it, and how it gets its token without a file on disk.
//!
//! Each child is started with, set up between `fork` and `exec`:
//! - a process group of its own: a Ctrl-C at the terminal reaches the shell,
//!   which cancels its statement, not the instances;
//! - `PR_SET_PDEATHSIG = SIGTERM`: the kernel signals it when its parent
//!   goes, however it goes (`kill -KILL` included);
//! - the *lifeline*, the read end of a pipe whose write end only this
//!   process holds, as fd `LIFELINE_FD` (`RPCOP_LIFELINE_FD`): when this
//!   process ends the pipe reads end-of-file, and `rpcop serve` exits. This
//!   also covers what the death signal cannot (it fires when the spawning
//!   *thread* ends, and not on other systems);
//! - the token in an anonymous memory file as fd `TOKEN_FD`, read as
//!   `/dev/fd/4`: no token file is ever written, so none can be left behind.
//!
//! A user's command (`command = '...'`) may not watch the lifeline, and the
//! death signal reaches only the process rpcop started (`sh`), not what it
//! starts. So a command's process group also gets a *warden*
//! ([`guard_group`]): a small process forked before `exec`, holding nothing
//! but the lifeline, that signals the whole group (SIGTERM, then SIGKILL
//! 5 s later) when this process ends or when the group's leader does. No
//! process of a command outlives its instance, or rpcop.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use tokio::process::Command;

use crate::error::RpcError;
use crate::wire::{LIFELINE_ENV, LIFELINE_FD, TOKEN_FD};

/// Fds are moved above this number in the parent, so putting the lifeline
/// and the token in place in the child never overwrites one with the other.
const HIGH_FD: RawFd = 10;

/// The token of a region's children, in an anonymous memory file.
#[derive(Debug)]
pub(crate) struct TokenFd(OwnedFd);

impl TokenFd {
    /// `token` in a new memory file (closed on `exec` here; put in place as
    /// `TOKEN_FD` in each child).
    pub(crate) fn new(token: &str) -> Result<Self, RpcError> {
        let name = CString::new("rpcop-token").map_err(std::io::Error::other)?;
        // SAFETY: memfd_create reads a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        let fd = owned(fd)?;
        let mut file = std::fs::File::from(high(fd)?);
        file.write_all(token.as_bytes())?;
        Ok(Self(file.into()))
    }
}

/// The read end of this process's lifeline pipe; the write end stays open,
/// unshared, until the process ends.
fn lifeline() -> Result<RawFd, RpcError> {
    static LIFELINE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();
    if let Some((read, _)) = LIFELINE.get() {
        return Ok(read.as_raw_fd());
    }
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    let (read, write) = (high(owned(fds[0])?)?, high(owned(fds[1])?)?);
    // another thread may have won the race: its pipe is the one kept
    let (read, _) = LIFELINE.get_or_init(|| (read, write));
    Ok(read.as_raw_fd())
}

/// Sets up `command` to start a child tied to this process, reading its
/// token from `TOKEN_PATH`.
pub(crate) fn tie(command: &mut Command, token: &TokenFd) -> Result<(), RpcError> {
    let lifeline = lifeline()?;
    let token = token.0.as_raw_fd();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    command.env(LIFELINE_ENV, LIFELINE_FD.to_string());
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe functions (setpgid, prctl, getppid, dup2,
    // _exit) on fds this process owns and keeps open.
    unsafe {
        command.pre_exec(move || {
            if libc::setpgid(0, 0) != 0
                || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0
                || libc::dup2(lifeline, LIFELINE_FD) < 0
                || libc::dup2(token, TOKEN_FD) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // the parent went before the death signal was armed
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    Ok(())
}

/// How long the warden gives a group between SIGTERM and SIGKILL.
const WARDEN_GRACE_MS: u64 = 5000;

/// Sets up `command` (already [`tie`]d) so that its whole process group
/// ends with it or with this process, and limits its data segment to
/// `memory` bytes (`RLIMIT_DATA`: the heap and private writable mappings).
pub(crate) fn guard_group(command: &mut Command, memory: Option<u64>) {
    // SAFETY: the closure runs in the child between fork and exec, after
    // `tie`'s, and calls only async-signal-safe functions (setrlimit, fork,
    // getpid); the warden's loop below does too.
    unsafe {
        command.pre_exec(move || {
            if let Some(bytes) = memory {
                let limit = libc::rlimit {
                    rlim_cur: bytes,
                    rlim_max: bytes,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &raw const limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let leader = libc::getpid();
            match libc::fork() {
                -1 => Err(std::io::Error::last_os_error()),
                0 => warden(leader),
                _ => Ok(()),
            }
        });
    }
}

/// The warden of the process group of `leader`: waits for this process
/// (the lifeline reads end-of-file) or the leader (the warden's parent
/// changes) to end, then ends the group. Never returns.
///
/// # Safety
/// Runs in a child just forked (one thread): it calls only
/// async-signal-safe functions.
unsafe fn warden(leader: libc::pid_t) -> ! {
    // SAFETY: async-signal-safe calls on fds and signals of this process.
    unsafe {
        // the group's SIGTERM is for the others: the warden sends SIGKILL after
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::signal(signal, libc::SIG_IGN);
        }
        // hold nothing but the lifeline: not the child's stdout and stderr
        // (whose reader waits for every writer), nor this process's fds
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        close_from(LIFELINE_FD + 1);
        loop {
            let mut lifeline = libc::pollfd {
                fd: LIFELINE_FD,
                events: libc::POLLIN,
                revents: 0,
            };
            // nobody writes the lifeline: readable means this process ended
            if libc::poll(&raw mut lifeline, 1, 200) > 0 || libc::getppid() != leader {
                break;
            }
        }
        libc::kill(0, libc::SIGTERM);
        let step = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        for _ in 0..WARDEN_GRACE_MS / 100 {
            libc::nanosleep(&raw const step, std::ptr::null_mut());
        }
        libc::kill(0, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// Closes every fd from `first` on.
///
/// # Safety
/// Only in a child just forked, which owns its fd table.
unsafe fn close_from(first: RawFd) {
    // SAFETY: closing fds of this process; close_range is a plain syscall
    unsafe {
        let first = libc::c_uint::try_from(first).unwrap_or(0);
        if libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) == 0 {
            return;
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let last = if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0 {
            limit.rlim_cur.min(1 << 16)
        } else {
            1024
        };
        for fd in u64::from(first)..last {
            libc::close(RawFd::try_from(fd).unwrap_or(RawFd::MAX));
        }
    }
}

fn owned(fd: RawFd) -> Result<OwnedFd, RpcError> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a fresh fd the call above returned, owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fd`, moved to a number above [`HIGH_FD`] (closed on `exec`); the old
/// number is closed.
fn high(fd: OwnedFd) -> Result<OwnedFd, RpcError> {
    // SAFETY: fcntl duplicates an fd we own.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    drop(fd);
    owned(moved)
}
