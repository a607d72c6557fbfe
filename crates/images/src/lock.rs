//! Advisory file locks (`flock`) that make the store safe across threads and processes.
//!
//! Every acquisition opens the lock file anew, so two threads of one process contend exactly as
//! two processes do. Lock files are never deleted (deleting a lock file others wait on breaks
//! flock), which is why layer locks are striped over a fixed set of files.

use std::fs::{File, OpenOptions};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

/// A held lock; released on drop.
#[derive(Debug)]
pub(crate) struct FileLock {
    _flock: Flock<File>,
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(crate::error::io_err("open lock file", path))
}

fn acquire(path: &Path, arg: FlockArg) -> Result<Option<FileLock>> {
    let mut file = open(path)?;
    loop {
        match Flock::lock(file, arg) {
            Ok(flock) => return Ok(Some(FileLock { _flock: flock })),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, Errno::EWOULDBLOCK)) if arg == FlockArg::LockExclusiveNonblock => {
                return Ok(None)
            }
            Err((_, errno)) => {
                return Err(Error::Io {
                    op: "lock",
                    path: path.to_path_buf(),
                    source: std::io::Error::from(errno),
                })
            }
        }
    }
}

/// Blocks until an exclusive lock on `path` is held.
pub(crate) fn exclusive(path: &Path) -> Result<FileLock> {
    acquire(path, FlockArg::LockExclusive).map(|l| l.expect("blocking lock"))
}

/// Blocks until a shared lock on `path` is held.
pub(crate) fn shared(path: &Path) -> Result<FileLock> {
    acquire(path, FlockArg::LockShared).map(|l| l.expect("blocking lock"))
}

/// An exclusive lock if nobody holds one now.
pub(crate) fn try_exclusive(path: &Path) -> Result<Option<FileLock>> {
    acquire(path, FlockArg::LockExclusiveNonblock)
}
