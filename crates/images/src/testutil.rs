//! Builders of test images, for this crate's tests and (with the `testutil` feature) for other
//! crates' tests: layer tars, compressed layers, image configs, docker archives, OCI layouts and
//! OCI archives, and a real busybox image made from the host's `/bin/busybox`.
//!
//! Everything is deterministic (mtime 0, uid/gid 0), so digests are stable across runs.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Value};

use crate::digest::sha256_digest;
use crate::platform::goarch;
use crate::unpack::Compression;

/// Builds an uncompressed layer tar in memory.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> Self {
        Self {
            tar: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    /// A directory entry.
    pub fn dir(mut self, path: &str, mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, path, io::empty())
            .expect("append dir");
        self
    }

    /// A regular file.
    pub fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .expect("append file");
        self
    }

    /// A regular file owned by `uid:gid`.
    pub fn file_owned(mut self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.tar
            .append_data(&mut h, path, data)
            .expect("append file");
        self
    }

    /// A regular file preceded by a PAX header carrying the extended attribute `name=value`.
    pub fn file_with_xattr(
        mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        name: &str,
        value: &[u8],
    ) -> Self {
        let mut record = Vec::new();
        let body_len = format!(" SCHILY.xattr.{name}=").len() + value.len() + 1;
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        record.extend_from_slice(format!("{len} SCHILY.xattr.{name}=").as_bytes());
        record.extend_from_slice(value);
        record.push(b'\n');
        let mut h = Self::header(tar::EntryType::XHeader, 0o644, record.len() as u64);
        self.tar
            .append_data(&mut h, "PaxHeaders/x", &record[..])
            .expect("append pax");
        self.file(path, data, mode)
    }

    /// A symlink `path -> target`.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("append symlink");
        self
    }

    /// A hard link `path` to the earlier entry `target`.
    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("append hard link");
        self
    }

    /// A character device.
    pub fn char_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.tar
            .append_data(&mut h, path, io::empty())
            .expect("append device");
        self
    }

    /// A block device.
    pub fn block_device(mut self, path: &str, major: u32, minor: u32) -> Self {
        let mut h = Self::header(tar::EntryType::Block, 0o660, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.tar
            .append_data(&mut h, path, io::empty())
            .expect("append device");
        self
    }

    /// A named pipe.
    pub fn fifo(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Fifo, 0o644, 0);
        self.tar
            .append_data(&mut h, path, io::empty())
            .expect("append fifo");
        self
    }

    /// A raw entry: a header of `kind` named `name` (at most 100 bytes) with `data`, written
    /// as is (PAX extension headers, GNU long names, hostile sizes).
    pub fn raw_entry(mut self, kind: tar::EntryType, name: &[u8], data: &[u8]) -> Self {
        let mut h = Self::header(kind, 0o644, data.len() as u64);
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.name[..name.len()].copy_from_slice(name);
        }
        h.set_cksum();
        self.tar.append(&h, data).expect("append raw entry");
        self
    }

    /// A whiteout of `path` (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, b"", 0o644)
    }

    /// An opaque marker for directory `dir` (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir: &str) -> Self {
        self.file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            b"",
            0o644,
        )
    }

    /// A regular file whose header name is written verbatim (for hostile paths such as
    /// `../escape` that the tar builder itself refuses).
    pub fn raw_file(mut self, raw_path: &[u8], data: &[u8]) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.name[..raw_path.len()].copy_from_slice(raw_path);
        }
        h.set_cksum();
        self.tar.append(&h, data).expect("append raw");
        self
    }

    /// The finished (uncompressed) tar.
    pub fn build(self) -> Vec<u8> {
        self.tar.into_inner().expect("finish tar")
    }
}

/// A layer as stored: blob bytes plus the diff ID of its uncompressed tar.
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Vec<u8>,
    pub diff_id: String,
    pub compression: Compression,
}

impl Layer {
    /// An uncompressed layer.
    pub fn plain(tar: Vec<u8>) -> Self {
        Self {
            diff_id: sha256_digest(&tar),
            blob: tar,
            compression: Compression::None,
        }
    }

    /// A gzip-compressed layer.
    pub fn gzip(tar: Vec<u8>) -> Self {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&tar).expect("gzip");
        Self {
            diff_id: sha256_digest(&tar),
            blob: enc.finish().expect("gzip"),
            compression: Compression::Gzip,
        }
    }

    /// A zstd-compressed layer.
    pub fn zstd(tar: Vec<u8>) -> Self {
        Self {
            diff_id: sha256_digest(&tar),
            blob: zstd::encode_all(&tar[..], 3).expect("zstd"),
            compression: Compression::Zstd,
        }
    }

    /// Digest of the blob.
    pub fn digest(&self) -> String {
        sha256_digest(&self.blob)
    }
}

/// An image: config bytes and layers.
#[derive(Debug, Clone)]
pub struct TestImage {
    pub config: Vec<u8>,
    pub layers: Vec<Layer>,
}

impl TestImage {
    /// An image for `linux/<architecture>` whose config's `config` object is `run_config`
    /// (`{"Cmd": [...], "Env": [...], ...}`).
    pub fn new(architecture: &str, run_config: Value, layers: Vec<Layer>) -> Self {
        Self::with_diff_ids(
            architecture,
            run_config,
            layers.iter().map(|l| l.diff_id.clone()).collect(),
            layers,
        )
    }

    /// As [`new`](Self::new) with explicit (possibly wrong) diff IDs.
    pub fn with_diff_ids(
        architecture: &str,
        run_config: Value,
        diff_ids: Vec<String>,
        layers: Vec<Layer>,
    ) -> Self {
        let config = json!({
            "architecture": architecture,
            "os": "linux",
            "config": run_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        Self {
            config: serde_json::to_vec(&config).expect("config"),
            layers,
        }
    }

    /// `sha256:` of the config: the image id.
    pub fn config_digest(&self) -> String {
        sha256_digest(&self.config)
    }

    /// The OCI manifest of this image.
    pub fn manifest(&self) -> Vec<u8> {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| {
                json!({
                    "mediaType": l.compression.oci_media_type(),
                    "digest": l.digest(),
                    "size": l.blob.len(),
                })
            })
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": self.config_digest(),
                "size": self.config.len(),
            },
            "layers": layers,
        }))
        .expect("manifest")
    }
}

fn append(tar: &mut tar::Builder<impl Write>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    tar.append_data(&mut h, path, data)
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

/// Writes a docker archive (`docker save` format) of `images`, each with its repo tags.
/// With `legacy`, configs are `<hex>.json` and layers `<hex>/layer.tar`; otherwise both are
/// `blobs/sha256/<hex>` (docker 25+).
pub fn write_docker_archive(
    out: &Path,
    images: &[(&[&str], &TestImage)],
    legacy: bool,
) -> io::Result<()> {
    let mut tar = tar::Builder::new(fs::File::create(out)?);
    let mut manifest = Vec::new();
    let mut written = std::collections::HashSet::new();
    for (tags, image) in images {
        let config_path = if legacy {
            format!("{}.json", hex_of(&image.config_digest()))
        } else {
            format!("blobs/sha256/{}", hex_of(&image.config_digest()))
        };
        if written.insert(config_path.clone()) {
            append(&mut tar, &config_path, &image.config)?;
        }
        let mut layer_paths = Vec::new();
        for l in &image.layers {
            let p = if legacy {
                format!("{}/layer.tar", hex_of(&l.digest()))
            } else {
                format!("blobs/sha256/{}", hex_of(&l.digest()))
            };
            if written.insert(p.clone()) {
                append(&mut tar, &p, &l.blob)?;
            }
            layer_paths.push(p);
        }
        manifest.push(json!({"Config": config_path, "RepoTags": tags, "Layers": layer_paths}));
    }
    append(&mut tar, "manifest.json", &serde_json::to_vec(&manifest)?)?;
    tar.into_inner()?.sync_all()
}

/// One reference of an OCI layout: a single image or a multi-platform index.
pub enum OciEntry<'a> {
    Image {
        ref_name: &'a str,
        image: &'a TestImage,
    },
    Index {
        ref_name: &'a str,
        images: Vec<&'a TestImage>,
    },
}

fn write_blob(dir: &Path, bytes: &[u8]) -> io::Result<String> {
    let digest = sha256_digest(bytes);
    fs::write(dir.join("blobs/sha256").join(hex_of(&digest)), bytes)?;
    Ok(digest)
}

fn image_arch(image: &TestImage) -> (String, String) {
    let v: Value = serde_json::from_slice(&image.config).expect("config json");
    (
        v["os"].as_str().unwrap_or("linux").into(),
        v["architecture"].as_str().unwrap_or("").into(),
    )
}

fn write_image_blobs(dir: &Path, image: &TestImage) -> io::Result<(String, usize)> {
    write_blob(dir, &image.config)?;
    for l in &image.layers {
        write_blob(dir, &l.blob)?;
    }
    let m = image.manifest();
    Ok((write_blob(dir, &m)?, m.len()))
}

/// Writes an OCI layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
pub fn write_oci_layout(dir: &Path, entries: &[OciEntry<'_>]) -> io::Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut descs = Vec::new();
    for e in entries {
        match e {
            OciEntry::Image { ref_name, image } => {
                let (digest, size) = write_image_blobs(dir, image)?;
                descs.push(json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest, "size": size,
                    "annotations": {"org.opencontainers.image.ref.name": ref_name},
                }));
            }
            OciEntry::Index { ref_name, images } => {
                let mut manifests = Vec::new();
                for image in images {
                    let (digest, size) = write_image_blobs(dir, image)?;
                    let (os, arch) = image_arch(image);
                    manifests.push(json!({
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": digest, "size": size,
                        "platform": {"os": os, "architecture": arch},
                    }));
                }
                let index = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": manifests,
                }))?;
                let digest = write_blob(dir, &index)?;
                descs.push(json!({
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": digest, "size": index.len(),
                    "annotations": {"org.opencontainers.image.ref.name": ref_name},
                }));
            }
        }
    }
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)
}

/// Writes an OCI archive: a tar of an OCI layout.
pub fn write_oci_archive(out: &Path, entries: &[OciEntry<'_>]) -> io::Result<()> {
    let layout = tempfile::tempdir()?;
    write_oci_layout(layout.path(), entries)?;
    let mut tar = tar::Builder::new(fs::File::create(out)?);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(".", layout.path())?;
    tar.into_inner()?.sync_all()
}

/// Applets linked to busybox in [`build_busybox_archive`]'s image.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "httpd", "wget", "nc", "date", "ls", "true", "false", "env",
    "id", "hostname", "ps", "kill", "mkdir", "rm", "touch", "test", "wc", "grep", "head",
];

/// Where the static busybox is expected (Debian's `busybox-static`).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Builds a one-layer busybox image from the host's `/bin/busybox` (a static build) as a docker
/// archive at `out`, tagged `reference`: `bin/busybox`, applet symlinks ([`BUSYBOX_APPLETS`]),
/// the usual empty top-level directories, `Cmd ["sh"]` and a `PATH`.
pub fn build_busybox_archive(out: &Path, reference: &str) -> io::Result<()> {
    let busybox = fs::read(HOST_BUSYBOX)?;
    let mut layer = LayerBuilder::new();
    for dir in ["bin", "dev", "etc", "proc", "sys", "root", "var", "usr"] {
        layer = layer.dir(dir, 0o755);
    }
    layer = layer
        .dir("tmp", 0o1777)
        .file("bin/busybox", &busybox, 0o755);
    for applet in BUSYBOX_APPLETS {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    layer = layer
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\nnobody:x:65534:\n", 0o644);
    let image = TestImage::new(
        goarch(std::env::consts::ARCH),
        json!({
            "Cmd": ["sh"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        }),
        vec![Layer::plain(layer.build())],
    );
    write_docker_archive(out, &[(&[reference], &image)], true)
}
