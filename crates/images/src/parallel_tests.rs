//! Layers unpacked in parallel give what unpacking them one by one gives: the same layer
//! directories (each layer alone, overlayfs whiteouts included), the same flattened rootfs
//! (whiteouts and opaque directories of upper layers hide what lower layers put there), and the
//! same errors, limits included (which layer, which entry, which limit).

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use serde_json::json;

use crate::testutil::*;
use crate::unpack::{apply_layer_live, LayerSource, LayerUsage, Live, Mode, Progress};
use crate::{ImageStore, Platform, UnpackLimits};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn image_of(layers: Vec<Layer>) -> TestImage {
    TestImage::new(&Platform::host().architecture, json!({}), layers)
}

/// Everything under `dir`: path, kind, mode and content (character devices by their numbers,
/// the overlayfs opaque attribute of directories), sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let mode = m.mode() & 0o7777;
            let ft = m.file_type();
            if ft.is_dir() {
                let opaque = xattr::get(&p, "trusted.overlay.opaque").ok().flatten();
                out.push(format!("{rel}/ {mode:o} opaque={opaque:?}"));
                walk(base, &p, out);
            } else if ft.is_symlink() {
                out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()));
            } else if ft.is_char_device() {
                out.push(format!("{rel} char {}", m.rdev()));
            } else {
                let data = String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned();
                out.push(format!("{rel} {mode:o} {data:?} links={}", m.nlink()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Seven layers, alternately gzip, zstd and plain, each changing what the ones below left:
/// whiteouts of files and directories, opaque directories, files replaced by directories and
/// back, hard links and symlinks.
fn stacked_image() -> TestImage {
    let mut base = LayerBuilder::new().dir("etc", 0o755).dir("data", 0o755);
    for i in 0..50 {
        base = base.file(&format!("data/f{i}"), format!("base {i}").as_bytes(), 0o644);
    }
    let base = base
        .file("etc/conf", b"v0", 0o644)
        .dir("opt/tree/deep", 0o755)
        .file("opt/tree/deep/x", b"x", 0o600)
        .file("bin/tool", b"tool v0", 0o755)
        .hardlink("bin/tool-link", "bin/tool")
        .symlink("bin/sh", "tool")
        .build();
    let layers = vec![
        Layer::gzip(base),
        Layer::zstd(
            LayerBuilder::new()
                .whiteout("data/f1")
                .whiteout("opt/tree")
                .file("etc/conf", b"v1", 0o640)
                .build(),
        ),
        Layer::plain(
            LayerBuilder::new()
                .opaque("data")
                .dir("data", 0o750)
                .file("data/only", b"after opaque", 0o644)
                .build(),
        ),
        Layer::gzip(
            LayerBuilder::new()
                .dir("opt/tree", 0o700)
                .file("opt/tree/new", b"new", 0o644)
                .whiteout("bin/sh")
                .build(),
        ),
        Layer::zstd(
            LayerBuilder::new()
                .whiteout("etc/conf")
                .dir("etc/conf", 0o755)
                .file("etc/conf/d", b"dir now", 0o644)
                .build(),
        ),
        Layer::plain(
            LayerBuilder::new()
                .whiteout("etc/conf")
                .file("etc/conf", b"file again", 0o644)
                .symlink("bin/sh", "tool-link")
                .build(),
        ),
        Layer::gzip(
            LayerBuilder::new()
                .file("bin/tool", b"tool v6", 0o755)
                .whiteout("data/only")
                .build(),
        ),
    ];
    image_of(layers)
}

/// Imports `image` as `par/test:1` into a fresh store with `threads` and `limits`.
fn import(
    image: &TestImage,
    threads: usize,
    limits: UnpackLimits,
) -> (tempfile::TempDir, ImageStore, Result<(), String>) {
    let work = tmp();
    let archive = work.path().join("image.tar");
    write_docker_archive(&archive, &[(&["par/test:1"], image)], false).unwrap();
    let root = tmp();
    let store = ImageStore::open(root.path())
        .unwrap()
        .with_limits(limits)
        .with_unpack_threads(threads);
    let result = store
        .import(&archive)
        .map(|_| ())
        .map_err(|e| e.to_string());
    (root, store, result)
}

#[test]
fn parallel_unpack_gives_the_layers_and_rootfs_of_one_by_one() {
    let image = stacked_image();
    let (_root, one, result) = import(&image, 1, UnpackLimits::default());
    result.unwrap();
    let want_layers: Vec<Vec<String>> = one
        .rootfs_layers("par/test:1")
        .unwrap()
        .iter()
        .map(|d| tree(d))
        .collect();
    assert_eq!(want_layers.len(), 7);
    // Each directory holds its layer alone: the second has whiteouts, not the base's files.
    assert!(want_layers[1].contains(&"data/f1 char 0".to_string()));
    assert!(!want_layers[1].iter().any(|l| l.starts_with("data/f2")));
    let flat = tmp();
    one.flatten_rootfs("par/test:1", flat.path()).unwrap();
    let want_flat = tree(flat.path());
    // Upper layers' whiteouts and opaque directories hide what the lower ones put there.
    for hidden in [
        "data/f1 ",
        "data/f2 ",
        "data/only ",
        "opt/tree/deep",
        "etc/conf/",
    ] {
        assert!(
            !want_flat.iter().any(|l| l.starts_with(hidden)),
            "{hidden} in {want_flat:#?}"
        );
    }
    for shown in [
        "etc/conf 644 \"file again\"",
        "opt/tree/new 644 \"new\"",
        "bin/tool 755 \"tool v6\"",
        "bin/tool-link 755 \"tool v0\"",
        "bin/sh -> tool-link",
    ] {
        assert!(
            want_flat.iter().any(|l| l.starts_with(shown)),
            "{shown} not in {want_flat:#?}"
        );
    }
    for threads in [2, 3, 8] {
        for _ in 0..3 {
            let (_root, store, result) = import(&image, threads, UnpackLimits::default());
            result.unwrap();
            assert_eq!(store.unpack_count(), 7, "{threads} threads");
            let layers: Vec<Vec<String>> = store
                .rootfs_layers("par/test:1")
                .unwrap()
                .iter()
                .map(|d| tree(d))
                .collect();
            assert_eq!(layers, want_layers, "{threads} threads");
            let flat = tmp();
            store.flatten_rootfs("par/test:1", flat.path()).unwrap();
            assert_eq!(tree(flat.path()), want_flat, "{threads} threads");
        }
    }
}

fn sized(prefix: &str, files: usize, bytes: usize) -> Layer {
    let mut b = LayerBuilder::new();
    for i in 0..files {
        b = b.file(&format!("{prefix}{i}"), &vec![i as u8; bytes], 0o644);
    }
    Layer::gzip(b.build())
}

/// The layer with the second half of its blob cut off.
fn truncated(mut layer: Layer) -> Layer {
    let n = layer.blob.len() / 2;
    layer.blob.truncate(n);
    layer
}

#[test]
fn parallel_unpack_reports_the_errors_of_one_by_one() {
    let small = |image_size: u64, image_entries: u64| UnpackLimits {
        max_image_size: image_size,
        max_image_entries: image_entries,
        ..Default::default()
    };
    let bomb = Layer::zstd(
        LayerBuilder::new()
            .file("zeros", &vec![0; 4 << 20], 0o644)
            .build(),
    );
    let mut wrong_diff = sized("w", 2, 1000);
    wrong_diff.diff_id = sized("v", 2, 1000).diff_id;
    let cases: Vec<(&str, Vec<Layer>, UnpackLimits)> = vec![
        // Over the image size at the top layer; at the first layer; in the middle.
        (
            "top over",
            (0..4)
                .map(|i| sized(&format!("l{i}-"), 1, 300 << 10))
                .collect(),
            small(1 << 20, u64::MAX),
        ),
        (
            "first over",
            vec![
                sized("a", 1, 600 << 10),
                sized("b", 1, 1000),
                sized("c", 1, 1000),
            ],
            small(500 << 10, u64::MAX),
        ),
        (
            "middle over",
            vec![
                sized("a", 1, 400 << 10),
                sized("b", 1, 400 << 10),
                sized("c", 1, 10),
                sized("d", 1, 400 << 10),
            ],
            small(800 << 10, u64::MAX),
        ),
        // Over the image entry count.
        (
            "entries",
            vec![sized("a", 40, 1), sized("b", 40, 1), sized("c", 40, 1)],
            small(u64::MAX, 100),
        ),
        // A bad diff ID below a layer over the image size: the lower error.
        (
            "diff id below",
            vec![
                sized("a", 1, 1000),
                wrong_diff.clone(),
                sized("b", 1, 600 << 10),
                sized("c", 1, 600 << 10),
            ],
            small(1 << 20, u64::MAX),
        ),
        // A bad diff ID above a layer over the image size: the limit.
        (
            "diff id above",
            vec![
                sized("a", 1, 600 << 10),
                sized("b", 1, 600 << 10),
                wrong_diff.clone(),
            ],
            small(1 << 20, u64::MAX),
        ),
        // A bomb over the per-layer size in the middle, the image limit far.
        (
            "bomb",
            vec![sized("a", 1, 1000), bomb.clone(), sized("b", 1, 1000)],
            UnpackLimits {
                max_layer_size: 1 << 20,
                ..Default::default()
            },
        ),
        // The bomb where the image limit is the tighter one.
        (
            "bomb, image",
            vec![
                sized("a", 1, 600 << 10),
                sized("b", 1, 100),
                bomb.clone(),
                sized("c", 1, 100),
            ],
            UnpackLimits {
                max_layer_size: 2 << 20,
                max_image_size: 2 << 20,
                ..Default::default()
            },
        ),
        // One layer alone: a bomb, a truncated gzip stream, a truncated plain one.
        (
            "alone, bomb",
            vec![bomb],
            UnpackLimits {
                max_layer_size: 1 << 20,
                ..Default::default()
            },
        ),
        (
            "alone, truncated gzip",
            vec![truncated(sized("t", 3, 100 << 10))],
            UnpackLimits::default(),
        ),
        (
            "alone, truncated plain",
            vec![truncated(Layer::plain(
                LayerBuilder::new().file("p", &[1; 5000], 0o644).build(),
            ))],
            UnpackLimits::default(),
        ),
        // Exactly at the limits: accepted.
        (
            "at the limits",
            vec![sized("a", 50, 1), sized("b", 50, 1)],
            small(u64::MAX, 100),
        ),
    ];
    for (name, layers, limits) in cases {
        let image = image_of(layers);
        let (_root, _store, want) = import(&image, 1, limits);
        if name == "at the limits" {
            want.clone().unwrap();
        } else {
            assert!(want.is_err(), "{name}: accepted one by one");
        }
        for threads in [2, 4] {
            for _ in 0..3 {
                let (_root, store, got) = import(&image, threads, limits);
                assert_eq!(got, want, "{name}, {threads} threads");
                if got.is_err() {
                    // Nothing of a refused image stays (layers above the failing one included).
                    assert!(store.records().unwrap().is_empty(), "{name}");
                    let left: Vec<_> = fs::read_dir(store.root().join("layers")).unwrap().collect();
                    assert!(left.is_empty(), "{name}: layers left: {left:?}");
                }
            }
        }
    }
}

/// An image over the image limits is refused even when all its layers were unpacked before
/// (by an import under larger limits): they are checked with their recorded usage.
#[test]
fn layers_unpacked_before_count_against_the_image_limits() {
    let image = image_of(vec![sized("a", 1, 600 << 10), sized("b", 1, 600 << 10)]);
    let work = tmp();
    let archive = work.path().join("image.tar");
    write_docker_archive(&archive, &[(&["par/test:1"], &image)], false).unwrap();
    let root = tmp();
    ImageStore::open(root.path())
        .unwrap()
        .import(&archive)
        .unwrap();
    let limits = UnpackLimits {
        max_image_size: 1 << 20,
        ..Default::default()
    };
    for threads in [1, 2] {
        let store = ImageStore::open(root.path())
            .unwrap()
            .with_limits(limits)
            .with_unpack_threads(threads);
        let message = store.import(&archive).unwrap_err().to_string();
        for s in [
            "image size limit of 1048576",
            "\"b0\"",
            image.layers[1].digest().as_str(),
        ] {
            assert!(
                message.contains(s),
                "{threads} threads: {s:?} not in {message}"
            );
        }
        assert_eq!(store.unpack_count(), 0);
    }
}

/// A layer unpacked beside the layers below it stops as soon as what they have expanded to so
/// far and what it has expanded to exceed the image limits.
#[test]
fn live_check_stops_a_layer_past_what_the_layers_below_leave() {
    let layer = Layer::plain(
        LayerBuilder::new()
            .file("big", &vec![7; 64 << 10], 0o644)
            .build(),
    );
    let work = tmp();
    let blob = work.path().join("blob");
    fs::write(&blob, &layer.blob).unwrap();
    let digest = layer.digest();
    let src = LayerSource {
        path: &blob,
        digest: &digest,
        size: layer.blob.len() as u64,
        diff_id: &layer.diff_id,
        media_type: "application/vnd.oci.image.layer.v1.tar",
    };
    let limits = UnpackLimits {
        max_image_size: 1 << 20,
        max_image_entries: 10,
        ..Default::default()
    };
    let cases = [
        // (below so far, over?)
        (
            LayerUsage {
                size: 0,
                entries: 0,
            },
            false,
        ),
        (
            LayerUsage {
                size: (1 << 20) - (32 << 10),
                entries: 0,
            },
            true,
        ),
        (
            LayerUsage {
                size: 0,
                entries: 10,
            },
            true,
        ),
    ];
    for (below, over) in cases {
        let progress = [Progress::default(), Progress::default()];
        progress[0].set(below);
        let live = Live {
            below: &progress[..1],
            me: &progress[1],
        };
        let target = tempfile::tempdir_in(work.path()).unwrap();
        let result = apply_layer_live(
            &src,
            target.path(),
            Mode::Overlay,
            &limits,
            LayerUsage::default(),
            Some(&live),
        );
        assert_eq!(result.is_err(), over, "{below:?}: {result:?}");
        assert_eq!(progress[1].over_image(), over, "{below:?}");
        if over {
            let message = result.unwrap_err().to_string();
            assert!(message.contains("image"), "{message}");
        } else {
            assert_eq!(progress[1].usage(), result.unwrap());
        }
    }
}
