//! Tests of the store against archives and layouts built in the tests themselves.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use crate::testutil::*;
use crate::{Error, ImageStore, Platform};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn host_arch() -> String {
    Platform::host().architecture
}

/// Two layers: the base (gzip) has etc/{keep,gone}, opt/{a,b}, usr/bin/tool, a hardlink and a
/// symlink; the top (zstd) whites out etc/gone, makes opt opaque (adding opt/c) and adds
/// data/new owned by 1000:1000.
fn two_layer_image() -> TestImage {
    let base = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/keep", b"keep", 0o644)
        .file_with_xattr("etc/attr", b"x", 0o644, "user.staticlet", b"v1")
        .file("etc/gone", b"gone", 0o600)
        .dir("opt", 0o755)
        .file("opt/a", b"a", 0o644)
        .file("opt/b", b"b", 0o644)
        .dir("usr/bin", 0o755)
        .file("usr/bin/tool", b"#!/bin/sh\n", 0o4755)
        .hardlink("usr/bin/tool2", "usr/bin/tool")
        .symlink("usr/bin/link", "tool")
        .build();
    let top = LayerBuilder::new()
        .whiteout("etc/gone")
        .dir("opt", 0o755)
        .file("opt/c", b"c", 0o644)
        .opaque("opt")
        .file_owned("data/new", b"new", 0o640, 1000, 1000)
        .build();
    TestImage::new(
        &host_arch(),
        json!({
            "Entrypoint": ["/usr/bin/tool"],
            "Cmd": ["--serve", "x"],
            "Env": ["PATH=/usr/bin", "A=b"],
            "WorkingDir": "/data",
            "User": "1000:1000",
            "StopSignal": "SIGQUIT",
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "Labels": {"l": "v"},
        }),
        vec![Layer::gzip(base), Layer::zstd(top)],
    )
}

fn docker_archive(dir: &Path, tags: &[&str], image: &TestImage, legacy: bool) -> PathBuf {
    let path = dir.join(format!("docker-{}.tar", legacy));
    write_docker_archive(&path, &[(tags, image)], legacy).unwrap();
    path
}

fn blob_count(store: &ImageStore) -> usize {
    fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

fn layer_dirs(store: &ImageStore) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(store.root().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn docker_archive_import_gives_references_list_and_config() {
    let work = tmp();
    let image = two_layer_image();
    for legacy in [true, false] {
        let root = tmp();
        let store = ImageStore::open(root.path()).unwrap();
        let archive = docker_archive(
            work.path(),
            &["busybox:1", "localhost:5000/x/y"],
            &image,
            legacy,
        );
        let records = store.import(&archive).unwrap();
        let refs: Vec<&str> = records.iter().map(|r| r.reference.as_str()).collect();
        assert_eq!(
            refs,
            ["docker.io/library/busybox:1", "localhost:5000/x/y:latest"]
        );
        assert!(records
            .iter()
            .all(|r| r.config_digest == image.config_digest()));

        let list = store.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].repository, "docker.io/library/busybox");
        assert_eq!(list[0].tag.as_deref(), Some("1"));
        assert_eq!(list[1].repository, "localhost:5000/x/y");
        assert_eq!(list[1].tag.as_deref(), Some("latest"));
        assert_eq!(list[0].digest, records[0].manifest_digest);
        let size = image.config.len() + image.layers.iter().map(|l| l.blob.len()).sum::<usize>();
        assert_eq!(list[0].size, size as u64);
        assert_eq!(list[0].image_id, image.config_digest());

        let cfg = store.image_config("busybox:1").unwrap();
        assert_eq!(cfg.entrypoint, ["/usr/bin/tool"]);
        assert_eq!(cfg.cmd, ["--serve", "x"]);
        assert_eq!(cfg.env, ["PATH=/usr/bin", "A=b"]);
        assert_eq!(cfg.working_dir, "/data");
        assert_eq!(cfg.user, "1000:1000");
        assert_eq!(cfg.stop_signal, "SIGQUIT");
        assert_eq!(cfg.exposed_ports, ["53/udp", "8080/tcp"]);
        assert_eq!(cfg.labels.get("l").map(String::as_str), Some("v"));
        assert_eq!(cfg.platform.architecture, host_arch());
        assert_eq!(cfg.diff_ids.len(), 2);

        // Both layers were unpacked by the import; no temp dirs are left.
        assert_eq!(store.unpack_count(), 2);
        assert_eq!(layer_dirs(&store).len(), 2);
        assert_eq!(fs::read_dir(store.root().join("tmp")).unwrap().count(), 0);
    }
}

#[test]
fn image_status_by_tag_id_and_digest() {
    let work = tmp();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let image = two_layer_image();
    let archive = docker_archive(work.path(), &["busybox:1", "busybox:2"], &image, true);
    let recs = store.import(&archive).unwrap();
    let img = store.image_status("busybox:1").unwrap().unwrap();
    assert_eq!(img.id, image.config_digest());
    assert_eq!(
        img.repo_tags,
        ["docker.io/library/busybox:1", "docker.io/library/busybox:2"]
    );
    assert_eq!(
        img.repo_digests,
        [format!(
            "docker.io/library/busybox@{}",
            recs[0].manifest_digest
        )]
    );
    assert!(img.size > 0);
    assert_eq!(
        store.image_status(&image.config_digest()).unwrap().unwrap(),
        img
    );
    let by_digest = format!("busybox@{}", recs[0].manifest_digest);
    assert_eq!(store.image_status(&by_digest).unwrap().unwrap(), img);
    assert!(store.image_status("busybox:3").unwrap().is_none());
    assert!(store.image_status("other").unwrap().is_none());
    assert!(matches!(
        store.image_config("busybox:3"),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn flattened_rootfs_honours_whiteouts_and_opaque_dirs() {
    let work = tmp();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let archive = docker_archive(work.path(), &["app:1"], &two_layer_image(), false);
    store.import(&archive).unwrap();
    let dest = work.path().join("flat");
    store.flatten_rootfs("app:1", &dest).unwrap();
    assert_eq!(fs::read(dest.join("etc/keep")).unwrap(), b"keep");
    assert!(
        !dest.join("etc/gone").exists(),
        "whiteout removes the lower file"
    );
    assert!(!dest.join("etc/.wh.gone").exists());
    let mut opt: Vec<String> = fs::read_dir(dest.join("opt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    opt.sort();
    assert_eq!(
        opt,
        ["c"],
        "opaque dir hides the lower layer's entries only"
    );
    let tool = fs::metadata(dest.join("usr/bin/tool")).unwrap();
    assert_eq!(
        tool.permissions().mode() & 0o7777,
        0o4755,
        "set-uid mode preserved"
    );
    assert_eq!(
        tool.ino(),
        fs::metadata(dest.join("usr/bin/tool2")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(dest.join("usr/bin/link")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        xattr::get(dest.join("etc/attr"), "user.staticlet")
            .unwrap()
            .as_deref(),
        Some(&b"v1"[..]),
        "xattrs from PAX headers are applied"
    );
    let new = fs::metadata(dest.join("data/new")).unwrap();
    assert_eq!(
        (new.uid(), new.gid(), new.mode() & 0o777),
        (1000, 1000, 0o640)
    );
}

#[test]
fn unpacked_layers_hold_one_layer_each_with_overlay_whiteouts() {
    let work = tmp();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let archive = docker_archive(work.path(), &["app:1"], &two_layer_image(), true);
    store.import(&archive).unwrap();
    let layers = store.rootfs_layers("app:1").unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(
        store.unpack_count(),
        2,
        "rootfs_layers reuses what import unpacked"
    );
    let (base, top) = (&layers[0], &layers[1]);
    let cfg = store.image_config("app:1").unwrap();
    let chains = crate::chain_ids(&cfg.diff_ids).unwrap();
    assert_eq!(
        base,
        &store
            .root()
            .join("layers")
            .join(&chains[0][7..])
            .join("rootfs")
    );
    assert_eq!(
        top,
        &store
            .root()
            .join("layers")
            .join(&chains[1][7..])
            .join("rootfs")
    );
    assert_eq!(chains[0], cfg.diff_ids[0]);

    assert!(base.join("etc/gone").is_file());
    assert!(
        !top.join("etc/keep").exists(),
        "a layer dir holds only its own layer"
    );
    let wh = fs::symlink_metadata(top.join("etc/gone")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "whiteout is a character device"
    );
    assert_eq!(wh.rdev(), 0, "whiteout device is 0/0");
    assert!(!top.join("etc/.wh.gone").exists());
    assert_eq!(
        xattr::get(top.join("opt"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!top.join("opt/.wh..wh..opq").exists());
    assert!(top.join("opt/c").is_file());
    assert!(xattr::get(base.join("opt"), "trusted.overlay.opaque")
        .unwrap()
        .is_none());
    // The chain id dirs record what they hold.
    let meta_dir = base.parent().unwrap();
    assert_eq!(
        fs::read_to_string(meta_dir.join("diffid")).unwrap(),
        cfg.diff_ids[0]
    );
}

#[test]
fn multi_arch_index_resolves_to_the_store_platform() {
    let work = tmp();
    let mk = |arch: &str| {
        TestImage::new(
            arch,
            json!({"Cmd": [format!("i-am-{arch}")]}),
            vec![Layer::plain(
                LayerBuilder::new()
                    .file("arch", arch.as_bytes(), 0o644)
                    .build(),
            )],
        )
    };
    let (amd, arm) = (mk("amd64"), mk("arm64"));
    let single = mk("amd64");
    let entries = [
        OciEntry::Index {
            ref_name: "example.com/multi:1",
            images: vec![&arm, &amd],
        },
        OciEntry::Image {
            ref_name: "2",
            image: &single,
        },
    ];
    let layout = work.path().join("layout");
    write_oci_layout(&layout, &entries).unwrap();
    let archive = work.path().join("oci.tar");
    write_oci_archive(&archive, &entries).unwrap();

    for (arch, want) in [("amd64", &amd), ("arm64", &arm)] {
        for src in [&layout, &archive] {
            let root = tmp();
            let store =
                ImageStore::open_with_platform(root.path(), Platform::new("linux", arch, None))
                    .unwrap();
            let opts = crate::ImportOptions {
                repository: Some("example.com/single".into()),
                unpack: false,
            };
            let recs = store.import_with(src, &opts).unwrap();
            let refs: Vec<&str> = recs.iter().map(|r| r.reference.as_str()).collect();
            assert_eq!(refs, ["example.com/multi:1", "example.com/single:2"]);
            assert_eq!(recs[0].config_digest, want.config_digest(), "{arch}");
            assert_eq!(recs[0].platform.architecture, arch);
            assert!(recs[0].index_digest.is_some());
            assert_eq!(recs[1].index_digest, None);
            let cfg = store.image_config("example.com/multi:1").unwrap();
            assert_eq!(cfg.cmd, [format!("i-am-{arch}")]);
            // The list shows the index digest; the digest ref by index resolves.
            let list = store.list().unwrap();
            assert_eq!(Some(&list[0].digest), recs[0].index_digest.as_ref());
            let by_index = format!("example.com/multi@{}", list[0].digest);
            assert!(store.resolve(&by_index).unwrap().is_some());
            // Only the chosen platform's content is stored (the layout dir is not consumed).
            let dest = work
                .path()
                .join(format!("flat-{arch}-{}", store.unpack_count()));
            store.flatten_rootfs("example.com/multi:1", &dest).unwrap();
            assert_eq!(fs::read_to_string(dest.join("arch")).unwrap(), arch);
            fs::remove_dir_all(&dest).unwrap();
        }
        assert!(layout.join("index.json").is_file());
    }
    let root = tmp();
    let store =
        ImageStore::open_with_platform(root.path(), Platform::new("linux", "s390x", None)).unwrap();
    assert!(matches!(
        store.import(&layout).map_err(Error::into_root),
        Err(Error::NoMatchingPlatform { .. })
    ));
}

#[test]
fn diff_id_mismatch_is_rejected_and_nothing_unpacked_is_kept() {
    let work = tmp();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let layer = Layer::gzip(LayerBuilder::new().file("f", b"x", 0o644).build());
    let wrong = crate::sha256_digest(b"something else");
    let image = TestImage::with_diff_ids(&host_arch(), json!({}), vec![wrong.clone()], vec![layer]);
    let archive = docker_archive(work.path(), &["bad:1"], &image, true);
    match store.import(&archive).map_err(Error::into_root) {
        Err(Error::DiffIdMismatch { expected, .. }) => assert_eq!(expected, wrong),
        other => panic!("expected a diff id mismatch, got {other:?}"),
    }
    assert!(
        layer_dirs(&store).is_empty(),
        "no unpacked or staging dir is left"
    );
    assert!(
        store.records().unwrap().is_empty(),
        "a reference is only published when verified"
    );
    // Imported without unpacking, the mismatch shows when the layers are used.
    let opts = crate::ImportOptions {
        unpack: false,
        ..Default::default()
    };
    store.import_with(&archive, &opts).unwrap();
    assert!(matches!(
        store.rootfs_layers("bad:1"),
        Err(Error::DiffIdMismatch { .. })
    ));
    assert!(layer_dirs(&store).is_empty());
    assert!(matches!(
        store.flatten_rootfs("bad:1", &work.path().join("flat")),
        Err(Error::DiffIdMismatch { .. })
    ));
}

#[test]
fn corrupted_blobs_are_rejected() {
    let work = tmp();
    // A layout whose layer blob does not match its name: the import fails, nothing is kept.
    let image = two_layer_image();
    let layout = work.path().join("layout");
    write_oci_layout(
        &layout,
        &[OciEntry::Image {
            ref_name: "docker.io/x/y:1",
            image: &image,
        }],
    )
    .unwrap();
    let layer_path = layout
        .join("blobs/sha256")
        .join(&image.layers[0].digest()[7..]);
    let mut bytes = fs::read(&layer_path).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    fs::write(&layer_path, &bytes).unwrap();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    assert!(matches!(
        store.import(&layout).map_err(Error::into_root),
        Err(Error::DigestMismatch { .. })
    ));
    assert!(!store.blob_path(&image.layers[0].digest()).unwrap().exists());
    assert!(store.records().unwrap().is_empty());

    // A blob corrupted in the store after import is never unpacked or flattened.
    let archive = docker_archive(work.path(), &["ok:1"], &image, true);
    let store = ImageStore::open(root.path()).unwrap();
    let opts = crate::ImportOptions {
        unpack: false,
        ..Default::default()
    };
    store.import_with(&archive, &opts).unwrap();
    let blob = store.blob_path(&image.layers[1].digest()).unwrap();
    let mut bytes = fs::read(&blob).unwrap();
    bytes.truncate(bytes.len() - 3); // partial
    fs::write(&blob, &bytes).unwrap();
    assert!(store.rootfs_layers("ok:1").is_err());
    assert_eq!(
        layer_dirs(&store).len(),
        1,
        "only the intact base layer is unpacked"
    );
    assert!(store
        .flatten_rootfs("ok:1", &work.path().join("flat"))
        .is_err());
    // A corrupted config is refused as well.
    let cfg = store.blob_path(&image.config_digest()).unwrap();
    fs::write(&cfg, b"{}").unwrap();
    assert!(matches!(
        store.image_config("ok:1"),
        Err(Error::DigestMismatch { .. })
    ));
}

#[test]
fn blob_writer_verifies_and_commit_requires_layers() {
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let data = b"hello blob";
    let digest = crate::sha256_digest(data);
    let mut w = store
        .blob_writer(Some(&crate::sha256_digest(b"other")), None)
        .unwrap();
    std::io::Write::write_all(&mut w, data).unwrap();
    assert!(matches!(w.commit(), Err(Error::DigestMismatch { .. })));
    let mut w = store.blob_writer(Some(&digest), Some(3)).unwrap();
    std::io::Write::write_all(&mut w, data).unwrap();
    assert!(matches!(w.commit(), Err(Error::SizeMismatch { .. })));
    assert_eq!(
        blob_count(&store),
        0,
        "failed writes leave nothing, not even temp files"
    );
    let mut w = store
        .blob_writer(Some(&digest), Some(data.len() as u64))
        .unwrap();
    std::io::Write::write_all(&mut w, data).unwrap();
    assert_eq!(w.commit().unwrap().digest, digest);
    assert_eq!(store.read_blob(&digest).unwrap(), data);

    // commit_image is the puller's path: layers first, then manifest + config.
    let image = two_layer_image();
    let (manifest, config) = (image.manifest(), image.config.clone());
    assert!(matches!(
        store.commit_image("app:1", &manifest, &config),
        Err(Error::BlobNotFound { .. })
    ));
    for l in &image.layers {
        store.write_blob(&l.blob, Some(&l.digest())).unwrap();
    }
    assert!(
        store.commit_image("app:1", &manifest, b"{}").is_err(),
        "config must match"
    );
    let rec = store.commit_image("app:1", &manifest, &config).unwrap();
    assert_eq!(rec.manifest_digest, crate::sha256_digest(&manifest));
    assert_eq!(store.rootfs_layers("app:1").unwrap().len(), 2);
    assert!(matches!(
        store.commit_image("Bad Ref", &manifest, &config),
        Err(Error::InvalidReference { .. })
    ));
}

#[test]
fn path_traversal_entries_are_rejected() {
    let work = tmp();
    let outside = work.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let hostile = [
        LayerBuilder::new().raw_file(b"../escape", b"x").build(),
        LayerBuilder::new()
            .raw_file(b"a/../../escape", b"x")
            .build(),
        LayerBuilder::new()
            .symlink("link", outside.to_str().unwrap())
            .file("link/escape", b"x", 0o644)
            .build(),
        LayerBuilder::new()
            .symlink("link", outside.to_str().unwrap())
            .hardlink("stolen", "link/secret")
            .build(),
    ];
    fs::write(outside.join("secret"), b"s").unwrap();
    for (i, tar) in hostile.into_iter().enumerate() {
        let root = tmp();
        let store = ImageStore::open(root.path()).unwrap();
        let image = TestImage::new(&host_arch(), json!({}), vec![Layer::plain(tar)]);
        let archive = docker_archive(work.path(), &["evil:1"], &image, true);
        let err = store.import(&archive).unwrap_err().into_root();
        assert!(matches!(err, Error::UnsafePath { .. }), "case {i}: {err}");
        assert!(!work.path().join("escape").exists());
        assert!(!outside.join("escape").exists(), "case {i}");
        assert!(layer_dirs(&store).is_empty());
        assert!(store.records().unwrap().is_empty());
        let opts = crate::ImportOptions {
            unpack: false,
            ..Default::default()
        };
        store.import_with(&archive, &opts).unwrap();
        let flat = work.path().join(format!("flat{i}"));
        assert!(matches!(
            store.flatten_rootfs("evil:1", &flat),
            Err(Error::UnsafePath { .. })
        ));
        assert!(!outside.join("escape").exists());
    }
    // Absolute paths stay inside the target.
    let tar = LayerBuilder::new().raw_file(b"/abs/file", b"x").build();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let image = TestImage::new(&host_arch(), json!({}), vec![Layer::plain(tar)]);
    store
        .import(&docker_archive(work.path(), &["abs:1"], &image, true))
        .unwrap();
    assert!(store.rootfs_layers("abs:1").unwrap()[0]
        .join("abs/file")
        .is_file());
}

#[test]
fn device_nodes_are_created() {
    let work = tmp();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let tar = LayerBuilder::new()
        .dir("dev", 0o755)
        .char_device("dev/null", 1, 3)
        .build();
    let image = TestImage::new(&host_arch(), json!({}), vec![Layer::plain(tar)]);
    store
        .import(&docker_archive(work.path(), &["dev:1"], &image, true))
        .unwrap();
    let m =
        fs::symlink_metadata(store.rootfs_layers("dev:1").unwrap()[0].join("dev/null")).unwrap();
    assert!(m.file_type().is_char_device());
    assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
}

#[test]
fn concurrent_imports_unpack_each_layer_once() {
    let work = tmp();
    let root = tmp();
    let image = two_layer_image();
    let archive = Arc::new(docker_archive(work.path(), &["app:1"], &image, true));
    let root_path = Arc::new(root.path().to_path_buf());
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (archive, root_path) = (archive.clone(), root_path.clone());
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Each thread opens its own store, as separate processes would.
                let store = ImageStore::open(&root_path).unwrap();
                barrier.wait();
                store.import(&archive).unwrap();
                store.rootfs_layers("app:1").unwrap();
                store.unpack_count()
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, 2, "two layers, each unpacked exactly once");
    let store = ImageStore::open(root.path()).unwrap();
    assert_eq!(store.records().unwrap().len(), 1);
    assert_eq!(layer_dirs(&store).len(), 2);
    // 2 layers + config + manifest.
    assert_eq!(blob_count(&store), 4);
}

#[test]
fn remove_refuses_in_use_images_and_gc_removes_unreferenced_content() {
    let work = tmp();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let base = Layer::gzip(LayerBuilder::new().file("shared", b"s", 0o644).build());
    let a = TestImage::new(
        &host_arch(),
        json!({"Cmd": ["a"]}),
        vec![
            base.clone(),
            Layer::plain(LayerBuilder::new().file("a", b"a", 0o644).build()),
        ],
    );
    let b = TestImage::new(&host_arch(), json!({"Cmd": ["b"]}), vec![base.clone()]);
    store
        .import(&docker_archive(work.path(), &["a:1", "a:alias"], &a, true))
        .unwrap();
    store
        .import(&docker_archive(work.path(), &["b:1"], &b, true))
        .unwrap();
    assert_eq!(blob_count(&store), 6); // a: 2 layers + cfg + manifest; b: cfg + manifest
    assert_eq!(layer_dirs(&store).len(), 2);

    let uses_a = |r: &crate::ImageRecord| r.config_digest == a.config_digest();
    // Untagging one of two tags of an in-use image is fine and frees nothing.
    store.remove("a:alias", &uses_a).unwrap();
    assert_eq!(blob_count(&store), 6);
    // The last reference of an in-use image is kept.
    match store.remove("a:1", &uses_a) {
        Err(Error::InUse { reference }) => assert_eq!(reference, "docker.io/library/a:1"),
        other => panic!("expected in use, got {other:?}"),
    }
    assert!(store.resolve("a:1").unwrap().is_some());
    assert!(matches!(
        store.remove("nope", &|_| false),
        Err(Error::NotFound(_))
    ));

    let removed = store.remove("a:1", &|_| false).unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(
        blob_count(&store),
        3,
        "b's config, manifest and the shared layer remain"
    );
    assert!(store.blob_path(&base.digest()).unwrap().exists());
    assert_eq!(layer_dirs(&store), [base.diff_id[7..].to_string()]);
    assert_eq!(store.rootfs_layers("b:1").unwrap().len(), 1);

    // By image id: every reference of the image.
    store.remove(&b.config_digest(), &|_| false).unwrap();
    assert_eq!(blob_count(&store), 0);
    assert!(layer_dirs(&store).is_empty());
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn gc_waits_for_leases() {
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let lease = store.lease().unwrap();
    store.write_blob(b"orphan", None).unwrap();
    assert_eq!(
        store.try_gc().unwrap(),
        None,
        "a lease holds collection off"
    );
    drop(lease);
    let report = store.try_gc().unwrap().unwrap();
    assert_eq!(report.blobs_removed, 1);
    assert_eq!(report.bytes_freed, 6);
}

#[test]
fn reimport_replaces_references_and_keeps_old_image_by_digest() {
    let work = tmp();
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let mk = |cmd: &str| {
        TestImage::new(
            &host_arch(),
            json!({"Cmd": [cmd]}),
            vec![Layer::plain(
                LayerBuilder::new().file("f", cmd.as_bytes(), 0o644).build(),
            )],
        )
    };
    let (v1, v2) = (mk("one"), mk("two"));
    let old = store
        .import(&docker_archive(work.path(), &["app:latest"], &v1, true))
        .unwrap();
    // Same archive again: same image, nothing dangling.
    store
        .import(&docker_archive(work.path(), &["app:latest"], &v1, true))
        .unwrap();
    assert_eq!(store.records().unwrap().len(), 1);
    store
        .import(&docker_archive(work.path(), &["app"], &v2, true))
        .unwrap();
    assert_eq!(store.image_config("app").unwrap().cmd, ["two"]);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    let dangling = list.iter().find(|e| e.tag.is_none()).unwrap();
    assert_eq!(dangling.image_id, v1.config_digest());
    assert_eq!(
        dangling.reference,
        format!("docker.io/library/app@{}", old[0].manifest_digest)
    );
    // Prune keeps what is in use, then removes it.
    assert!(store.prune(&|_| true).unwrap().is_empty());
    assert_eq!(store.prune(&|_| false).unwrap().len(), 1);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(layer_dirs(&store).len(), 1);
}

#[test]
fn busybox_image_from_host_busybox() {
    if !Path::new(HOST_BUSYBOX).is_file() {
        eprintln!("skipped: {HOST_BUSYBOX} missing (apt-get install busybox-static)");
        return;
    }
    let work = tmp();
    let root = tmp();
    let archive = work.path().join("busybox.tar");
    build_busybox_archive(&archive, "busybox:latest").unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let recs = store.import(&archive).unwrap();
    assert_eq!(recs[0].reference, "docker.io/library/busybox:latest");
    let cfg = store.image_config("busybox").unwrap();
    assert_eq!(cfg.cmd, ["sh"]);
    let layers = store.rootfs_layers("busybox").unwrap();
    assert_eq!(layers.len(), 1);
    let bin = layers[0].join("bin");
    assert!(
        fs::metadata(bin.join("busybox"))
            .unwrap()
            .permissions()
            .mode()
            & 0o111
            != 0
    );
    for applet in ["sh", "sleep", "echo", "cat", "httpd", "wget"] {
        assert_eq!(
            fs::read_link(bin.join(applet)).unwrap(),
            Path::new("busybox")
        );
    }
    let flat = work.path().join("flat");
    store.flatten_rootfs("busybox", &flat).unwrap();
    let out = std::process::Command::new(flat.join("bin/busybox"))
        .args(["echo", "hello from the image"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the image\n"
    );
}

#[test]
fn compressed_archives_import_and_the_store_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ImageStore>();
    let work = tmp();
    let image = two_layer_image();
    let plain = docker_archive(work.path(), &["app:1"], &image, true);
    let gz = work.path().join("app.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(fs::File::create(&gz).unwrap(), Default::default());
    std::io::copy(&mut fs::File::open(&plain).unwrap(), &mut enc).unwrap();
    enc.finish().unwrap();
    let zst = work.path().join("app.tar.zst");
    fs::write(
        &zst,
        zstd::encode_all(&fs::read(&plain).unwrap()[..], 3).unwrap(),
    )
    .unwrap();
    for archive in [gz, zst] {
        let root = tmp();
        let store = ImageStore::open(root.path()).unwrap();
        let recs = store.import(&archive).unwrap();
        assert_eq!(recs[0].config_digest, image.config_digest());
    }
    // Not an image at all.
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let junk = work.path().join("junk.tar");
    fs::write(&junk, LayerBuilder::new().file("x", b"y", 0o644).build()).unwrap();
    assert!(matches!(
        store.import(&junk),
        Err(Error::InvalidArchive { .. })
    ));
}

/// Rewrites an archive with one byte of the entry at `path` flipped.
fn corrupt_entry(archive: &Path, path: &str) {
    let bytes = fs::read(archive).unwrap();
    let mut out = tar::Builder::new(Vec::new());
    let mut found = false;
    for entry in tar::Archive::new(&bytes[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        if name.trim_start_matches("./") == path {
            let n = data.len();
            data[n / 2] ^= 0xff;
            found = true;
        }
        let mut header = entry.header().clone();
        out.append_data(&mut header, &name, &data[..]).unwrap();
    }
    assert!(found, "{path} not in {}", archive.display());
    fs::write(archive, out.into_inner().unwrap()).unwrap();
}

/// The blobs of an archive are hashed as it is extracted (not read again before they are moved
/// into the store): one whose content does not match its name is refused, and nothing is kept.
#[test]
fn corrupted_blobs_in_archives_are_rejected() {
    let work = tmp();
    let image = TestImage::new(
        &host_arch(),
        json!({}),
        vec![
            Layer::plain(LayerBuilder::new().file("a", b"plain", 0o644).build()),
            Layer::gzip(LayerBuilder::new().file("b", b"gzip", 0o644).build()),
        ],
    );
    for layer in &image.layers {
        let blob = format!("blobs/sha256/{}", &layer.digest()[7..]);
        let oci = work.path().join("oci.tar");
        write_oci_archive(
            &oci,
            &[OciEntry::Image {
                ref_name: "docker.io/x/y:1",
                image: &image,
            }],
        )
        .unwrap();
        let docker = docker_archive(work.path(), &["x/y:1"], &image, false);
        for archive in [oci, docker] {
            corrupt_entry(&archive, &blob);
            let root = tmp();
            let store = ImageStore::open(root.path()).unwrap();
            let err = store.import(&archive).unwrap_err();
            assert!(
                matches!(err.into_root(), Error::DigestMismatch { .. }),
                "{}",
                archive.display()
            );
            assert!(!store.blob_path(&layer.digest()).unwrap().exists());
            assert!(store.records().unwrap().is_empty());
            assert!(layer_dirs(&store).is_empty());
        }
    }
}

/// An uncompressed layer is hashed once when it is unpacked (its blob is its tar stream): a
/// blob changed in the store after the import, same size, is still refused.
#[test]
fn corrupted_uncompressed_blob_is_not_unpacked() {
    let work = tmp();
    let image = TestImage::new(
        &host_arch(),
        json!({}),
        vec![Layer::plain(
            LayerBuilder::new()
                .file("data", &[7u8; 10000], 0o644)
                .build(),
        )],
    );
    let archive = docker_archive(work.path(), &["plain:1"], &image, true);
    let root = tmp();
    let store = ImageStore::open(root.path()).unwrap();
    let opts = crate::ImportOptions {
        unpack: false,
        ..Default::default()
    };
    store.import_with(&archive, &opts).unwrap();
    let blob = store.blob_path(&image.layers[0].digest()).unwrap();
    let mut bytes = fs::read(&blob).unwrap();
    bytes[600] ^= 0x01; // in the file's data
    fs::write(&blob, &bytes).unwrap();
    let err = store.rootfs_layers("plain:1").unwrap_err();
    assert!(
        matches!(
            err.into_root(),
            Error::DiffIdMismatch { .. } | Error::DigestMismatch { .. }
        ),
        "corrupted plain layer"
    );
    assert!(layer_dirs(&store).is_empty());
}
