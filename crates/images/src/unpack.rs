//! Applying layer tar streams to directories.
//!
//! This module owns everything that touches layer content: decompression (gzip, zstd or none,
//! detected from the magic bytes), verification of the blob digest and of the diff ID while the
//! stream is read, tar safety (no entry lands outside the target: `..` components are rejected,
//! absolute paths are taken relative to the target, nothing is written through a symlink), and
//! the two ways whiteouts are handled:
//!
//! - [`Mode::Overlay`]: the target holds this layer only, in overlayfs format: `.wh.<name>` becomes
//!   a 0/0 character device `<name>`, `.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr
//!   on its directory.
//! - [`Mode::Apply`]: the target is a flattened rootfs holding the layers below; `.wh.<name>`
//!   deletes `<name>`, `.wh..wh..opq` deletes what lower layers put in its directory.
//!
//! Verification happens at the end of the stream: on any error the caller discards the target.
//!
//! Layers are untrusted input, so [`UnpackLimits`] bound what one layer may cost: the bytes of
//! uncompressed tar (decompression bombs), the number of entries, and the bytes of extension
//! headers (PAX records, GNU long names) before one entry, which the tar reader holds in memory;
//! and what all the layers of one image may cost together (bytes, entries): each layer is
//! bounded by what the layers below it left.
//! Device nodes are created as containerd does: as root they are made, and where `mknod` is not
//! permitted (a user namespace, no `CAP_MKNOD`) they are skipped with a warning.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tar::EntryType;

use crate::digest::{copy_with, HashingReader, COPY_BUF_SIZE};
use crate::error::{Error, Result};

/// The prefix of whiteout files in layer tars.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of the opaque-directory marker in layer tars.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to make a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How whiteouts are represented in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One layer per directory, overlayfs whiteouts.
    Overlay,
    /// Layers applied on top of each other in one directory.
    Apply,
}

/// Compression of a layer blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Detects the compression from the first bytes of a blob.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The compression a layer media type announces.
    pub fn from_media_type(media_type: &str) -> Self {
        if media_type.ends_with("gzip") {
            Self::Gzip
        } else if media_type.ends_with("zstd") {
            Self::Zstd
        } else {
            Self::None
        }
    }

    /// The OCI layer media type of this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Self::None => "application/vnd.oci.image.layer.v1.tar",
            Self::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Self::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Bounds on what unpacking one layer, and all the layers of one image, may cost; exceeding
/// one fails the layer with [`Error::LimitExceeded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes of uncompressed tar per layer (decompression bombs).
    pub max_layer_size: u64,
    /// Tar entries per layer.
    pub max_entries: u64,
    /// Bytes of headers before one entry: its header blocks plus PAX records and GNU long
    /// names, which are read into memory.
    pub max_header_size: u64,
    /// Bytes of uncompressed tar of all the layers of one image (many layers each under
    /// `max_layer_size`).
    pub max_image_size: u64,
    /// Tar entries of all the layers of one image.
    pub max_image_entries: u64,
}

impl UnpackLimits {
    /// 64 GiB of tar per layer.
    pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;
    /// One million entries per layer.
    pub const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;
    /// 1 MiB of headers per entry.
    pub const DEFAULT_MAX_HEADER_SIZE: u64 = 1 << 20;
    /// 128 GiB of tar per image.
    pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 128 << 30;
    /// Four million entries per image.
    pub const DEFAULT_MAX_IMAGE_ENTRIES: u64 = 4_000_000;
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_layer_size: Self::DEFAULT_MAX_LAYER_SIZE,
            max_entries: Self::DEFAULT_MAX_ENTRIES,
            max_header_size: Self::DEFAULT_MAX_HEADER_SIZE,
            max_image_size: Self::DEFAULT_MAX_IMAGE_SIZE,
            max_image_entries: Self::DEFAULT_MAX_IMAGE_ENTRIES,
        }
    }
}

/// What layers expand to: uncompressed tar bytes and tar entries (of one layer, or of the
/// layers of an image below one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerUsage {
    pub size: u64,
    pub entries: u64,
}

impl LayerUsage {
    /// The usage of these layers and `other` together.
    pub fn plus(self, other: LayerUsage) -> LayerUsage {
        LayerUsage {
            size: self.size.saturating_add(other.size),
            entries: self.entries.saturating_add(other.entries),
        }
    }
}

/// The bound that applies to one layer: the layer's own limit, or what the image limit leaves
/// after the layers below when that is less. `(max, limit name, limit value)`.
pub(crate) fn bound(
    layer_max: u64,
    image_max: u64,
    below: u64,
    names: (&'static str, &'static str),
) -> (u64, &'static str, u64) {
    let image_left = image_max.saturating_sub(below);
    if image_left < layer_max {
        (image_left, names.1, image_max)
    } else {
        (layer_max, names.0, layer_max)
    }
}

impl UnpackLimits {
    /// Whether a layer that expanded to `usage` is within these limits above layers that
    /// expanded to `below`: whether unpacking it alone, after them, succeeds as far as the limits
    /// go.
    pub(crate) fn admits(&self, below: LayerUsage, usage: LayerUsage) -> bool {
        let names = ("", "");
        usage.size <= bound(self.max_layer_size, self.max_image_size, below.size, names).0
            && usage.entries
                <= bound(
                    self.max_entries,
                    self.max_image_entries,
                    below.entries,
                    names,
                )
                .0
    }
}

/// What one layer has expanded to so far while the layers of its image are unpacked in
/// parallel (its final usage once it is done; where it stopped if it failed).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    size: AtomicU64,
    entries: AtomicU64,
    /// The layer was stopped by the image-wide check of [`Live`].
    over_image: AtomicBool,
}

impl Progress {
    /// A layer that is done (already unpacked).
    pub(crate) fn set(&self, usage: LayerUsage) {
        self.size.store(usage.size, Ordering::Relaxed);
        self.entries.store(usage.entries, Ordering::Relaxed);
    }

    /// What the layer expanded to (so far).
    pub(crate) fn usage(&self) -> LayerUsage {
        LayerUsage {
            size: self.size.load(Ordering::Relaxed),
            entries: self.entries.load(Ordering::Relaxed),
        }
    }

    /// Whether the layer was stopped by the image-wide check.
    pub(crate) fn over_image(&self) -> bool {
        self.over_image.load(Ordering::Relaxed)
    }
}

/// The image limits of a layer unpacked at the same time as the layers below it: those count
/// with what they have expanded to so far. That only grows, so a layer past what it leaves is
/// past what the layers below will leave it: the bytes of all the image's layers in flight
/// never exceed the image limits, as when layers are unpacked one by one. Which layer and entry
/// an error names may differ from one-by-one unpacking: the caller decides, layer by layer, with
/// the final usages (see `ImageStore::unpack_layers`).
pub(crate) struct Live<'a> {
    /// The image's layers below this one.
    pub below: &'a [Progress],
    /// This layer.
    pub me: &'a Progress,
}

impl Live<'_> {
    fn below(&self) -> LayerUsage {
        self.below
            .iter()
            .fold(LayerUsage::default(), |acc, p| acc.plus(p.usage()))
    }
}

/// Which limit a guarded read exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exceeded {
    LayerSize,
    HeaderSize,
    /// The image size, as [`Live`] sees it.
    Image,
}

/// The reader between the decompressor and the tar parser: counts the uncompressed bytes
/// against the layer size limit, and while a header is being read (between two entries)
/// against the header budget.
struct Guard<'a, R> {
    inner: R,
    read: u64,
    max: u64,
    /// With layers unpacked in parallel: the image-wide check, and the image size limit.
    live: Option<(&'a Live<'a>, u64)>,
    /// Bytes the tar reader may still read before the next entry is returned; `None` while
    /// an entry's data is read.
    header_budget: Rc<Cell<Option<u64>>>,
    exceeded: Rc<Cell<Option<Exceeded>>>,
}

impl<R: Read> Read for Guard<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut want = buf.len() as u64;
        if let Some(b) = self.header_budget.get() {
            if b == 0 {
                self.exceeded.set(Some(Exceeded::HeaderSize));
                return Err(io::Error::other("tar header too large"));
            }
            want = want.min(b);
        }
        let left = self.max - self.read;
        if left == 0 {
            // One probe byte: a stream ending exactly at the limit is fine.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(Some(Exceeded::LayerSize));
                    Err(io::Error::other("layer too large"))
                }
            };
        }
        want = want.min(left);
        let n = self.inner.read(&mut buf[..want as usize])?;
        self.read += n as u64;
        if let Some(b) = self.header_budget.get() {
            self.header_budget.set(Some(b - n as u64));
        }
        if let Some((live, image_max)) = self.live {
            live.me.size.store(self.read, Ordering::Relaxed);
            if self.read > image_max.saturating_sub(live.below().size) {
                live.me.over_image.store(true, Ordering::Relaxed);
                self.exceeded.set(Some(Exceeded::Image));
                return Err(io::Error::other("image too large"));
            }
        }
        Ok(n)
    }
}

/// A layer blob to apply and what it must hash to.
#[derive(Debug, Clone)]
pub(crate) struct LayerSource<'a> {
    pub path: &'a Path,
    /// Digest of the blob as stored (compressed).
    pub digest: &'a str,
    pub size: u64,
    /// Digest of the uncompressed tar (from the image config).
    pub diff_id: &'a str,
    pub media_type: &'a str,
}

/// Applies one layer blob to `target` (an existing directory), verifying the blob digest, size
/// and diff ID; `below` is what the image's layers below this one expanded to (counted against
/// the image limits). Returns what this layer expanded to. On error `target` is in an
/// unspecified state and must be discarded.
pub(crate) fn apply_layer(
    src: &LayerSource<'_>,
    target: &Path,
    mode: Mode,
    limits: &UnpackLimits,
    below: LayerUsage,
) -> Result<LayerUsage> {
    apply_layer_live(src, target, mode, limits, below, None)
}

/// As [`apply_layer`]; with `live`, the layers below are being unpacked at the same time (and
/// `below` is what is known of them before this one starts): what they expand to is read from
/// `live` as they go, and this layer's progress is published there.
pub(crate) fn apply_layer_live(
    src: &LayerSource<'_>,
    target: &Path,
    mode: Mode,
    limits: &UnpackLimits,
    below: LayerUsage,
    live: Option<&Live<'_>>,
) -> Result<LayerUsage> {
    let (max_size, size_limit, size_value) = bound(
        limits.max_layer_size,
        limits.max_image_size,
        below.size,
        ("layer size", "image size"),
    );
    let (max_entries, entries_limit, entries_value) = bound(
        limits.max_entries,
        limits.max_image_entries,
        below.entries,
        ("entry count", "image entry count"),
    );
    let file = File::open(src.path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::BlobNotFound {
            digest: src.digest.to_string(),
        },
        _ => Error::Io {
            op: "open",
            path: src.path.to_path_buf(),
            source: e,
        },
    })?;
    let unpack_err = |e: io::Error| Error::Unpack {
        layer: src.digest.to_string(),
        path: String::new(),
        message: e.to_string(),
    };
    let mut head = [0u8; 4];
    let head_len = read_head(&file, &mut head).map_err(unpack_err)?;
    let compression = Compression::detect(&head[..head_len]);
    // An uncompressed blob is its own tar stream: hashed once, as the tar stream (its digest
    // and its diff ID are then both checked against that hash).
    let raw = match compression {
        Compression::None => HashingReader::counting(file),
        _ => HashingReader::new(file),
    };
    let mut buf = BufReader::with_capacity(128 * 1024, raw);
    let announced = Compression::from_media_type(src.media_type);
    if compression != announced {
        tracing::debug!(
            layer = src.digest,
            media_type = src.media_type,
            ?compression,
            "layer compression differs from its media type; using the content's"
        );
    }
    let usage;
    let tar_digest;
    {
        let decoder: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut buf),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(&mut buf)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(&mut buf).map_err(unpack_err)?)
            }
        };
        let header_budget = Rc::new(Cell::new(None));
        let exceeded = Rc::new(Cell::new(None));
        let mut archive = tar::Archive::new(Guard {
            inner: HashingReader::new(decoder),
            read: 0,
            max: max_size,
            live: live.map(|l| (l, limits.max_image_size)),
            header_budget: header_budget.clone(),
            exceeded: exceeded.clone(),
        });
        let mut state = State::new(target, src.digest, mode);
        let mut entries = archive.entries().map_err(unpack_err)?;
        let mut count = 0u64;
        let mut last = String::new();
        let limit_err = |what: Exceeded, last: &str| match what {
            Exceeded::LayerSize => Error::LimitExceeded {
                layer: src.digest.to_string(),
                path: last.to_string(),
                limit: size_limit,
                value: size_value,
            },
            Exceeded::HeaderSize => Error::LimitExceeded {
                layer: src.digest.to_string(),
                path: format!("header after {last:?}"),
                limit: "header size",
                value: limits.max_header_size,
            },
            Exceeded::Image => Error::LimitExceeded {
                layer: src.digest.to_string(),
                path: last.to_string(),
                limit: "image size",
                value: limits.max_image_size,
            },
        };
        loop {
            header_budget.set(Some(limits.max_header_size));
            let next = entries.next();
            header_budget.set(None);
            let mut entry = match next {
                None => break,
                Some(Ok(entry)) => entry,
                Some(Err(e)) => {
                    return Err(match exceeded.get() {
                        Some(what) => limit_err(what, &last),
                        None => Error::Unpack {
                            layer: src.digest.to_string(),
                            path: format!("entry after {last:?}"),
                            message: e.to_string(),
                        },
                    })
                }
            };
            count += 1;
            last = entry.path_bytes().escape_ascii().to_string();
            if count > max_entries {
                return Err(Error::LimitExceeded {
                    layer: src.digest.to_string(),
                    path: last,
                    limit: entries_limit,
                    value: entries_value,
                });
            }
            if let Some(live) = live {
                live.me.entries.store(count, Ordering::Relaxed);
                if count
                    > limits
                        .max_image_entries
                        .saturating_sub(live.below().entries)
                {
                    live.me.over_image.store(true, Ordering::Relaxed);
                    return Err(Error::LimitExceeded {
                        layer: src.digest.to_string(),
                        path: last,
                        limit: "image entry count",
                        value: limits.max_image_entries,
                    });
                }
            }
            let applied = state.apply(&mut entry);
            // What the entry's data did not consume is skipped here, outside the header budget.
            let drained = io::copy(&mut entry, &mut io::sink());
            if let Some(what) = exceeded.get() {
                return Err(limit_err(what, &last));
            }
            applied?;
            drained.map_err(|e| state.err(Path::new(&last), e))?;
        }
        state.finish();
        let mut guard = archive.into_inner();
        let drained = io::copy(&mut guard, &mut io::sink());
        if let Some(what) = exceeded.get() {
            return Err(limit_err(what, &last));
        }
        drained.map_err(unpack_err)?;
        usage = LayerUsage {
            size: guard.read,
            entries: count,
        };
        if let Some(live) = live {
            live.me.set(usage);
        }
        let tar_stream = guard.inner;
        let (diff_id, _) = tar_stream.finish();
        tar_digest = diff_id.expect("hashing reader");
        if tar_digest != src.diff_id {
            return Err(Error::DiffIdMismatch {
                layer: src.digest.to_string(),
                expected: src.diff_id.to_string(),
                actual: tar_digest,
            });
        }
    }
    let mut raw = buf.into_inner();
    raw.drain().map_err(unpack_err)?;
    let (digest, size) = raw.finish();
    // Uncompressed, the blob was hashed as the tar stream (which the tar reader read to its end).
    let digest = digest.unwrap_or(tar_digest);
    if digest != src.digest {
        return Err(Error::DigestMismatch {
            what: format!("layer blob {}", src.path.display()),
            expected: src.digest.to_string(),
            actual: digest,
        });
    }
    if size != src.size {
        return Err(Error::SizeMismatch {
            digest: src.digest.to_string(),
            expected: src.size,
            actual: size,
        });
    }
    Ok(usage)
}

/// Reads the first bytes of a file (fewer if it is shorter) without moving its offset.
fn read_head(file: &File, head: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < head.len() {
        match file.read_at(&mut head[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Cleans a tar entry path: `None` for the root itself, an error for `..` components.
fn clean_path(raw: &Path) -> std::result::Result<Option<PathBuf>, &'static str> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err("path has a parent directory component"),
            Component::Prefix(_) => return Err("path has a prefix"),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

fn is_dir(meta: &fs::Metadata) -> bool {
    meta.file_type().is_dir()
}

/// Removes whatever is at `path` (a directory recursively), never following a symlink.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if is_dir(&m) => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

struct State<'a> {
    root: &'a Path,
    layer: &'a str,
    mode: Mode,
    /// Paths (relative) this layer wrote, with their ancestors: kept by an opaque marker.
    written: HashSet<PathBuf>,
    /// Directories whose mtime is set once all entries are in.
    dir_times: Vec<(PathBuf, SystemTime)>,
    /// The buffer file contents are copied through.
    buf: Vec<u8>,
}

impl<'a> State<'a> {
    fn new(root: &'a Path, layer: &'a str, mode: Mode) -> Self {
        Self {
            root,
            layer,
            mode,
            written: HashSet::new(),
            dir_times: Vec::new(),
            buf: vec![0u8; COPY_BUF_SIZE],
        }
    }

    fn err(&self, path: &Path, message: impl std::fmt::Display) -> Error {
        Error::Unpack {
            layer: self.layer.to_string(),
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }

    fn unsafe_path(&self, path: &Path, reason: &'static str) -> Error {
        Error::UnsafePath {
            layer: self.layer.to_string(),
            path: path.display().to_string(),
            reason,
        }
    }

    /// Makes every ancestor of `rel` a real directory inside the root (creating missing ones),
    /// refusing symlinks so that nothing is ever written through one.
    fn ensure_parents(&mut self, rel: &Path) -> Result<()> {
        let mut cur = self.root.to_path_buf();
        let mut cur_rel = PathBuf::new();
        let parent = rel.parent().unwrap_or(Path::new(""));
        for comp in parent.components() {
            cur.push(comp);
            cur_rel.push(comp);
            match fs::symlink_metadata(&cur) {
                Ok(m) if is_dir(&m) => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_path(rel, "a parent directory is a symlink"))
                }
                Ok(_) => {
                    fs::remove_file(&cur).map_err(|e| self.err(&cur_rel, e))?;
                    fs::create_dir(&cur).map_err(|e| self.err(&cur_rel, e))?;
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                        .map_err(|e| self.err(&cur_rel, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&cur).map_err(|e| self.err(&cur_rel, e))?;
                    // Implicit directories are 0755 whatever the umask.
                    fs::set_permissions(&cur, fs::Permissions::from_mode(0o755))
                        .map_err(|e| self.err(&cur_rel, e))?;
                }
                Err(e) => return Err(self.err(&cur_rel, e)),
            }
            self.written.insert(cur_rel.clone());
        }
        Ok(())
    }

    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry
            .path()
            .map_err(|e| self.err(Path::new("?"), e))?
            .into_owned();
        let rel = match clean_path(&raw) {
            Ok(Some(rel)) => rel,
            Ok(None) => {
                // The root directory itself: only its metadata applies.
                if entry.header().entry_type() == EntryType::Directory {
                    let root = self.root.to_path_buf();
                    self.set_metadata(entry, &root, &raw, EntryType::Directory)?;
                }
                return Ok(());
            }
            Err(reason) => return Err(self.unsafe_path(&raw, reason)),
        };
        let name = rel.file_name().unwrap_or_default().as_bytes().to_vec();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == OPAQUE_MARKER.as_bytes() {
            return self.opaque(&parent, &rel);
        }
        if name.starts_with(b".wh..wh.") {
            return Ok(()); // aufs metadata (.wh..wh.plnk and friends)
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.unsafe_path(&rel, "invalid whiteout name"));
            }
            return self.whiteout(&parent.join(OsStr::from_bytes(hidden)));
        }
        self.ensure_parents(&rel)?;
        self.written.insert(rel.clone());
        let full = self.root.join(&rel);
        let kind = entry.header().entry_type();
        let existing = match fs::symlink_metadata(&full) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.err(&rel, e)),
        };
        match (kind, &existing) {
            (EntryType::Directory, Some(m)) if is_dir(m) => {}
            (_, Some(_)) => remove_any(&full).map_err(|e| self.err(&rel, e))?,
            (_, None) => {}
        }
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                    .open(&full)
                    .map_err(|e| self.err(&rel, e))?;
                copy_with(entry, &mut f, &mut self.buf).map_err(|e| self.err(&rel, e))?;
            }
            EntryType::Directory => {
                if !existing.as_ref().is_some_and(is_dir) {
                    fs::create_dir(&full).map_err(|e| self.err(&rel, e))?;
                }
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.err(&rel, e))?
                    .ok_or_else(|| self.err(&rel, "symlink without a target"))?;
                std::os::unix::fs::symlink(&target, &full).map_err(|e| self.err(&rel, e))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.err(&rel, e))?
                    .ok_or_else(|| self.err(&rel, "hard link without a target"))?
                    .into_owned();
                let target = match clean_path(&target) {
                    Ok(Some(t)) => t,
                    Ok(None) => return Err(self.unsafe_path(&rel, "hard link to the root")),
                    Err(reason) => return Err(self.unsafe_path(&rel, reason)),
                };
                self.check_no_symlink_parents(&rel, &target)?;
                let target_full = self.root.join(&target);
                match fs::symlink_metadata(&target_full) {
                    Ok(m) if !is_dir(&m) => {}
                    Ok(_) => return Err(self.err(&rel, "hard link to a directory")),
                    Err(e) => return Err(self.err(&rel, format!("hard link target: {e}"))),
                }
                fs::hard_link(&target_full, &full).map_err(|e| self.err(&rel, e))?;
                return Ok(()); // shares the target's inode and metadata
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                use nix::sys::stat::{makedev, mknod, Mode as NixMode, SFlag};
                let perm = NixMode::from_bits_truncate(mode);
                let res = if kind == EntryType::Fifo {
                    nix::unistd::mkfifo(&full, perm)
                } else {
                    let h = entry.header();
                    let major = h.device_major().ok().flatten().unwrap_or(0);
                    let minor = h.device_minor().ok().flatten().unwrap_or(0);
                    let sflag = if kind == EntryType::Char {
                        SFlag::S_IFCHR
                    } else {
                        SFlag::S_IFBLK
                    };
                    mknod(&full, sflag, perm, makedev(major.into(), minor.into()))
                };
                match res {
                    Ok(()) => {}
                    Err(nix::errno::Errno::EPERM) => {
                        tracing::warn!(layer = self.layer, path = %rel.display(), "device node not permitted; skipped");
                        return Ok(());
                    }
                    Err(e) => return Err(self.err(&rel, e)),
                }
            }
            other => {
                tracing::debug!(layer = self.layer, path = %rel.display(), kind = ?other, "tar entry type ignored");
                return Ok(());
            }
        }
        self.set_metadata(entry, &full, &rel, kind)
    }

    /// Refuses a path whose ancestors include a symlink (hard link targets: `link()` would
    /// follow it); the error names `entry`.
    fn check_no_symlink_parents(&self, entry: &Path, rel: &Path) -> Result<()> {
        let mut cur = self.root.to_path_buf();
        for comp in rel.parent().unwrap_or(Path::new("")).components() {
            cur.push(comp);
            if let Ok(m) = fs::symlink_metadata(&cur) {
                if m.file_type().is_symlink() {
                    return Err(self.unsafe_path(entry, "a parent directory is a symlink"));
                }
            }
        }
        Ok(())
    }

    fn set_metadata<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        full: &Path,
        rel: &Path,
        kind: EntryType,
    ) -> Result<()> {
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        let mtime = header
            .mtime()
            .ok()
            .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        // Ownership first: chown clears set-id bits that chmod then restores.
        if let Err(e) = std::os::unix::fs::lchown(full, Some(uid), Some(gid)) {
            if e.kind() != io::ErrorKind::PermissionDenied {
                return Err(self.err(rel, e));
            }
        }
        if kind != EntryType::Symlink {
            fs::set_permissions(full, fs::Permissions::from_mode(mode))
                .map_err(|e| self.err(rel, e))?;
        }
        let mut xattrs = Vec::new();
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                if let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
        for (name, value) in xattrs {
            if name.starts_with(b"trusted.overlay.") {
                continue; // only whiteout conversion may set overlay attributes
            }
            if let Err(e) = xattr::set(full, OsStr::from_bytes(&name), &value) {
                tracing::debug!(layer = self.layer, path = %rel.display(), error = %e, "xattr not set");
            }
        }
        match (kind, mtime) {
            (EntryType::Directory, Some(t)) => self.dir_times.push((full.to_path_buf(), t)),
            (EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse, Some(t)) => {
                if let Ok(f) = File::options().write(true).open(full) {
                    let _ = f.set_modified(t);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path) -> Result<()> {
        if self.mode == Mode::Apply {
            // Nothing to delete under a directory that does not exist; create none.
            self.check_no_symlink_parents(rel, rel)?;
            let parent = self.root.join(rel.parent().unwrap_or(Path::new("")));
            if !fs::symlink_metadata(&parent).is_ok_and(|m| is_dir(&m)) {
                return Ok(());
            }
        }
        self.ensure_parents(rel)?;
        let full = self.root.join(rel);
        remove_any(&full).map_err(|e| self.err(rel, e))?;
        if self.mode == Mode::Overlay {
            use nix::sys::stat::{makedev, mknod, Mode as NixMode, SFlag};
            mknod(&full, SFlag::S_IFCHR, NixMode::empty(), makedev(0, 0))
                .map_err(|e| self.err(rel, format!("creating overlay whiteout: {e}")))?;
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &Path, marker: &Path) -> Result<()> {
        if !dir.as_os_str().is_empty() {
            // ensure_parents of a child makes `dir` itself a real directory.
            self.ensure_parents(&dir.join("x")).map_err(|e| match e {
                Error::UnsafePath { reason, .. } => self.unsafe_path(marker, reason),
                other => other,
            })?;
        }
        let full = self.root.join(dir);
        match self.mode {
            Mode::Overlay => xattr::set(&full, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(|e| self.err(marker, format!("setting {OVERLAY_OPAQUE_XATTR}: {e}"))),
            Mode::Apply => {
                let children = fs::read_dir(&full).map_err(|e| self.err(dir, e))?;
                for child in children {
                    let child = child.map_err(|e| self.err(dir, e))?;
                    let rel = dir.join(child.file_name());
                    if !self.written.contains(&rel) {
                        remove_any(&child.path()).map_err(|e| self.err(&rel, e))?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sets directory mtimes last, deepest first, since adding entries changes them.
    fn finish(&mut self) {
        for (dir, t) in self.dir_times.drain(..).rev() {
            if let Ok(f) = File::open(&dir) {
                let _ = f.set_modified(t);
            }
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn bound_of_one_layer_table() {
        let names = ("layer size", "image size");
        // (layer max, image max, below) -> (max, limit, value)
        for (layer, image, below, want) in [
            // The image limit is far: the layer's own applies.
            (100, 1000, 0, (100, "layer size", 100)),
            (100, 1000, 900, (100, "layer size", 100)),
            // The image leaves less than the layer limit: what it leaves, named as the image's.
            (100, 1000, 901, (99, "image size", 1000)),
            (100, 1000, 1000, (0, "image size", 1000)),
            // Below already over (layers counted before a limit was lowered): nothing left.
            (100, 1000, 5000, (0, "image size", 1000)),
            // An image limit under the layer limit applies from the first layer.
            (100, 50, 0, (50, "image size", 50)),
            // No limits at all.
            (u64::MAX, u64::MAX, 0, (u64::MAX, "layer size", u64::MAX)),
        ] {
            assert_eq!(
                bound(layer, image, below, names),
                want,
                "layer {layer}, image {image}, below {below}"
            );
        }
    }

    #[test]
    fn usage_adds_up_without_overflow() {
        let a = LayerUsage {
            size: 10,
            entries: 2,
        };
        let b = LayerUsage {
            size: u64::MAX,
            entries: 3,
        };
        assert_eq!(
            a.plus(a),
            LayerUsage {
                size: 20,
                entries: 4
            }
        );
        assert_eq!(a.plus(b).size, u64::MAX);
        assert_eq!(a.plus(b).entries, 5);
    }
}
