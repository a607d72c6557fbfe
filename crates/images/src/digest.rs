//! Content digests: sha256 helpers, digest validation, hashing readers and OCI chain IDs.
//!
//! Only `sha256` is accepted anywhere in the store; every digest string this crate hands out has
//! the form `sha256:<64 lowercase hex>`.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// `sha256:<hex>` of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Whether `s` is 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Validates a `sha256:<hex>` digest and returns its hex part.
pub fn parse_sha256(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if is_sha256_hex(h) => Ok(h),
        _ => Err(Error::InvalidDigest(digest.to_string())),
    }
}

/// OCI chain IDs of a list of diff IDs (lowest layer first):
/// `chainID(L0) = diffID(L0)`, `chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        parse_sha256(d)?;
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => sha256_digest(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    Ok(out)
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    /// `None` for a reader that only counts ([`HashingReader::counting`]).
    hasher: Option<Sha256>,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Some(Sha256::new()),
            count: 0,
        }
    }

    /// A reader that only counts: where the same bytes are hashed elsewhere (an uncompressed
    /// layer is its own tar stream).
    pub(crate) fn counting(inner: R) -> Self {
        Self {
            inner,
            hasher: None,
            count: 0,
        }
    }

    /// Reads the rest of the stream (so the digest covers all of it).
    pub(crate) fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// The digest (`None` if only counting) and size of what was read.
    pub(crate) fn finish(self) -> (Option<String>, u64) {
        (
            self.hasher
                .map(|h| format!("sha256:{}", hex(&h.finalize()))),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// Copies `r` to `w` through `buf` (callers reuse one of 256 KiB: `io::copy`'s 8 KiB makes 32
/// times the write calls for the large files of layers). The buffer is filled before it is
/// written, so that writes are whole pages of the file: a tar reader returns what its buffer
/// holds, and ext4 zeroes the rest of every page a write covers in part (a quarter of the CPU of
/// unpacking a 100 MB binary went there).
pub(crate) fn copy_with<R: Read + ?Sized, W: io::Write + ?Sized>(
    r: &mut R,
    w: &mut W,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..filled])?;
        total += filled as u64;
    }
}

/// The size of the copy buffers of imports and unpacks.
pub(crate) const COPY_BUF_SIZE: usize = 256 << 10;
