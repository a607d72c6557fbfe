//! The image store itself: the on-disk layout, the reference index, committing images, lookups,
//! layer unpacking per chain ID, flattened rootfs copies, removal and garbage collection.
//!
//! Layout under `<root-dir>/images`:
//!
//! ```text
//! blobs/sha256/<hex>          verified content (manifests, configs, indexes, layer blobs)
//! index.json                  reference -> manifest, config, index digest, platform, size
//! layers/<chain-hex>/rootfs   one unpacked layer (overlayfs whiteouts), complete once present
//! layers/<chain-hex>/diffid   the layer's diff ID; `layer` holds its blob digest
//! locks/index.lock            exclusive while index.json is rewritten
//! locks/gc.lock               shared by writers (leases), exclusive while collecting garbage
//! locks/layer-<xx>.lock       exclusive while unpacking a layer whose chain ID starts with xx
//! tmp/                        scratch space of imports (same filesystem, so renames work)
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use staticlet_runtime::Image;

use crate::blob::{sync_dir, write_atomic, BlobInfo, BlobWriter, TMP_PREFIX};
use crate::digest::{chain_ids, parse_sha256, sha256_digest};
use crate::error::{io_err, Error, Result};
use crate::lock::{self, FileLock};
use crate::platform::Platform;
use crate::reference::{as_image_id, Reference};
use crate::unpack::{
    apply_layer, apply_layer_live, LayerSource, LayerUsage, Live, Mode, Progress, UnpackLimits,
};

/// Manifests, configs and indexes larger than this are refused (they are JSON documents).
const MAX_DOCUMENT_SIZE: u64 = 16 << 20;

/// One reference in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The normalised reference (`docker.io/library/busybox:latest` or `repo@sha256:...`).
    pub reference: String,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Digest of the image config: the image id.
    pub config_digest: String,
    /// Digest of the image index (manifest list) the manifest was chosen from, if any.
    pub index_digest: Option<String>,
    pub platform: Platform,
    /// Size of config plus layer blobs as stored (compressed).
    pub size: u64,
}

impl ImageRecord {
    /// The image id (`sha256:` of the config).
    pub fn id(&self) -> &str {
        &self.config_digest
    }

    /// `repository@digest` with the digest a registry knows this image by (index, else manifest).
    pub fn repo_digest(&self) -> String {
        let digest = self
            .index_digest
            .as_deref()
            .unwrap_or(&self.manifest_digest);
        match Reference::parse(&self.reference) {
            Ok(r) => r.with_digest(digest),
            Err(_) => format!("{}@{digest}", self.reference),
        }
    }

    fn from_entry(reference: &str, e: &IndexEntry) -> Self {
        Self {
            reference: reference.to_string(),
            manifest_digest: e.manifest.clone(),
            config_digest: e.config.clone(),
            index_digest: e.index.clone(),
            platform: e.platform.clone(),
            size: e.size,
        }
    }
}

/// One row of an image listing (`REPOSITORY TAG DIGEST SIZE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageListEntry {
    /// `docker.io/library/busybox`.
    pub repository: String,
    /// The tag, `None` for references by digest.
    pub tag: Option<String>,
    /// The repo digest (index digest if the image came from an index, else manifest digest).
    pub digest: String,
    /// The image id (config digest).
    pub image_id: String,
    pub size: u64,
    /// The full normalised reference this row is keyed by.
    pub reference: String,
}

/// What an image's config says about running it: what the runtime needs for the OCI spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` entries, in the image's order.
    pub env: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub stop_signal: String,
    /// `port/proto` entries, sorted.
    pub exposed_ports: Vec<String>,
    /// Volume paths, sorted.
    pub volumes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub platform: Platform,
    /// Diff IDs of the layers, lowest first.
    pub diff_ids: Vec<String>,
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub layers_removed: usize,
    pub bytes_freed: u64,
}

/// Keeps garbage collection from running while held (a shared lock on `locks/gc.lock`).
///
/// Writers hold one from their first blob write to the commit of the image, so blobs that are
/// not referenced yet are not collected. A puller should take one for the whole pull. Do not call
/// [`ImageStore::gc`] while holding a lease in the same thread: it would wait for itself.
#[derive(Debug)]
pub struct Lease {
    _lock: FileLock,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    images: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IndexEntry {
    manifest: String,
    config: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    index: Option<String>,
    platform: Platform,
    size: u64,
}

/// The content-addressed image store. Blocking API, safe to share across threads (`Arc`) and to
/// open from several processes on the same root.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    platform: Platform,
    limits: UnpackLimits,
    unpacks: AtomicU64,
    unpack_threads: usize,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `<root_dir>/images` for the host's platform.
    pub fn open(root_dir: &Path) -> Result<Self> {
        Self::open_with_platform(root_dir, Platform::host())
    }

    /// Opens the store choosing manifests for `platform` from image indexes.
    pub fn open_with_platform(root_dir: &Path, platform: Platform) -> Result<Self> {
        let root = root_dir.join("images");
        let store = Self {
            root,
            platform,
            limits: UnpackLimits::default(),
            unpacks: AtomicU64::new(0),
            unpack_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        };
        for dir in [
            store.blobs_dir(),
            store.layers_dir(),
            store.locks_dir(),
            store.tmp_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(store)
    }

    /// The store with other bounds on unpacking layers (default [`UnpackLimits::default`]).
    pub fn with_limits(mut self, limits: UnpackLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The store unpacking at most `threads` layers of an image at a time (default: one per
    /// core, up to 8; 1: one after the other). On this 2-core VM (README, "Image import"), 2
    /// made a five-layer image 30 % faster to import on quiet cores (gzip and zstd); on busy
    /// ones, 12-14 % faster (gzip) and 1 % faster or 60 % slower (zstd).
    pub fn with_unpack_threads(mut self, threads: usize) -> Self {
        self.unpack_threads = threads.max(1);
        self
    }

    /// The bounds on unpacking layers.
    pub fn limits(&self) -> &UnpackLimits {
        &self.limits
    }

    /// `<root-dir>/images`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The platform manifests are chosen for.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// How many layers this store instance has unpacked (not counting ones found unpacked).
    pub fn unpack_count(&self) -> u64 {
        self.unpacks.load(Ordering::Relaxed)
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Takes a [`Lease`] that holds garbage collection off.
    pub fn lease(&self) -> Result<Lease> {
        Ok(Lease {
            _lock: lock::shared(&self.locks_dir().join("gc.lock"))?,
        })
    }

    // ---- blobs ------------------------------------------------------------------------------

    /// The path of a blob (whether or not it is present).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(parse_sha256(digest)?))
    }

    /// The size of a blob if it is present.
    pub fn blob_size(&self, digest: &str) -> Result<Option<u64>> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                op: "stat",
                path,
                source: e,
            }),
        }
    }

    /// A writer for a new blob. With `expected_digest` the content must hash to it (and have
    /// `expected_size` if given) or [`BlobWriter::commit`] fails and keeps nothing; without, the
    /// blob is stored under whatever it hashes to.
    pub fn blob_writer(
        &self,
        expected_digest: Option<&str>,
        expected_size: Option<u64>,
    ) -> Result<BlobWriter> {
        BlobWriter::new(
            &self.blobs_dir(),
            expected_digest,
            expected_size,
            self.lease()?,
        )
    }

    /// Stores a blob held in memory.
    pub fn write_blob(&self, bytes: &[u8], expected_digest: Option<&str>) -> Result<BlobInfo> {
        let digest = sha256_digest(bytes);
        if let Some(want) = expected_digest {
            parse_sha256(want)?;
            if want != digest {
                return Err(Error::DigestMismatch {
                    what: "blob".to_string(),
                    expected: want.to_string(),
                    actual: digest,
                });
            }
        }
        if self.blob_size(&digest)? == Some(bytes.len() as u64) {
            return Ok(BlobInfo {
                digest,
                size: bytes.len() as u64,
            });
        }
        let mut w = self.blob_writer(Some(&digest), Some(bytes.len() as u64))?;
        io::Write::write_all(&mut w, bytes).map_err(io_err("write blob", self.blobs_dir()))?;
        w.commit()
    }

    /// Reads a small blob (a JSON document), re-verifying its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let file = fs::File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::BlobNotFound {
                digest: digest.to_string(),
            },
            _ => Error::Io {
                op: "open",
                path: path.clone(),
                source: e,
            },
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_DOCUMENT_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err("read", &path))?;
        if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
            return Err(Error::InvalidDocument {
                what: "document",
                location: digest.to_string(),
                message: "larger than 16 MiB".to_string(),
            });
        }
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", path.display()),
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    fn read_manifest(&self, digest: &str) -> Result<ImageManifest> {
        parse_manifest(&self.read_blob(digest)?, digest)
    }

    fn read_config(&self, digest: &str) -> Result<ImageConfiguration> {
        parse_config(&self.read_blob(digest)?, digest)
    }

    // ---- index ------------------------------------------------------------------------------

    fn read_index(&self) -> Result<IndexFile> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::InvalidDocument {
                what: "store index",
                location: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(e) => Err(Error::Io {
                op: "read",
                path,
                source: e,
            }),
        }
    }

    /// Runs `f` on the index under the index lock and writes the result back atomically.
    fn update_index<T>(&self, f: impl FnOnce(&mut IndexFile) -> Result<T>) -> Result<T> {
        let _lock = lock::exclusive(&self.locks_dir().join("index.lock"))?;
        let mut index = self.read_index()?;
        let out = f(&mut index)?;
        index.version = 1;
        let bytes = serde_json::to_vec_pretty(&index).expect("index serializes");
        write_atomic(&self.index_path(), &bytes)?;
        Ok(out)
    }

    // ---- commit -----------------------------------------------------------------------------

    /// Adds (or replaces) `reference` as the image of `manifest` and `config`.
    ///
    /// The manifest's layer blobs must already be in the store (written with
    /// [`blob_writer`](Self::blob_writer)); the manifest and config are written here. The config
    /// must match the manifest's config descriptor and have one diff ID per layer. The layers are
    /// unpacked (verifying their diff IDs) before the reference is published, so a reference in
    /// the index always names a complete, verified image. When the
    /// reference pointed at another image that no other reference keeps, that image stays
    /// reachable as `repository@<its manifest digest>` (a dangling image, like docker's
    /// `<none>`), so containers created from it keep their layers until it is removed.
    pub fn commit_image(
        &self,
        reference: &str,
        manifest: &[u8],
        config: &[u8],
    ) -> Result<ImageRecord> {
        self.commit(reference, None, manifest, config, true)
    }

    /// As [`commit_image`](Self::commit_image), for a manifest chosen from an image index
    /// (which must list it); the index is stored and its digest is the image's repo digest.
    pub fn commit_image_with_index(
        &self,
        reference: &str,
        index: &[u8],
        manifest: &[u8],
        config: &[u8],
    ) -> Result<ImageRecord> {
        self.commit(reference, Some(index), manifest, config, true)
    }

    pub(crate) fn commit(
        &self,
        reference: &str,
        index: Option<&[u8]>,
        manifest_bytes: &[u8],
        config_bytes: &[u8],
        unpack: bool,
    ) -> Result<ImageRecord> {
        let reference = Reference::parse(reference)?;
        let _lease = self.lease()?;
        let manifest_digest = sha256_digest(manifest_bytes);
        let manifest = parse_manifest(manifest_bytes, &manifest_digest)?;
        let config_desc = manifest.config();
        let config_digest = sha256_digest(config_bytes);
        if config_desc.digest().to_string() != config_digest {
            return Err(Error::DigestMismatch {
                what: format!("config of manifest {manifest_digest}"),
                expected: config_desc.digest().to_string(),
                actual: config_digest,
            });
        }
        if config_desc.size() != config_bytes.len() as u64 {
            return Err(Error::SizeMismatch {
                digest: config_digest,
                expected: config_desc.size(),
                actual: config_bytes.len() as u64,
            });
        }
        let config = parse_config(config_bytes, &config_digest)?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::InvalidDocument {
                what: "config",
                location: config_digest,
                message: format!(
                    "{} diff ids for {} layers",
                    diff_ids.len(),
                    manifest.layers().len()
                ),
            });
        }
        chain_ids(diff_ids)?;
        let mut size = config_bytes.len() as u64;
        for layer in manifest.layers() {
            let digest = layer.digest().to_string();
            parse_sha256(&digest)?;
            match self.blob_size(&digest)? {
                None => return Err(Error::BlobNotFound { digest }),
                Some(s) if s != layer.size() => {
                    return Err(Error::SizeMismatch {
                        digest,
                        expected: layer.size(),
                        actual: s,
                    })
                }
                Some(s) => size += s,
            }
        }
        let index_digest = match index {
            Some(bytes) => {
                let digest = sha256_digest(bytes);
                let idx = parse_index(bytes, &digest)?;
                if !idx
                    .manifests()
                    .iter()
                    .any(|d| d.digest().to_string() == manifest_digest)
                {
                    return Err(Error::InvalidDocument {
                        what: "index",
                        location: digest,
                        message: format!("does not list manifest {manifest_digest}"),
                    });
                }
                self.write_blob(bytes, None)?;
                Some(digest)
            }
            None => None,
        };
        self.write_blob(config_bytes, None)?;
        self.write_blob(manifest_bytes, None)?;
        if unpack {
            self.unpack_layers(&manifest, &config)?;
        }
        let platform = Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
        };
        let entry = IndexEntry {
            manifest: manifest_digest,
            config: config_desc.digest().to_string(),
            index: index_digest,
            platform,
            size,
        };
        let key = reference.to_string();
        self.update_index(|idx| {
            if let Some(old) = idx.images.insert(key.clone(), entry.clone()) {
                let kept = idx.images.values().any(|e| e.config == old.config);
                if !kept {
                    let dangling = reference.with_digest(&old.manifest);
                    tracing::info!(reference = %key, old = %dangling, "reference replaced; old image kept by digest");
                    idx.images.insert(dangling, old);
                }
            }
            Ok(())
        })?;
        Ok(ImageRecord::from_entry(&key, &entry))
    }

    // ---- lookups ----------------------------------------------------------------------------

    /// Every reference in the store, sorted.
    pub fn records(&self) -> Result<Vec<ImageRecord>> {
        let idx = self.read_index()?;
        Ok(idx
            .images
            .iter()
            .map(|(k, e)| ImageRecord::from_entry(k, e))
            .collect())
    }

    /// The record a reference (or image id, `sha256:<hex>`) names: an exact reference, a
    /// `repo@digest` matching an image's manifest or index digest, or an image id.
    pub fn resolve(&self, reference: &str) -> Result<Option<ImageRecord>> {
        let idx = self.read_index()?;
        Ok(resolve_keys(&idx, reference)?
            .into_iter()
            .next()
            .map(|k| ImageRecord::from_entry(&k, &idx.images[&k])))
    }

    fn resolve_required(&self, reference: &str) -> Result<ImageRecord> {
        self.resolve(reference)?
            .ok_or_else(|| Error::NotFound(reference.to_string()))
    }

    /// The image a reference names, CRI style: id, every tag and repo digest of that image.
    pub fn image_status(&self, reference: &str) -> Result<Option<Image>> {
        let idx = self.read_index()?;
        let Some(key) = resolve_keys(&idx, reference)?.into_iter().next() else {
            return Ok(None);
        };
        let rec = ImageRecord::from_entry(&key, &idx.images[&key]);
        let mut tags = BTreeSet::new();
        let mut digests = BTreeSet::new();
        for (k, e) in &idx.images {
            if e.config != rec.config_digest {
                continue;
            }
            let r = ImageRecord::from_entry(k, e);
            if Reference::parse(k).is_ok_and(|p| p.tag.is_some()) {
                tags.insert(k.clone());
            }
            digests.insert(r.repo_digest());
        }
        Ok(Some(Image {
            id: rec.config_digest.clone(),
            repo_tags: tags.into_iter().collect(),
            repo_digests: digests.into_iter().collect(),
            size: rec.size,
        }))
    }

    /// The resolved run configuration of an image.
    pub fn image_config(&self, reference: &str) -> Result<ImageConfig> {
        let rec = self.resolve_required(reference)?;
        let config = self.read_config(&rec.config_digest)?;
        let mut out = ImageConfig {
            platform: rec.platform.clone(),
            diff_ids: config.rootfs().diff_ids().clone(),
            ..Default::default()
        };
        if let Some(c) = config.config() {
            out.entrypoint = c.entrypoint().clone().unwrap_or_default();
            out.cmd = c.cmd().clone().unwrap_or_default();
            out.env = c.env().clone().unwrap_or_default();
            out.working_dir = c.working_dir().clone().unwrap_or_default();
            out.user = c.user().clone().unwrap_or_default();
            out.stop_signal = c.stop_signal().clone().unwrap_or_default();
            out.exposed_ports = c.exposed_ports().clone().unwrap_or_default();
            out.exposed_ports.sort();
            out.volumes = c.volumes().clone().unwrap_or_default();
            out.volumes.sort();
            out.labels = c.labels().clone().unwrap_or_default().into_iter().collect();
        }
        Ok(out)
    }

    /// The images in the store, one row per reference, sorted by reference.
    pub fn list(&self) -> Result<Vec<ImageListEntry>> {
        Ok(self
            .records()?
            .into_iter()
            .map(|r| {
                let parsed = Reference::parse(&r.reference).ok();
                ImageListEntry {
                    repository: parsed
                        .as_ref()
                        .map(Reference::repository)
                        .unwrap_or_default(),
                    tag: parsed.and_then(|p| p.tag),
                    digest: r
                        .index_digest
                        .clone()
                        .unwrap_or_else(|| r.manifest_digest.clone()),
                    image_id: r.config_digest.clone(),
                    size: r.size,
                    reference: r.reference,
                }
            })
            .collect())
    }

    // ---- layers -----------------------------------------------------------------------------

    /// The unpacked layer directories of an image, lowest layer first, unpacking missing ones.
    ///
    /// Each directory holds one layer in overlayfs format; overlayfs wants them highest first:
    /// `lowerdir=<last>:...:<first>`.
    pub fn rootfs_layers(&self, reference: &str) -> Result<Vec<PathBuf>> {
        let _lease = self.lease()?;
        let rec = self.resolve_required(reference)?;
        let manifest = self.read_manifest(&rec.manifest_digest)?;
        let config = self.read_config(&rec.config_digest)?;
        self.unpack_layers(&manifest, &config)
    }

    /// Unpacks the layers of an image that are not unpacked yet, several at a time (each into
    /// its own directory: they are independent), and returns the directories of all of them.
    ///
    /// The image limits are those of unpacking the layers one by one, lowest first, each within
    /// what the layers below it leave: in parallel, a layer is checked while it is unpacked
    /// against what the layers below have expanded to so far ([`Live`]; the image's bytes in
    /// flight never exceed the image limits), and then, in order, against their final usage. A
    /// layer that fails or went past what the layers below leave is unpacked again alone within
    /// that, so an error is the one unpacking one by one gives (its layer, entry and limit). Layers
    /// unpacked before (by another image) count with their recorded usage and are checked the
    /// same way.
    fn unpack_layers(
        &self,
        manifest: &ImageManifest,
        config: &ImageConfiguration,
    ) -> Result<Vec<PathBuf>> {
        let diff_ids = config.rootfs().diff_ids();
        let chains = chain_ids(diff_ids)?;
        let digests: Vec<String> = manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect();
        let paths = digests
            .iter()
            .map(|d| self.blob_path(d))
            .collect::<Result<Vec<_>>>()?;
        let srcs: Vec<LayerSource<'_>> = manifest
            .layers()
            .iter()
            .enumerate()
            .map(|(i, layer)| LayerSource {
                path: &paths[i],
                digest: &digests[i],
                size: layer.size(),
                diff_id: &diff_ids[i],
                media_type: layer.media_type().as_ref(),
            })
            .collect();
        // Each layer: unpacked with its usage, or the error and whether it was unpacked alone
        // within the exact bounds (then that error is the one to report).
        let mut results: Vec<Option<Result<(PathBuf, LayerUsage)>>> = chains
            .iter()
            .map(|c| self.unpacked_layer(c))
            .map(|r| r.map(Ok))
            .collect();
        let progress: Vec<Progress> = chains.iter().map(|_| Progress::default()).collect();
        let todo: Vec<usize> = (0..chains.len())
            .filter(|&i| results[i].is_none())
            .collect();
        let threads = self.unpack_threads.min(todo.len());
        if threads > 1 {
            for (p, r) in progress.iter().zip(&results) {
                if let Some(Ok((_, usage))) = r {
                    p.set(*usage);
                }
            }
            let next = AtomicUsize::new(0);
            let done = Mutex::new(Vec::with_capacity(todo.len()));
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        // Lowest first: the layers below one are in flight or done.
                        while let Some(&i) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                            let live = Live {
                                below: &progress[..i],
                                me: &progress[i],
                            };
                            let r = self.ensure_layer(
                                &chains[i],
                                &srcs[i],
                                LayerUsage::default(),
                                Some(&live),
                            );
                            if let Ok((_, usage)) = &r {
                                progress[i].set(*usage);
                            }
                            done.lock().expect("unpack results").push((i, r));
                        }
                    });
                }
            });
            for (i, r) in done.into_inner().expect("unpack results") {
                results[i] = Some(r);
            }
        }
        let mut out = Vec::with_capacity(chains.len());
        let mut below = LayerUsage::default();
        for (i, result) in results.into_iter().enumerate() {
            let (chain, src) = (&chains[i], &srcs[i]);
            let result = match result {
                Some(r) => r,
                // Unpacked one by one: exactly within what the layers below leave.
                None => match self.ensure_layer(chain, src, below, None) {
                    Err(e) => return Err(e),
                    Ok(r) => Ok(r),
                },
            };
            let (rootfs, usage) = match result {
                Ok((rootfs, usage)) if self.limits.admits(below, usage) => (rootfs, usage),
                Err(e)
                    if !progress[i].over_image()
                        && self.limits.admits(below, progress[i].usage()) =>
                {
                    // Stopped within what the layers below leave: alone it stops the same way.
                    return Err(e);
                }
                other => {
                    // Past what the layers below leave: the error unpacking it alone gives.
                    let usage = self.unpack_alone(src, below)?;
                    let rootfs = match other {
                        Ok((rootfs, _)) => rootfs,
                        Err(_) => self.ensure_layer(chain, src, below, None)?.0,
                    };
                    (rootfs, usage)
                }
            };
            below = below.plus(usage);
            out.push(rootfs);
        }
        Ok(out)
    }

    /// The rootfs dir and recorded usage of a layer that is unpacked already.
    fn unpacked_layer(&self, chain_id: &str) -> Option<(PathBuf, LayerUsage)> {
        let dir = self.layers_dir().join(parse_sha256(chain_id).ok()?);
        let rootfs = dir.join("rootfs");
        rootfs.is_dir().then(|| (rootfs, read_usage(&dir)))
    }

    /// Unpacks a layer alone into a scratch directory (removed after), within what the layers
    /// below leave: for the error one-by-one unpacking gives.
    fn unpack_alone(&self, src: &LayerSource<'_>, below: LayerUsage) -> Result<LayerUsage> {
        let layers = self.layers_dir();
        let scratch = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempdir_in(&layers)
            .map_err(io_err("create temp dir in", &layers))?;
        apply_layer(src, scratch.path(), Mode::Overlay, &self.limits, below)
    }

    /// Unpacks one layer under its chain ID unless it already is, within what the image's
    /// limits leave after the layers `below` (and, with `live`, after what the layers below that
    /// are unpacked at the same time expand to); returns its rootfs dir and what it expanded to.
    fn ensure_layer(
        &self,
        chain_id: &str,
        src: &LayerSource<'_>,
        below: LayerUsage,
        live: Option<&Live<'_>>,
    ) -> Result<(PathBuf, LayerUsage)> {
        let hex = parse_sha256(chain_id)?;
        let dir = self.layers_dir().join(hex);
        let rootfs = dir.join("rootfs");
        if rootfs.is_dir() {
            return Ok((rootfs, read_usage(&dir)));
        }
        let _lock = lock::exclusive(&self.locks_dir().join(format!("layer-{}.lock", &hex[..2])))?;
        if rootfs.is_dir() {
            return Ok((rootfs, read_usage(&dir)));
        }
        let layers = self.layers_dir();
        let staging = tempfile::Builder::new()
            .prefix(TMP_PREFIX)
            .tempdir_in(&layers)
            .map_err(io_err("create temp dir in", &layers))?;
        let staged_rootfs = staging.path().join("rootfs");
        fs::create_dir(&staged_rootfs).map_err(io_err("create directory", &staged_rootfs))?;
        // The layer's root is 0755 root:root unless the tar says otherwise.
        fs::set_permissions(
            &staged_rootfs,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(io_err("chmod", &staged_rootfs))?;
        let usage = apply_layer_live(
            src,
            &staged_rootfs,
            Mode::Overlay,
            &self.limits,
            below,
            live,
        )?;
        let usage_line = format!("{} {}\n", usage.size, usage.entries);
        for (name, value) in [
            ("diffid", src.diff_id),
            ("layer", src.digest),
            (USAGE_FILE, &usage_line),
        ] {
            let p = staging.path().join(name);
            fs::write(&p, value).map_err(io_err("write", &p))?;
        }
        // One syscall makes everything unpacked durable before the rename publishes it.
        if let Ok(f) = fs::File::open(staging.path()) {
            let _ = nix::unistd::syncfs(&f);
        }
        let staged = staging.keep();
        if let Err(e) = fs::rename(&staged, &dir) {
            let _ = fs::remove_dir_all(&staged);
            return Err(Error::Io {
                op: "rename",
                path: dir,
                source: e,
            });
        }
        sync_dir(&layers)?;
        self.unpacks.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(chain_id, layer = src.digest, "layer unpacked");
        Ok((rootfs, usage))
    }

    /// Materialises a flattened copy of an image's rootfs in `dest` (created if missing, should
    /// be empty) for runtimes without overlayfs: the layers applied in order with whiteouts and
    /// opaque directories honoured. Layer blobs are re-verified while applied. On error `dest`
    /// is incomplete and should be removed by the caller.
    pub fn flatten_rootfs(&self, reference: &str, dest: &Path) -> Result<()> {
        let _lease = self.lease()?;
        let rec = self.resolve_required(reference)?;
        let manifest = self.read_manifest(&rec.manifest_digest)?;
        let config = self.read_config(&rec.config_digest)?;
        fs::create_dir_all(dest).map_err(io_err("create directory", dest))?;
        let mut below = LayerUsage::default();
        for (layer, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
            let digest = layer.digest().to_string();
            let path = self.blob_path(&digest)?;
            let src = LayerSource {
                path: &path,
                digest: &digest,
                size: layer.size(),
                diff_id,
                media_type: layer.media_type().as_ref(),
            };
            below = below.plus(apply_layer(&src, dest, Mode::Apply, &self.limits, below)?);
        }
        Ok(())
    }

    // ---- removal and garbage collection -----------------------------------------------------

    /// Removes a reference (or, given an image id, every reference of that image) and then
    /// collects garbage if no writer holds a lease.
    ///
    /// Refuses with [`Error::InUse`] when `in_use` says a record is in use and removing it would
    /// leave no other reference to the same image (untagging one of several tags is allowed).
    /// Returns the removed records.
    pub fn remove(
        &self,
        reference: &str,
        in_use: &dyn Fn(&ImageRecord) -> bool,
    ) -> Result<Vec<ImageRecord>> {
        let removed = self.update_index(|idx| {
            let keys: Vec<String> = match as_image_id(reference) {
                Some(id) => idx
                    .images
                    .iter()
                    .filter(|(_, e)| e.config == id)
                    .map(|(k, _)| k.clone())
                    .collect(),
                None => resolve_keys(idx, reference)?.into_iter().take(1).collect(),
            };
            if keys.is_empty() {
                return Err(Error::NotFound(reference.to_string()));
            }
            let records: Vec<ImageRecord> = keys
                .iter()
                .map(|k| ImageRecord::from_entry(k, &idx.images[k]))
                .collect();
            for r in &records {
                let others = idx
                    .images
                    .iter()
                    .any(|(k, e)| e.config == r.config_digest && !keys.contains(k));
                if !others && in_use(r) {
                    return Err(Error::InUse {
                        reference: r.reference.clone(),
                    });
                }
            }
            for k in &keys {
                idx.images.remove(k);
            }
            Ok(records)
        })?;
        match self.try_gc() {
            Ok(Some(report)) => tracing::debug!(?report, "garbage collected after remove"),
            Ok(None) => tracing::debug!("garbage collection deferred: store busy"),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
        Ok(removed)
    }

    /// Removes every dangling image (referenced by digest only, with no tag pointing at it)
    /// that `in_use` does not claim, then collects garbage. Returns the removed records.
    pub fn prune(&self, in_use: &dyn Fn(&ImageRecord) -> bool) -> Result<Vec<ImageRecord>> {
        let removed = self.update_index(|idx| {
            let tagged: HashSet<String> = idx
                .images
                .iter()
                .filter(|(k, _)| Reference::parse(k).is_ok_and(|r| r.tag.is_some()))
                .map(|(_, e)| e.config.clone())
                .collect();
            let victims: Vec<ImageRecord> = idx
                .images
                .iter()
                .filter(|(_, e)| !tagged.contains(&e.config))
                .map(|(k, e)| ImageRecord::from_entry(k, e))
                .filter(|r| !in_use(r))
                .collect();
            for v in &victims {
                idx.images.remove(&v.reference);
            }
            Ok(victims)
        })?;
        self.try_gc()?;
        Ok(removed)
    }

    /// Collects garbage, waiting for writers to finish: removes blobs and unpacked layers no
    /// image references, stale temp files and import scratch space.
    pub fn gc(&self) -> Result<GcReport> {
        let _lock = lock::exclusive(&self.locks_dir().join("gc.lock"))?;
        self.collect()
    }

    /// After a failed import or pull: removes what it left that no image references (blobs,
    /// unpacked layers, temp files), unless another writer holds a lease now (its content is
    /// then collected later). Failures are logged, not returned: the original error matters.
    pub fn discard_unreferenced(&self) {
        match self.try_gc() {
            Ok(Some(r)) => tracing::debug!(
                blobs = r.blobs_removed,
                layers = r.layers_removed,
                "content of a failed import or pull removed"
            ),
            Ok(None) => tracing::debug!(
                "store busy; content of a failed import or pull is left to the next collection"
            ),
            Err(e) => tracing::warn!(error = %e, "removing the content of a failed import or pull"),
        }
    }

    /// As [`gc`](Self::gc) if no writer holds a lease now; `None` otherwise.
    pub fn try_gc(&self) -> Result<Option<GcReport>> {
        match lock::try_exclusive(&self.locks_dir().join("gc.lock"))? {
            Some(_lock) => self.collect().map(Some),
            None => Ok(None),
        }
    }

    fn collect(&self) -> Result<GcReport> {
        let idx = self.read_index()?;
        let mut blobs: HashSet<String> = HashSet::new();
        let mut chains: HashSet<String> = HashSet::new();
        for e in idx.images.values() {
            blobs.insert(e.manifest.clone());
            blobs.insert(e.config.clone());
            blobs.extend(e.index.clone());
            // A document that cannot be read keeps nothing more; its image is broken anyway.
            if let Ok(m) = self.read_manifest(&e.manifest) {
                blobs.extend(m.layers().iter().map(|l| l.digest().to_string()));
            }
            if let Ok(c) = self.read_config(&e.config) {
                chains.extend(chain_ids(c.rootfs().diff_ids()).unwrap_or_default());
            }
        }
        let mut report = GcReport::default();
        for dirent in read_dir(&self.blobs_dir())? {
            let name = dirent.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&format!("sha256:{name}")) {
                let size = dirent.metadata().map(|m| m.len()).unwrap_or(0);
                let path = dirent.path();
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                report.blobs_removed += 1;
                report.bytes_freed += size;
            }
        }
        for dirent in read_dir(&self.layers_dir())? {
            let name = dirent.file_name().to_string_lossy().into_owned();
            if !chains.contains(&format!("sha256:{name}")) {
                let path = dirent.path();
                fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
                report.layers_removed += 1;
            }
        }
        for dirent in read_dir(&self.tmp_dir())? {
            let path = dirent.path();
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
        Ok(report)
    }
}

/// The file of an unpacked layer's directory that records what it expanded to
/// (`<bytes> <entries>`), counted against the image limits of every image that uses it.
const USAGE_FILE: &str = "usage";

/// What an unpacked layer expanded to. Layers unpacked before the file existed count as
/// nothing (they passed the per-layer limits when they were unpacked).
fn read_usage(layer_dir: &Path) -> LayerUsage {
    let text = fs::read_to_string(layer_dir.join(USAGE_FILE)).unwrap_or_default();
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    match (words.next().flatten(), words.next().flatten()) {
        (Some(size), Some(entries)) => LayerUsage { size, entries },
        _ => LayerUsage::default(),
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    fs::read_dir(dir)
        .and_then(|it| it.collect::<io::Result<Vec<_>>>())
        .map_err(io_err("read directory", dir))
}

/// Keys of the index a reference names, best match first.
fn resolve_keys(idx: &IndexFile, reference: &str) -> Result<Vec<String>> {
    if let Some(id) = as_image_id(reference) {
        return Ok(idx
            .images
            .iter()
            .filter(|(_, e)| e.config == id)
            .map(|(k, _)| k.clone())
            .collect());
    }
    let parsed = Reference::parse(reference)?;
    let key = parsed.to_string();
    if idx.images.contains_key(&key) {
        return Ok(vec![key]);
    }
    let Some(digest) = &parsed.digest else {
        return Ok(Vec::new());
    };
    let repo = parsed.repository();
    Ok(idx
        .images
        .iter()
        .filter(|(k, e)| {
            (e.manifest == *digest || e.index.as_deref() == Some(digest))
                && Reference::parse(k).is_ok_and(|r| r.repository() == repo)
        })
        .map(|(k, _)| k.clone())
        .collect())
}

pub(crate) fn parse_manifest(bytes: &[u8], location: &str) -> Result<ImageManifest> {
    ImageManifest::from_reader(bytes).map_err(|e| Error::InvalidDocument {
        what: "manifest",
        location: location.to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn parse_config(bytes: &[u8], location: &str) -> Result<ImageConfiguration> {
    ImageConfiguration::from_reader(bytes).map_err(|e| Error::InvalidDocument {
        what: "config",
        location: location.to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn parse_index(bytes: &[u8], location: &str) -> Result<ImageIndex> {
    ImageIndex::from_reader(bytes).map_err(|e| Error::InvalidDocument {
        what: "index",
        location: location.to_string(),
        message: e.to_string(),
    })
}
