//! Fuzz targets of the image store's untrusted inputs (issue 16 item 3):
//!
//! - `image_documents`: manifests, indexes and configs (seeds `fuzz/seeds/image-docs`) through
//!   the parsers a pull and an import use, the pull's document sniffing, platform selection and
//!   the store's commit of a manifest and config: no panic, and a rejection is an error.
//! - `layer_unpacking`: layer tars (seeds built here: files, directories, symlinks, hard links,
//!   whiteouts, an opaque marker, PAX xattrs), edited, then stored plain, gzip or zstd, applied
//!   in both whiteout modes: no panic, and nothing appears outside the target directory.

#[path = "../../../fuzz/mutate.rs"]
mod mutate;

use std::fs;
use std::path::Path;

use crate::store::{parse_config, parse_index, parse_manifest};
use crate::testutil::{Layer, LayerBuilder};
use crate::unpack::{apply_layer, Compression, LayerSource, Mode, UnpackLimits};
use crate::{select_manifest, sha256_digest, ImageStore, Platform};

#[test]
fn image_documents() {
    let seeds = mutate::seeds(&["fuzz/seeds/image-docs"]);
    let runs = mutate::Runs::new("image_documents");
    let root = tempfile::tempdir().unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let platforms = [
        Platform::host(),
        Platform::new("linux", "arm64", Some("v8")),
    ];
    bolero::check!()
        .with_iterations(mutate::iterations(15_000))
        .with_max_len(mutate::MAX_RECIPE)
        .for_each(|recipe: &[u8]| {
            runs.hit();
            let data = mutate::mutate(&seeds, recipe);
            let _ = crate::pull::document_kind(&data);
            if let Ok(index) = parse_index(&data, "fuzz") {
                runs.accept();
                for p in &platforms {
                    if let Some(d) = select_manifest(&index, p) {
                        assert!(index.manifests().contains(d));
                    }
                }
            }
            if parse_manifest(&data, "fuzz").is_ok() {
                runs.accept();
                // No layer blob is in the store: a manifest must never commit.
                assert!(store.commit_image("fuzz:1", &data, &seeds[0]).is_err());
            }
            if parse_config(&data, "fuzz").is_ok() {
                runs.accept();
            }
        });
}

fn layer_seeds() -> Vec<Vec<u8>> {
    vec![
        LayerBuilder::new()
            .dir("etc", 0o755)
            .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
            .file_with_xattr("etc/attr", b"x", 0o644, "user.k", b"v")
            .symlink("etc/link", "passwd")
            .hardlink("etc/hard", "etc/passwd")
            .build(),
        LayerBuilder::new()
            .whiteout("etc/gone")
            .opaque("opt")
            .dir("opt", 0o700)
            .file("opt/x", b"x", 0o4755)
            .symlink("up", "../../..")
            .build(),
        LayerBuilder::new()
            .dir("a/b/c", 0o755)
            .file("a/b/c/d", &[7u8; 1500], 0o600)
            .fifo("a/p")
            .build(),
    ]
}

#[test]
fn layer_unpacking() {
    let seeds = layer_seeds();
    let runs = mutate::Runs::new("layer_unpacking");
    let limits = UnpackLimits {
        max_layer_size: 1 << 20,
        max_entries: 1000,
        max_header_size: 64 << 10,
        ..Default::default()
    };
    bolero::check!()
        .with_iterations(mutate::iterations(3_000))
        .with_max_len(mutate::MAX_RECIPE + 1)
        .for_each(|recipe: &[u8]| {
            runs.hit();
            let (pick, recipe) = recipe.split_first().map_or((0, recipe), |(p, r)| (*p, r));
            let tar = mutate::mutate(&seeds, recipe);
            let layer = match pick % 3 {
                0 => Layer::plain(tar),
                1 => Layer::gzip(tar),
                _ => Layer::zstd(tar),
            };
            let mut blob = layer.blob.clone();
            if pick & 0x80 != 0 && !blob.is_empty() {
                // Sometimes the compressed stream itself is damaged.
                let n = blob.len();
                blob[(pick as usize * 7) % n] ^= 0x5a;
            }
            let work = tempfile::tempdir().unwrap();
            let path = work.path().join("blob");
            fs::write(&path, &blob).unwrap();
            let target = work.path().join("root/target");
            fs::create_dir_all(&target).unwrap();
            let digest = sha256_digest(&blob);
            let src = LayerSource {
                path: &path,
                digest: &digest,
                size: blob.len() as u64,
                diff_id: &layer.diff_id,
                media_type: Compression::None.oci_media_type(),
            };
            let mode = if pick & 0x40 != 0 {
                Mode::Apply
            } else {
                Mode::Overlay
            };
            if apply_layer(&src, &target, mode, &limits, Default::default()).is_ok() {
                runs.accept();
            }
            let names = |p: &Path| -> Vec<String> {
                let mut v: Vec<String> = fs::read_dir(p)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                v
            };
            assert_eq!(names(work.path()), ["blob", "root"]);
            assert_eq!(names(&work.path().join("root")), ["target"]);
        });
}
