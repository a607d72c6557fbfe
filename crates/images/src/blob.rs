//! Writing blobs into the store: [`BlobWriter`] hashes while writing to a temp file in the
//! blob directory, then fsyncs and renames it to `blobs/sha256/<hex>` only if the content matches
//! the expected digest and size. A file at a blob path is therefore always complete and verified.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::digest::{hex, parse_sha256};
use crate::error::{io_err, Error, Result};
use crate::store::Lease;

/// Prefix of temp files and dirs in the store; the garbage collector removes stale ones.
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// A blob that is in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// Streams one blob into the store, verifying it on [`commit`](Self::commit).
///
/// Dropping a writer without committing discards the temp file. The writer holds a
/// [`Lease`], so garbage collection does not run while it is open.
pub struct BlobWriter {
    tmp: NamedTempFile,
    dir: PathBuf,
    hasher: Sha256,
    size: u64,
    expected: Option<(String, Option<u64>)>,
    _lease: Lease,
}

impl BlobWriter {
    pub(crate) fn new(
        dir: &Path,
        expected_digest: Option<&str>,
        expected_size: Option<u64>,
        lease: Lease,
    ) -> Result<Self> {
        if let Some(d) = expected_digest {
            parse_sha256(d)?;
        }
        let tmp = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempfile_in(dir)
            .map_err(io_err("create temp file in", dir))?;
        Ok(Self {
            tmp,
            dir: dir.to_path_buf(),
            hasher: Sha256::new(),
            size: 0,
            expected: expected_digest.map(|d| (d.to_string(), expected_size)),
            _lease: lease,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.size
    }

    /// Verifies digest and size, makes the blob durable and moves it into place.
    pub fn commit(mut self) -> Result<BlobInfo> {
        let tmp_path = self.tmp.path().to_path_buf();
        self.tmp
            .as_file_mut()
            .flush()
            .map_err(io_err("write", &tmp_path))?;
        let digest = format!("sha256:{}", hex(&self.hasher.finalize_reset()));
        if let Some((want, want_size)) = &self.expected {
            if *want != digest {
                return Err(Error::DigestMismatch {
                    what: "blob".to_string(),
                    expected: want.clone(),
                    actual: digest,
                });
            }
            if let Some(s) = want_size {
                if *s != self.size {
                    return Err(Error::SizeMismatch {
                        digest,
                        expected: *s,
                        actual: self.size,
                    });
                }
            }
        }
        self.tmp
            .as_file()
            .sync_all()
            .map_err(io_err("fsync", &tmp_path))?;
        let hexpart = digest.trim_start_matches("sha256:").to_string();
        let dest = self.dir.join(&hexpart);
        self.tmp.persist(&dest).map_err(|e| Error::Io {
            op: "rename",
            path: dest.clone(),
            source: e.error,
        })?;
        sync_dir(&self.dir)?;
        Ok(BlobInfo {
            digest,
            size: self.size,
        })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.tmp.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// fsyncs a directory so renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// Writes `bytes` to `path` atomically (temp file in the same dir, fsync, rename, fsync dir).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("path has a parent");
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io_err("create temp file in", dir))?;
    tmp.write_all(bytes)
        .map_err(io_err("write", tmp.path().to_path_buf()))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("fsync", tmp.path().to_path_buf()))?;
    tmp.persist(path).map_err(|e| Error::Io {
        op: "rename",
        path: path.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(dir)
}
