//! Hostile layers, images and registries (issue 16 item 4). Every case is built in code and
//! tried both ways an image arrives: imported (a docker archive) and pulled (from an in-process
//! registry, which can also misbehave: wrong content, lying sizes, truncated or stalled
//! responses).
//!
//! A rejected case must fail with an error naming the image and the entry, write nothing
//! outside the store (a canary directory, the target of the escapes, is compared before and
//! after) and leave nothing behind (no reference, blob, unpacked layer or temp file). An
//! accepted case must land inside the store, as checked on the unpacked layer.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::testutil::{write_docker_archive, Layer, LayerBuilder, TestImage};
use crate::unpack::UnpackLimits;
use crate::{ImageStore, Platform, PullOptions, Puller};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// What a hostile image's layers are made of, given the canary directory they aim at.
type Build = Box<dyn Fn(&Path) -> Vec<Layer>>;
/// A check of an accepted layer: its unpacked directory and the canary.
type Check = fn(&Path, &Path);

enum Expect {
    /// Refused; the error shows each of these.
    Reject(&'static [&'static str]),
    /// Unpacked, safely.
    Accept(Check),
}

struct Case {
    name: &'static str,
    layers: Build,
    limits: UnpackLimits,
    expect: Expect,
}

fn case(name: &'static str, expect: Expect, layer: impl Fn(&Path) -> Layer + 'static) -> Case {
    layers_case(name, expect, move |canary| vec![layer(canary)])
}

/// A case of an image of several layers.
fn layers_case(
    name: &'static str,
    expect: Expect,
    layers: impl Fn(&Path) -> Vec<Layer> + 'static,
) -> Case {
    Case {
        name,
        layers: Box::new(layers),
        limits: UnpackLimits::default(),
        expect,
    }
}

fn plain(b: LayerBuilder) -> Layer {
    Layer::plain(b.build())
}

fn c(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// A PAX extended header entry holding one record `comment=<n bytes>`.
fn pax_record(n: usize) -> Vec<u8> {
    let body = format!(" comment={}\n", "a".repeat(n));
    let mut len = body.len() + 1;
    while len != body.len() + len.to_string().len() {
        len = body.len() + len.to_string().len();
    }
    format!("{len}{body}").into_bytes()
}

fn small_limits() -> UnpackLimits {
    UnpackLimits {
        max_layer_size: 1 << 20,
        max_entries: 100,
        ..Default::default()
    }
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let mut v = vec![
        case("dotdot", Reject(&["../escape", "parent directory"]), |_| {
            plain(LayerBuilder::new().raw_file(b"../escape", b"x"))
        }),
        case("dotdot-nested", Reject(&["a/../../escape"]), |_| {
            plain(LayerBuilder::new().raw_file(b"a/../../escape", b"x"))
        }),
        case(
            "symlink-then-file",
            Reject(&["link/escape", "symlink"]),
            |canary| {
                plain(LayerBuilder::new().symlink("link", c(canary)).file(
                    "link/escape",
                    b"x",
                    0o644,
                ))
            },
        ),
        case(
            "relative-symlink-then-file",
            Reject(&["a/link/escape", "symlink"]),
            |canary| {
                plain(
                    LayerBuilder::new()
                        .dir("a", 0o755)
                        .symlink("a/link", &format!("../../../../../../../..{}", c(canary)))
                        .file("a/link/escape", b"x", 0o644),
                )
            },
        ),
        case(
            "symlink-then-dir",
            Reject(&["link/made", "symlink"]),
            |canary| {
                plain(
                    LayerBuilder::new()
                        .symlink("link", c(canary))
                        .dir("link/made", 0o755),
                )
            },
        ),
        case("hardlink-dotdot", Reject(&["stolen"]), |_| {
            plain(LayerBuilder::new().hardlink("stolen", "../canary/secret"))
        }),
        case(
            "hardlink-through-symlink",
            Reject(&["stolen", "symlink"]),
            |canary| {
                plain(
                    LayerBuilder::new()
                        .symlink("link", c(canary))
                        .hardlink("stolen", "link/secret"),
                )
            },
        ),
        case(
            "hardlink-absolute-outside",
            Reject(&["stolen", "hard link target"]),
            |canary| {
                plain(LayerBuilder::new().hardlink("stolen", &format!("{}/secret", c(canary))))
            },
        ),
        case(
            "whiteout-through-symlink",
            Reject(&["link/secret", "symlink"]),
            |canary| {
                plain(
                    LayerBuilder::new()
                        .symlink("link", c(canary))
                        .whiteout("link/secret"),
                )
            },
        ),
        case(
            "opaque-through-symlink",
            Reject(&["link/.wh..wh..opq", "symlink"]),
            |canary| {
                plain(
                    LayerBuilder::new()
                        .symlink("link", c(canary))
                        .opaque("link"),
                )
            },
        ),
        case("huge-pax-header", Reject(&["header size", "first"]), |_| {
            plain(
                LayerBuilder::new()
                    .file("first", b"1", 0o644)
                    .raw_entry(
                        tar::EntryType::XHeader,
                        b"PaxHeaders/big",
                        &pax_record(2 << 20),
                    )
                    .file("after", b"x", 0o644),
            )
        }),
        case(
            "huge-gnu-long-name",
            Reject(&["header size", "first"]),
            |_| {
                plain(
                    LayerBuilder::new()
                        .file("first", b"1", 0o644)
                        .raw_entry(
                            tar::EntryType::GNULongName,
                            b"././@LongLink",
                            &vec![b'n'; 2 << 20],
                        )
                        .file("after", b"x", 0o644),
                )
            },
        ),
        case("truncated-layer", Reject(&["cannot unpack layer"]), |_| {
            let full = Layer::gzip(
                LayerBuilder::new()
                    .file("big", &vec![7u8; 256 << 10], 0o644)
                    .build(),
            );
            let mut blob = full.blob.clone();
            blob.truncate(blob.len() / 2);
            Layer { blob, ..full }
        }),
        case("diff-id-mismatch", Reject(&["diff id mismatch"]), |_| {
            let mut l = plain(LayerBuilder::new().file("f", b"x", 0o644));
            l.diff_id = crate::sha256_digest(b"another layer");
            l
        }),
        case(
            "absolute-name",
            Accept(|layer, canary| {
                let inside = layer.join(canary.strip_prefix("/").unwrap()).join("abs");
                assert_eq!(fs::read(inside).unwrap(), b"in");
            }),
            |canary| {
                plain(LayerBuilder::new().raw_file(format!("{}/abs", c(canary)).as_bytes(), b"in"))
            },
        ),
        case(
            "symlink-replaced-by-file",
            Accept(|layer, _| {
                let m = fs::symlink_metadata(layer.join("x")).unwrap();
                assert!(m.is_file());
                assert_eq!(fs::read(layer.join("x")).unwrap(), b"mine");
            }),
            |canary| {
                plain(
                    LayerBuilder::new()
                        .symlink("x", &format!("{}/secret", c(canary)))
                        .file("x", b"mine", 0o644),
                )
            },
        ),
        case(
            "file-over-directory",
            Accept(|layer, _| assert_eq!(fs::read(layer.join("d")).unwrap(), b"file")),
            |_| {
                plain(
                    LayerBuilder::new()
                        .dir("d", 0o755)
                        .file("d/x", b"x", 0o644)
                        .file("d", b"file", 0o644),
                )
            },
        ),
        case(
            "directory-over-file",
            Accept(|layer, _| {
                assert!(layer.join("f").is_dir());
                assert_eq!(fs::read(layer.join("f/y")).unwrap(), b"y");
            }),
            |_| {
                plain(
                    LayerBuilder::new()
                        .file("f", b"x", 0o644)
                        .dir("f", 0o755)
                        .file("f/y", b"y", 0o644),
                )
            },
        ),
        case(
            "symlink-over-directory",
            Accept(|layer, _| {
                assert!(fs::symlink_metadata(layer.join("d"))
                    .unwrap()
                    .file_type()
                    .is_symlink());
            }),
            |canary| {
                plain(
                    LayerBuilder::new()
                        .dir("d", 0o755)
                        .file("d/x", b"x", 0o644)
                        .symlink("d", c(canary)),
                )
            },
        ),
        case(
            "device-nodes",
            Accept(|layer, _| {
                if !nix::unistd::geteuid().is_root() {
                    // Without CAP_MKNOD they are skipped, as containerd does in a user namespace.
                    assert!(!layer.join("dev/mem").exists());
                    return;
                }
                let t = |p: &str| fs::symlink_metadata(layer.join(p)).unwrap().file_type();
                assert!(t("dev/mem").is_char_device());
                assert!(t("dev/sda").is_block_device());
                assert!(t("run/fifo").is_fifo());
            }),
            |_| {
                plain(
                    LayerBuilder::new()
                        .dir("dev", 0o755)
                        .char_device("dev/mem", 1, 1)
                        .block_device("dev/sda", 8, 0)
                        .dir("run", 0o755)
                        .fifo("run/fifo"),
                )
            },
        ),
    ];
    let bomb = || {
        LayerBuilder::new()
            .file("zeros", &vec![0u8; 8 << 20], 0o644)
            .build()
    };
    let mut limited = vec![
        case("gzip-bomb", Reject(&["layer size", "zeros"]), move |_| {
            Layer::gzip(bomb())
        }),
        case("zstd-bomb", Reject(&["layer size", "zeros"]), move |_| {
            Layer::zstd(bomb())
        }),
        case("too-many-entries", Reject(&["entry count", "f100"]), |_| {
            let mut b = LayerBuilder::new();
            for i in 0..200 {
                b = b.file(&format!("f{i}"), b"", 0o644);
            }
            Layer::gzip(b.build())
        }),
    ];
    for l in &mut limited {
        l.limits = small_limits();
    }
    v.extend(limited);
    // Layers each within the per-layer limits, together over the image's: 4 layers of 300 KiB
    // (308,736 bytes of tar each) under 1 MiB, 3 layers of 40 entries under 100.
    let mut image_limited = vec![
        layers_case(
            "image-size",
            Reject(&["image size limit of 1048576", "\"l3\""]),
            |_| {
                (0..4)
                    .map(|i| {
                        Layer::gzip(
                            LayerBuilder::new()
                                .file(&format!("l{i}"), &vec![i as u8; 300 << 10], 0o644)
                                .build(),
                        )
                    })
                    .collect()
            },
        ),
        layers_case(
            "image-entries",
            Reject(&["image entry count limit of 100", "\"c20\""]),
            |_| {
                ["a", "b", "c"]
                    .iter()
                    .map(|p| {
                        let mut b = LayerBuilder::new();
                        for i in 0..40 {
                            b = b.file(&format!("{p}{i}"), p.as_bytes(), 0o644);
                        }
                        Layer::gzip(b.build())
                    })
                    .collect()
            },
        ),
        // Exactly at the image limits: accepted.
        layers_case(
            "image-at-the-limits",
            Accept(|layer, _| assert!(layer.join("a0").exists())),
            |_| {
                ["a", "b"]
                    .iter()
                    .map(|p| {
                        let mut b = LayerBuilder::new();
                        for i in 0..50 {
                            b = b.file(&format!("{p}{i}"), p.as_bytes(), 0o644);
                        }
                        Layer::gzip(b.build())
                    })
                    .collect()
            },
        ),
    ];
    for l in &mut image_limited {
        l.limits = UnpackLimits {
            max_image_size: 1 << 20,
            max_image_entries: 100,
            ..Default::default()
        };
    }
    v.extend(image_limited);
    v
}

// ---- harness ------------------------------------------------------------------------------

/// Everything under `dir`: path, kind and content, to compare before and after.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(base).unwrap().to_path_buf();
            if m.is_dir() {
                out.push((rel, "dir".into()));
                walk(base, &p, out);
            } else if m.file_type().is_symlink() {
                out.push((rel, format!("-> {}", fs::read_link(&p).unwrap().display())));
            } else {
                out.push((rel, String::from_utf8_lossy(&fs::read(&p).unwrap()).into()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// A work directory with a canary directory inside.
fn canary_dir() -> (tempfile::TempDir, PathBuf) {
    let work = tmp();
    let canary = work.path().join("canary");
    fs::create_dir_all(canary.join("sub")).unwrap();
    fs::write(canary.join("secret"), b"secret").unwrap();
    fs::write(canary.join("sub/file"), b"file").unwrap();
    (work, canary)
}

fn names(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The store holds nothing: no reference, blob, unpacked layer or temp file.
fn assert_store_empty(store: &ImageStore, what: &str) {
    assert!(store.records().unwrap().is_empty(), "{what}: a reference");
    for sub in ["blobs/sha256", "layers", "tmp"] {
        assert_eq!(
            names(&store.root().join(sub)),
            Vec::<String>::new(),
            "{what}: left in {sub}"
        );
    }
}

fn assert_outcome(
    case: &Case,
    how: &str,
    store: &ImageStore,
    reference: &str,
    result: Result<(), String>,
    canary: &Path,
) {
    let what = format!("{} ({how})", case.name);
    match (&case.expect, result) {
        (Expect::Reject(shows), Err(message)) => {
            assert!(
                message.contains(&format!("hostile/{}:1", case.name)),
                "{what}: the error names the image: {message}"
            );
            for s in *shows {
                assert!(message.contains(s), "{what}: {s:?} not in {message}");
            }
            assert_store_empty(store, &what);
        }
        (Expect::Reject(_), Ok(())) => panic!("{what}: accepted"),
        (Expect::Accept(check), Ok(())) => {
            let layers = store.rootfs_layers(reference).unwrap();
            check(&layers[0], canary);
        }
        (Expect::Accept(_), Err(message)) => panic!("{what}: refused: {message}"),
    }
}

fn image_of(layers: Vec<Layer>) -> TestImage {
    TestImage::new(&Platform::host().architecture, json!({}), layers)
}

#[test]
fn hostile_layers_by_import() {
    for case in cases() {
        let (work, canary) = canary_dir();
        let before = snapshot(&canary);
        let root = tmp();
        let store = ImageStore::open(root.path())
            .unwrap()
            .with_limits(case.limits);
        let image = image_of((case.layers)(&canary));
        let reference = format!("hostile/{}:1", case.name);
        let archive = work.path().join("image.tar");
        write_docker_archive(&archive, &[(&[reference.as_str()], &image)], false).unwrap();
        let result = store
            .import(&archive)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_outcome(&case, "import", &store, &reference, result, &canary);
        assert_eq!(snapshot(&canary), before, "{}: canary changed", case.name);
        assert!(!work.path().join("escape").exists(), "{}", case.name);
    }
}

/// The image limits count the layers an image shares with images already in the store (their
/// recorded usage), not only the layers it unpacks itself.
#[test]
fn image_limits_count_layers_already_unpacked() {
    let layers: Vec<Layer> = (0..4)
        .map(|i| {
            Layer::gzip(
                LayerBuilder::new()
                    .file(&format!("l{i}"), &vec![i as u8; 300 << 10], 0o644)
                    .build(),
            )
        })
        .collect();
    let root = tmp();
    let work = tmp();
    let store = ImageStore::open(root.path())
        .unwrap()
        .with_limits(UnpackLimits {
            max_image_size: 1 << 20,
            ..Default::default()
        });
    let three = image_of(layers[..3].to_vec());
    let archive = work.path().join("three.tar");
    write_docker_archive(&archive, &[(&["small/three:1"], &three)], false).unwrap();
    store.import(&archive).unwrap();
    assert_eq!(store.rootfs_layers("small/three:1").unwrap().len(), 3);

    let four = image_of(layers);
    let archive = work.path().join("four.tar");
    write_docker_archive(&archive, &[(&["small/four:1"], &four)], false).unwrap();
    let message = store.import(&archive).unwrap_err().to_string();
    for s in [
        "small/four:1",
        "image size limit of 1048576",
        "\"l3\"",
        four.layers[3].digest().as_str(),
    ] {
        assert!(message.contains(s), "{s:?} not in {message}");
    }
    // The first image is intact; nothing of the second stayed.
    assert_eq!(store.rootfs_layers("small/three:1").unwrap().len(), 3);
    assert_eq!(names(&store.root().join("layers")).len(), 3);
    assert_eq!(names(&store.root().join("tmp")), Vec::<String>::new());
    let l3 = four.layers[3].digest();
    let l3_blob = store
        .root()
        .join("blobs/sha256")
        .join(&l3["sha256:".len()..]);
    assert!(!l3_blob.exists(), "the refused layer's blob stayed");
    assert!(store
        .list()
        .unwrap()
        .iter()
        .all(|i| i.reference != "small/four:1"));
}

// ---- a registry that can misbehave --------------------------------------------------------

/// How the fake registry answers one document or blob.
#[derive(Clone, Debug)]
enum Serve {
    /// These bytes instead of the real content (with their own length).
    Body(Vec<u8>),
    /// The real content under a `Content-Length` that is not its size.
    ContentLength(u64),
    /// `Content-Length` of the real content, then only this many bytes and the connection closed.
    Truncate(usize),
    /// Headers and half the body, then nothing, never closing.
    Stall,
    /// Nothing at all, not even headers, never closing.
    StallHeaders,
    /// The real content followed by endless bytes, without `Content-Length`.
    Endless,
    /// The real content padded with spaces (still valid JSON for a document) to this many
    /// bytes, with its `Content-Length` or without (then it is only known at the end).
    Padded { len: usize, content_length: bool },
}

/// An HTTP registry on 127.0.0.1 serving one repository: `manifest` under the tag `1` and its
/// digest, and `blobs` by digest; `quirks` (keyed `manifest` or a blob digest) misbehave.
async fn fake_registry(
    repo: String,
    manifest: Vec<u8>,
    blobs: HashMap<String, Vec<u8>>,
    quirks: HashMap<String, Serve>,
) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let manifest_digest = crate::sha256_digest(&manifest);
    let state = Arc::new((repo, manifest, manifest_digest, blobs, quirks));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let (repo, manifest, manifest_digest, blobs, quirks) = &*state;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split(' ').nth(1).unwrap_or_default().to_string();
                let manifests = format!("/v2/{repo}/manifests/");
                let blob_prefix = format!("/v2/{repo}/blobs/");
                let (key, body, ctype) = if path == "/v2/" {
                    (String::new(), b"{}".to_vec(), "application/json")
                } else if let Some(r) = path.strip_prefix(&manifests) {
                    if r != "1" && r != manifest_digest {
                        (String::new(), Vec::new(), "")
                    } else {
                        (
                            "manifest".to_string(),
                            manifest.clone(),
                            "application/vnd.oci.image.manifest.v1+json",
                        )
                    }
                } else if let Some(d) = path.strip_prefix(&blob_prefix) {
                    match blobs.get(d) {
                        Some(b) => (d.to_string(), b.clone(), "application/octet-stream"),
                        None => (String::new(), Vec::new(), ""),
                    }
                } else {
                    (String::new(), Vec::new(), "")
                };
                if ctype.is_empty() {
                    let body = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"unknown"}]}"#;
                    let _ = conn
                        .write_all(
                            format!(
                                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                    return;
                }
                let header = |len: Option<u64>| {
                    let len = len
                        .map(|l| format!("Content-Length: {l}\r\n"))
                        .unwrap_or_default();
                    format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n{len}Connection: close\r\n\r\n")
                };
                let never = || tokio::time::sleep(Duration::from_secs(3600));
                match quirks.get(&key).cloned() {
                    None => {
                        let _ = conn
                            .write_all(header(Some(body.len() as u64)).as_bytes())
                            .await;
                        let _ = conn.write_all(&body).await;
                    }
                    Some(Serve::Body(other)) => {
                        let _ = conn
                            .write_all(header(Some(other.len() as u64)).as_bytes())
                            .await;
                        let _ = conn.write_all(&other).await;
                    }
                    Some(Serve::ContentLength(n)) => {
                        let _ = conn.write_all(header(Some(n)).as_bytes()).await;
                        let _ = conn.write_all(&body[..body.len().min(n as usize)]).await;
                    }
                    Some(Serve::Truncate(n)) => {
                        let _ = conn
                            .write_all(header(Some(body.len() as u64)).as_bytes())
                            .await;
                        let _ = conn.write_all(&body[..n]).await;
                    }
                    Some(Serve::Stall) => {
                        let _ = conn
                            .write_all(header(Some(body.len() as u64)).as_bytes())
                            .await;
                        let _ = conn.write_all(&body[..body.len() / 2]).await;
                        never().await;
                    }
                    Some(Serve::StallHeaders) => never().await,
                    Some(Serve::Padded {
                        len,
                        content_length,
                    }) => {
                        let _ = conn
                            .write_all(header(content_length.then_some(len as u64)).as_bytes())
                            .await;
                        let _ = conn.write_all(&body).await;
                        let pad = vec![b' '; 64 << 10];
                        let mut left = len.saturating_sub(body.len());
                        while left > 0 {
                            let n = left.min(pad.len());
                            if conn.write_all(&pad[..n]).await.is_err() {
                                break;
                            }
                            left -= n;
                        }
                    }
                    Some(Serve::Endless) => {
                        let _ = conn.write_all(header(None).as_bytes()).await;
                        let _ = conn.write_all(&body).await;
                        let junk = vec![b'j'; 64 << 10];
                        while conn.write_all(&junk).await.is_ok() {}
                    }
                }
                let _ = conn.shutdown().await;
            });
        }
    });
    host
}

const STALL_TIMEOUT: Duration = Duration::from_secs(2);

fn registry_for(image: &TestImage) -> (Vec<u8>, HashMap<String, Vec<u8>>) {
    let mut blobs = HashMap::new();
    blobs.insert(image.config_digest(), image.config.clone());
    for l in &image.layers {
        blobs.insert(l.digest(), l.blob.clone());
    }
    (image.manifest(), blobs)
}

async fn pull_from(store: &Arc<ImageStore>, host: &str, reference: &str) -> Result<(), String> {
    let opts = PullOptions {
        insecure_registries: vec![host.to_string()],
        stall_timeout: STALL_TIMEOUT,
        ..Default::default()
    };
    Puller::new(store.clone())
        .pull(reference, &opts)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_by_pull() {
    for case in cases() {
        let (_work, canary) = canary_dir();
        let before = snapshot(&canary);
        let root = tmp();
        let store = Arc::new(
            ImageStore::open(root.path())
                .unwrap()
                .with_limits(case.limits),
        );
        let image = image_of((case.layers)(&canary));
        let repo = format!("hostile/{}", case.name);
        let (manifest, blobs) = registry_for(&image);
        let host = fake_registry(repo.clone(), manifest, blobs, HashMap::new()).await;
        let reference = format!("{host}/{repo}:1");
        let result = pull_from(&store, &host, &reference).await;
        assert_outcome(&case, "pull", &store, &reference, result, &canary);
        assert_eq!(snapshot(&canary), before, "{}: canary changed", case.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_registries_are_refused_and_leave_nothing() {
    let layer = Layer::gzip(
        LayerBuilder::new()
            .file("data", &vec![3u8; 200 << 10], 0o644)
            .build(),
    );
    let image = image_of(vec![layer.clone()]);
    let (manifest, blobs) = registry_for(&image);
    let layer_digest = layer.digest();
    let config_digest = image.config_digest();
    let size = layer.blob.len();
    let mut other_layer = layer.blob.clone();
    other_layer[size / 2] ^= 0xff;
    let mut other_manifest = manifest.clone();
    other_manifest.push(b' ');
    let manifest_digest = crate::sha256_digest(&manifest);
    // (name, what misbehaves, how, by digest, what the error shows)
    let table: Vec<(&str, &str, Serve, bool, Vec<&str>)> = vec![
        (
            "layer-digest",
            &layer_digest,
            Serve::Body(other_layer),
            false,
            vec![&layer_digest],
        ),
        (
            "config-digest",
            &config_digest,
            Serve::Body(b"{\"architecture\":\"amd64\"}".to_vec()),
            false,
            vec![&config_digest],
        ),
        (
            "manifest-digest",
            "manifest",
            Serve::Body(other_manifest),
            true,
            vec!["digest"],
        ),
        (
            "content-length-larger",
            &layer_digest,
            Serve::ContentLength(size as u64 + 100),
            false,
            vec![&layer_digest, "bytes"],
        ),
        (
            "content-length-smaller",
            &layer_digest,
            Serve::ContentLength(size as u64 - 100),
            false,
            vec![&layer_digest, "bytes"],
        ),
        (
            "truncated-blob",
            &layer_digest,
            Serve::Truncate(size / 3),
            false,
            vec![&layer_digest],
        ),
        (
            "truncated-config",
            &config_digest,
            Serve::Truncate(5),
            false,
            vec![&config_digest],
        ),
        (
            "endless-blob",
            &layer_digest,
            Serve::Endless,
            false,
            vec![&layer_digest, "larger"],
        ),
        (
            "stalled-blob",
            &layer_digest,
            Serve::Stall,
            false,
            vec![&layer_digest],
        ),
        (
            "stalled-config",
            &config_digest,
            Serve::Stall,
            false,
            vec![&config_digest],
        ),
        (
            "stalled-manifest",
            "manifest",
            Serve::Stall,
            false,
            vec!["manifest"],
        ),
        (
            "endless-config",
            &config_digest,
            Serve::Endless,
            false,
            vec![&config_digest, "larger"],
        ),
        (
            "endless-manifest",
            "manifest",
            Serve::Endless,
            false,
            vec!["manifest", "larger", "4194304"],
        ),
        (
            "huge-manifest",
            "manifest",
            Serve::Padded {
                len: 64 << 20,
                content_length: true,
            },
            true,
            vec!["manifest", "67108864 bytes", "4194304"],
        ),
        (
            "huge-manifest-without-length",
            "manifest",
            Serve::Padded {
                len: 64 << 20,
                content_length: false,
            },
            false,
            vec!["manifest", "larger", "4194304"],
        ),
        (
            "stalled-manifest-headers",
            "manifest",
            Serve::StallHeaders,
            false,
            vec!["manifest"],
        ),
    ];
    for (name, key, serve, by_digest, shows) in table {
        let root = tmp();
        let store = Arc::new(ImageStore::open(root.path()).unwrap());
        let repo = format!("hostile/{name}");
        let quirks = HashMap::from([(key.to_string(), serve.clone())]);
        let host = fake_registry(repo.clone(), manifest.clone(), blobs.clone(), quirks).await;
        let reference = if by_digest {
            format!("{host}/{repo}@{manifest_digest}")
        } else {
            format!("{host}/{repo}:1")
        };
        let started = tokio::time::Instant::now();
        let message = pull_from(&store, &host, &reference).await.expect_err(name);
        eprintln!("{name}: {message}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: took {:?}",
            started.elapsed()
        );
        assert!(
            message.contains(&repo),
            "{name}: names the image: {message}"
        );
        for s in &shows {
            assert!(
                message.contains(s),
                "{name} ({serve:?}): {s:?} not in {message}"
            );
        }
        assert_store_empty(&store, name);
    }
}

/// An index whose entry for this platform is a manifest over the 4 MiB limit: refused before
/// that manifest is requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_listing_a_huge_manifest_is_refused() {
    let host_platform = Platform::host();
    let child = format!("sha256:{}", "ab".repeat(32));
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": child,
            "size": 5 << 20,
            "platform": host_platform,
        }],
    });
    let root = tmp();
    let store = Arc::new(ImageStore::open(root.path()).unwrap());
    let repo = "hostile/huge-child".to_string();
    let host = fake_registry(
        repo.clone(),
        serde_json::to_vec(&index).unwrap(),
        HashMap::new(),
        HashMap::new(),
    )
    .await;
    let reference = format!("{host}/{repo}:1");
    let message = pull_from(&store, &host, &reference).await.unwrap_err();
    for s in [
        reference.as_str(),
        child.as_str(),
        "5242880 bytes",
        "limit of 4194304 bytes",
    ] {
        assert!(message.contains(s), "{s:?} not in {message}");
    }
    assert_store_empty(&store, "huge-child");
}
