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
