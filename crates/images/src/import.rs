//! Importing images without a registry: docker-archive tarballs (`docker save`), OCI archives
//! (a tar of an OCI layout) and OCI layout directories.
//!
//! Archives (optionally gzip or zstd compressed) are extracted into the store's `tmp/` first
//! (regular files and directories only; links inside the archive are resolved within it), so
//! verified blobs can be moved into place by rename instead of copied. Every image goes through
//! [`ImageStore::commit_image`], like a registry pull does.
//!
//! - docker archive: recognised by `manifest.json` (`[{"Config", "RepoTags", "Layers"}]`). An
//!   OCI manifest is synthesised from the config and the layer files (media type from their magic
//!   bytes), one reference per entry of `RepoTags`. Entries without tags are skipped.
//! - OCI layout: `index.json` (and `oci-layout`). The reference of a descriptor is its
//!   `io.containerd.image.name` annotation, else `org.opencontainers.image.ref.name`: a value with
//!   `/`, `:` or `@` is a full reference; a bare value is a tag of
//!   [`ImportOptions::repository`] when that is set, else a repository name (`busybox` ->
//!   `docker.io/library/busybox:latest`). Indexes resolve to the store's platform.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, MediaType};
use serde::Deserialize;
use serde_json::json;

use crate::blob::{sync_dir, BlobInfo, TMP_PREFIX};
use crate::digest::{copy_with, parse_sha256, sha256_digest, HashingReader, COPY_BUF_SIZE};
use crate::error::{io_err, Error, Result};
use crate::platform::{select_manifest, Platform};
use crate::store::{parse_config, parse_index, parse_manifest, ImageRecord, ImageStore};
use crate::unpack::Compression;

const MAX_DOCUMENT_SIZE: u64 = 16 << 20;

/// The regular files an archive was extracted to (hard links included), with the digest and size
/// of their content, hashed while they were written: blobs are moved into the store without
/// being read again.
type Extracted = HashMap<PathBuf, BlobInfo>;
const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Options of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Repository for OCI layouts whose ref names are bare tags (`latest`).
    pub repository: Option<String>,
    /// Unpack (and so verify the diff IDs of) the layers of imported images before their
    /// references are published (default true). Without, layers are unpacked on demand.
    pub unpack: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        Self {
            repository: None,
            unpack: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

fn is_index_media_type(m: &MediaType) -> bool {
    matches!(m, MediaType::ImageIndex)
        || m.as_ref() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

fn archive_err(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::InvalidArchive {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

impl ImageStore {
    /// Imports a docker archive, OCI archive (file) or OCI layout (directory); returns the
    /// references it added or replaced.
    pub fn import(&self, path: &Path) -> Result<Vec<ImageRecord>> {
        self.import_with(path, &ImportOptions::default())
    }

    /// As [`import`](Self::import), with options.
    pub fn import_with(&self, path: &Path, opts: &ImportOptions) -> Result<Vec<ImageRecord>> {
        let lease = self.lease()?;
        let result = self.import_leased(path, opts);
        drop(lease);
        if result.is_err() {
            self.discard_unreferenced();
        }
        result
    }

    fn import_leased(&self, path: &Path, opts: &ImportOptions) -> Result<Vec<ImageRecord>> {
        let meta = fs::metadata(path).map_err(io_err("stat", path))?;
        let records = if meta.is_dir() {
            self.import_dir(path, path, None, opts)?
        } else {
            let tmp_root = self.tmp_dir();
            let scratch = tempfile::Builder::new()
                .prefix(TMP_PREFIX)
                .tempdir_in(&tmp_root)
                .map_err(io_err("create temp dir in", &tmp_root))?;
            let extracted = extract_archive(path, scratch.path())?;
            self.import_dir(path, scratch.path(), Some(&extracted), opts)?
        };
        if records.is_empty() {
            return Err(archive_err(path, "no named image found"));
        }
        Ok(records)
    }

    fn import_dir(
        &self,
        origin: &Path,
        dir: &Path,
        extracted: Option<&Extracted>,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>> {
        if dir.join("manifest.json").is_file() {
            self.import_docker_dir(origin, dir, extracted, opts)
        } else if dir.join("index.json").is_file() {
            self.import_oci_dir(origin, dir, extracted, opts)
        } else {
            Err(archive_err(
                origin,
                "neither manifest.json nor index.json found",
            ))
        }
    }

    fn import_docker_dir(
        &self,
        origin: &Path,
        dir: &Path,
        extracted: Option<&Extracted>,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>> {
        let bytes = read_small(&dir.join("manifest.json"))?;
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidDocument {
                what: "manifest.json",
                location: origin.display().to_string(),
                message: e.to_string(),
            })?;
        let mut out = Vec::new();
        for entry in entries {
            let tags = entry.repo_tags.clone().unwrap_or_default();
            let Some(first) = tags.first() else {
                tracing::warn!(archive = %origin.display(), config = entry.config, "untagged image in archive skipped");
                continue;
            };
            let records = self
                .import_docker_entry(origin, dir, extracted, opts, &entry, &tags)
                .map_err(|e| e.for_image(first))?;
            out.extend(records);
        }
        Ok(out)
    }

    fn import_docker_entry(
        &self,
        origin: &Path,
        dir: &Path,
        extracted: Option<&Extracted>,
        opts: &ImportOptions,
        entry: &DockerManifestEntry,
        tags: &[String],
    ) -> Result<Vec<ImageRecord>> {
        let mut out = Vec::new();
        let config_bytes = read_small(&inside(dir, &entry.config, origin)?)?;
        let config_digest = sha256_digest(&config_bytes);
        if let Some(named) =
            blob_name_digest(&entry.config).or_else(|| legacy_config_digest(&entry.config))
        {
            if named != config_digest {
                return Err(Error::DigestMismatch {
                    what: format!("config {}", entry.config),
                    expected: named,
                    actual: config_digest,
                });
            }
        }
        let config = parse_config(&config_bytes, &config_digest)?;
        if config.rootfs().diff_ids().len() != entry.layers.len() {
            return Err(archive_err(
                origin,
                format!(
                    "config {} lists {} diff ids for {} layers",
                    entry.config,
                    config.rootfs().diff_ids().len(),
                    entry.layers.len()
                ),
            ));
        }
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let file = inside(dir, layer, origin)?;
            let expected = blob_name_digest(layer);
            let compression = detect_file(&file)?;
            let info = self.ingest_file(&file, expected.as_deref(), None, extracted)?;
            layers.push(json!({
                "mediaType": compression.oci_media_type(),
                "digest": info.digest,
                "size": info.size,
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_bytes.len(),
            },
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
        for tag in tags {
            out.push(self.commit(tag, None, &manifest_bytes, &config_bytes, opts.unpack)?);
        }
        Ok(out)
    }

    fn import_oci_dir(
        &self,
        origin: &Path,
        dir: &Path,
        extracted: Option<&Extracted>,
        opts: &ImportOptions,
    ) -> Result<Vec<ImageRecord>> {
        if !dir.join("oci-layout").is_file() {
            tracing::debug!(archive = %origin.display(), "OCI layout without oci-layout file");
        }
        let index_bytes = read_small(&dir.join("index.json"))?;
        let index = parse_index(
            &index_bytes,
            &origin.join("index.json").display().to_string(),
        )?;
        // Group descriptors by reference, keeping the archive's order of references.
        let mut groups: BTreeMap<String, Vec<&Descriptor>> = BTreeMap::new();
        let mut order = Vec::new();
        for d in index.manifests() {
            let Some(name) = oci_ref_name(d, opts) else {
                tracing::warn!(archive = %origin.display(), digest = %d.digest(), "unnamed manifest in OCI layout skipped");
                continue;
            };
            if !groups.contains_key(&name) {
                order.push(name.clone());
            }
            groups.entry(name).or_default().push(d);
        }
        let mut out = Vec::new();
        for name in order {
            let descs = &groups[&name];
            let rec = self
                .import_oci_ref(origin, dir, extracted, opts, &name, descs)
                .map_err(|e| e.for_image(&name))?;
            out.push(rec);
        }
        Ok(out)
    }

    fn import_oci_ref(
        &self,
        origin: &Path,
        dir: &Path,
        extracted: Option<&Extracted>,
        opts: &ImportOptions,
        name: &str,
        descs: &[&Descriptor],
    ) -> Result<ImageRecord> {
        let (index_bytes, manifest_desc) = self.choose_oci_manifest(origin, dir, descs)?;
        let manifest_bytes = read_layout_blob(origin, dir, &manifest_desc)?;
        let manifest = parse_manifest(&manifest_bytes, manifest_desc.digest().as_ref())?;
        let config_bytes = read_layout_blob(origin, dir, manifest.config())?;
        for layer in manifest.layers() {
            let digest = layer.digest().to_string();
            let file = dir.join("blobs/sha256").join(parse_sha256(&digest)?);
            self.ingest_file(&file, Some(&digest), Some(layer.size()), extracted)?;
        }
        self.commit(
            name,
            index_bytes.as_deref(),
            &manifest_bytes,
            &config_bytes,
            opts.unpack,
        )
    }

    /// Picks the platform manifest among the descriptors of one reference; returns the bytes
    /// of the index it came from (if any) and its descriptor.
    fn choose_oci_manifest(
        &self,
        origin: &Path,
        dir: &Path,
        descs: &[&Descriptor],
    ) -> Result<(Option<Vec<u8>>, Descriptor)> {
        let platform = self.platform();
        if let Some(d) = descs.iter().find(|d| is_index_media_type(d.media_type())) {
            let mut bytes = read_layout_blob(origin, dir, d)?;
            let mut digest = d.digest().to_string();
            // Nested indexes are followed a few levels deep.
            for _ in 0..4 {
                let idx: ImageIndex = parse_index(&bytes, &digest)?;
                let chosen = select_manifest(&idx, platform)
                    .ok_or_else(|| Error::NoMatchingPlatform {
                        platform: platform.to_string(),
                        digest: digest.clone(),
                    })?
                    .clone();
                if !is_index_media_type(chosen.media_type()) {
                    return Ok((Some(bytes), chosen));
                }
                bytes = read_layout_blob(origin, dir, &chosen)?;
                digest = chosen.digest().to_string();
            }
            return Err(archive_err(origin, "image indexes nested too deeply"));
        }
        if descs.len() == 1 {
            return Ok((None, descs[0].clone()));
        }
        // Several manifests under one name: the descriptors' platforms decide, else the configs'.
        let mut best: Option<(u8, &Descriptor)> = None;
        for d in descs {
            let p = match d.platform() {
                Some(p) => Platform::from_oci(p),
                None => {
                    let mb = read_layout_blob(origin, dir, d)?;
                    let m = parse_manifest(&mb, d.digest().as_ref())?;
                    let cb = read_layout_blob(origin, dir, m.config())?;
                    let c = parse_config(&cb, m.config().digest().as_ref())?;
                    Platform {
                        os: c.os().to_string(),
                        architecture: c.architecture().to_string(),
                        variant: c.variant().clone(),
                    }
                }
            };
            if let Some(s) = platform.score(&p) {
                if best.is_none_or(|(b, _)| s > b) {
                    best = Some((s, d));
                }
            }
        }
        best.map(|(_, d)| (None, d.clone()))
            .ok_or_else(|| Error::NoMatchingPlatform {
                platform: platform.to_string(),
                digest: descs[0].digest().to_string(),
            })
    }

    /// Puts a file into the blob store: moved (renamed) when it was `extracted` (the caller owns
    /// it, and its digest is known), else copied. With `expected`, the content must hash to it
    /// (and have `expected_size` if given).
    fn ingest_file(
        &self,
        file: &Path,
        expected: Option<&str>,
        expected_size: Option<u64>,
        extracted: Option<&Extracted>,
    ) -> Result<BlobInfo> {
        if let Some(d) = expected {
            if let Some(size) = self.blob_size(d)? {
                if expected_size.is_none_or(|s| s == size) {
                    return Ok(BlobInfo {
                        digest: d.to_string(),
                        size,
                    });
                }
            }
        }
        let not_found = |e: io::Error| match e.kind() {
            io::ErrorKind::NotFound => archive_err(file, "referenced blob is missing"),
            _ => Error::Io {
                op: "open",
                path: file.to_path_buf(),
                source: e,
            },
        };
        let Some(extracted) = extracted else {
            let mut src = File::open(file).map_err(not_found)?;
            let mut w = self.blob_writer(expected, expected_size)?;
            let mut buf = vec![0u8; COPY_BUF_SIZE];
            copy_with(&mut src, &mut w, &mut buf).map_err(io_err("copy", file))?;
            return w.commit();
        };
        let (digest, size) = match extracted.get(file) {
            Some(info) => (info.digest.clone(), info.size),
            // Not a regular file of the archive (a link left unresolved): hashed now.
            None => {
                let f = File::open(file).map_err(not_found)?;
                let mut r = HashingReader::new(BufReader::new(f));
                r.drain().map_err(io_err("read", file))?;
                let (digest, size) = r.finish();
                (digest.expect("hashing reader"), size)
            }
        };
        if let Some(want) = expected {
            if want != digest {
                return Err(Error::DigestMismatch {
                    what: format!("blob {}", file.display()),
                    expected: want.to_string(),
                    actual: digest,
                });
            }
        }
        if let Some(want) = expected_size {
            if want != size {
                return Err(Error::SizeMismatch {
                    digest,
                    expected: want,
                    actual: size,
                });
            }
        }
        let dest = self.blob_path(&digest)?;
        if self.blob_size(&digest)? != Some(size) {
            File::open(file)
                .and_then(|f| f.sync_all())
                .map_err(io_err("fsync", file))?;
            fs::rename(file, &dest).map_err(io_err("rename", &dest))?;
            sync_dir(&self.blobs_dir())?;
        }
        Ok(BlobInfo { digest, size })
    }
}

/// The reference a descriptor of an OCI layout's index.json names.
fn oci_ref_name(d: &Descriptor, opts: &ImportOptions) -> Option<String> {
    let ann = d.annotations().as_ref()?;
    if let Some(n) = ann.get(ANNOTATION_CONTAINERD_NAME) {
        return Some(n.clone());
    }
    let r = ann.get(ANNOTATION_REF_NAME)?;
    if r.contains(['/', ':', '@']) {
        Some(r.clone())
    } else if let Some(repo) = &opts.repository {
        Some(format!("{repo}:{r}"))
    } else {
        Some(r.clone())
    }
}

/// `sha256:<hex>` if a path inside an archive is `blobs/sha256/<hex>`.
fn blob_name_digest(path: &str) -> Option<String> {
    let hex = path
        .trim_start_matches("./")
        .strip_prefix("blobs/sha256/")?;
    let digest = format!("sha256:{hex}");
    parse_sha256(&digest).is_ok().then_some(digest)
}

/// `sha256:<hex>` if a docker archive's config is `<hex>.json` (the legacy layout).
fn legacy_config_digest(path: &str) -> Option<String> {
    let hex = path.trim_start_matches("./").strip_suffix(".json")?;
    let digest = format!("sha256:{hex}");
    parse_sha256(&digest).is_ok().then_some(digest)
}

/// A path named inside an archive, refused if it leaves the archive.
fn inside(dir: &Path, rel: &str, origin: &Path) -> Result<PathBuf> {
    match clean(Path::new(rel)) {
        Some(p) => Ok(dir.join(p)),
        None => Err(archive_err(
            origin,
            format!("path {rel:?} leaves the archive"),
        )),
    }
}

fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(io_err("open", path))?;
    let mut bytes = Vec::new();
    f.take(MAX_DOCUMENT_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    if bytes.len() as u64 > MAX_DOCUMENT_SIZE {
        return Err(archive_err(path, "document larger than 16 MiB"));
    }
    Ok(bytes)
}

/// Reads a small blob of an OCI layout, verifying it against its descriptor.
fn read_layout_blob(origin: &Path, dir: &Path, d: &Descriptor) -> Result<Vec<u8>> {
    let digest = d.digest().to_string();
    let path = dir.join("blobs/sha256").join(parse_sha256(&digest)?);
    if !path.is_file() {
        return Err(archive_err(origin, format!("blob {digest} is missing")));
    }
    let bytes = read_small(&path)?;
    let actual = sha256_digest(&bytes);
    if actual != digest {
        return Err(Error::DigestMismatch {
            what: format!("blob {} of {}", digest, origin.display()),
            expected: digest,
            actual,
        });
    }
    if bytes.len() as u64 != d.size() {
        return Err(Error::SizeMismatch {
            digest,
            expected: d.size(),
            actual: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

fn detect_file(path: &Path) -> Result<Compression> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]).map_err(io_err("read", path))? {
            0 => break,
            k => n += k,
        }
    }
    Ok(Compression::detect(&head[..n]))
}

/// Extracts an archive (plain, gzip or zstd tar) into `dest`: regular files and directories;
/// symlinks and hard links to files inside the archive become hard links; anything else and any
/// path leaving `dest` is refused or skipped. Returns the files with the digests of their content.
fn extract_archive(archive: &Path, dest: &Path) -> Result<Extracted> {
    let file = File::open(archive).map_err(io_err("open", archive))?;
    let mut buf = BufReader::with_capacity(128 * 1024, file);
    let compression = Compression::detect(buf.fill_buf().map_err(io_err("read", archive))?);
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buf).map_err(io_err("read", archive))?,
        ),
    };
    let mut tar = tar::Archive::new(reader);
    let bad = |e: io::Error| archive_err(archive, e);
    let mut links: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut files = Extracted::new();
    let mut buf = vec![0u8; COPY_BUF_SIZE];
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.into_owned();
        let Some(rel) = clean(&raw) else {
            if raw.components().any(|c| c == Component::ParentDir) {
                return Err(archive_err(
                    archive,
                    format!("entry {} leaves the archive", raw.display()),
                ));
            }
            continue;
        };
        let full = dest.join(&rel);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                fs::create_dir_all(&full).map_err(io_err("create directory", &full))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = full.parent() {
                    fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
                }
                let mut out = File::create(&full).map_err(io_err("create", &full))?;
                let mut r = HashingReader::new(&mut entry);
                copy_with(&mut r, &mut out, &mut buf).map_err(io_err("write", &full))?;
                let (digest, size) = r.finish();
                let digest = digest.expect("hashing reader");
                files.insert(full, BlobInfo { digest, size });
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let Some(target) = entry.link_name().map_err(bad)? else {
                    continue;
                };
                let base = if kind == tar::EntryType::Symlink {
                    rel.parent().unwrap_or(Path::new("")).to_path_buf()
                } else {
                    PathBuf::new()
                };
                let Some(target) = clean(&base.join(target.as_ref())) else {
                    return Err(archive_err(
                        archive,
                        format!("link {} leaves the archive", raw.display()),
                    ));
                };
                links.push((rel, target));
            }
            _ => {}
        }
    }
    // Links may point at links: resolve until nothing changes.
    for _ in 0..8 {
        let mut pending = Vec::new();
        for (link, target) in links {
            let (l, t) = (dest.join(&link), dest.join(&target));
            if t.is_file() {
                if let Some(parent) = l.parent() {
                    fs::create_dir_all(parent).map_err(io_err("create directory", parent))?;
                }
                let _ = fs::remove_file(&l);
                fs::hard_link(&t, &l).map_err(io_err("link", &l))?;
                match files.get(&t).cloned() {
                    Some(info) => files.insert(l, info),
                    None => files.remove(&l),
                };
            } else {
                pending.push((link, target));
            }
        }
        if pending.is_empty() {
            break;
        }
        links = pending;
    }
    Ok(files)
}
