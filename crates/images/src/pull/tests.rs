//! Pulls from a real registry: each test starts Debian's `docker-registry` (distribution 2.x) on
//! a free loopback port with its own storage, pushes test images into it with `skopeo`, and pulls
//! them into a temp store. Skipped (with a message) when not root or the programs are missing;
//! CI installs `docker-registry`, `skopeo` and `busybox-static`.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use base64::Engine as _;
use serde_json::json;

use super::*;
use crate::testutil::{
    build_busybox_archive, write_oci_layout, Layer, LayerBuilder, OciEntry, TestImage, HOST_BUSYBOX,
};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
const SKOPEO_BIN: &str = "/usr/bin/skopeo";

fn prerequisites() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (layers are unpacked with their owners)");
        return false;
    }
    for bin in [REGISTRY_BIN, SKOPEO_BIN, HOST_BUSYBOX] {
        if !Path::new(bin).exists() {
            eprintln!(
                "skipped: {bin} missing (apt-get install docker-registry skopeo busybox-static)"
            );
            return false;
        }
    }
    true
}

/// A `docker-registry` process on 127.0.0.1; killed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Starts a registry; with `users`, htpasswd (bcrypt) authentication for them.
    fn start(users: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).unwrap();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if !users.is_empty() {
            let htpasswd = dir.path().join("htpasswd");
            let lines: String = users
                .iter()
                .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
                .collect();
            std::fs::write(&htpasswd, lines).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut reg = Self { child, port, dir };
        reg.wait_ready();
        reg
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Polls `GET /v2/` until the registry answers (200, or 401 with auth).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("docker-registry exited with {status}:\n{}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut head = [0u8; 12];
                if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n")
                    .is_ok()
                    && s.read_exact(&mut head).is_ok()
                    && head.starts_with(b"HTTP/1.")
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on port {} within 30s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Copies `source` (a skopeo transport reference) to `repo_tag` in this registry.
    fn push(&self, source: &str, repo_tag: &str, creds: Option<(&str, &str)>, all: bool) {
        let mut cmd = Command::new(SKOPEO_BIN);
        cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let out = cmd
            .arg(source)
            .arg(format!("docker://{}/{repo_tag}", self.host()))
            .stdin(Stdio::null())
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {source} failed: {}\n{}\nregistry log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    fn options(&self) -> PullOptions {
        PullOptions {
            insecure_registries: vec![self.host()],
            ..Default::default()
        }
    }
}

/// A registry holding the busybox image as `test/busybox:1`.
fn registry_with_busybox(users: &[(&str, &str)]) -> (Registry, tempfile::TempDir) {
    let reg = Registry::start(users);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("busybox.tar");
    build_busybox_archive(&archive, "test/busybox:1").unwrap();
    reg.push(
        &format!("docker-archive:{}", archive.display()),
        "test/busybox:1",
        users.first().copied(),
        false,
    );
    (reg, work)
}

fn new_store(dir: &Path) -> Arc<ImageStore> {
    Arc::new(ImageStore::open(dir).unwrap())
}

fn busybox_rootfs_ok(store: &ImageStore, reference: &str) {
    let layers = store.rootfs_layers(reference).unwrap();
    assert_eq!(layers.len(), 1);
    let busybox = layers[0].join("bin/busybox");
    assert_eq!(
        std::fs::read(&busybox).unwrap(),
        std::fs::read(HOST_BUSYBOX).unwrap()
    );
    assert_eq!(
        std::fs::read_link(layers[0].join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_busybox_from_registry() {
    if !prerequisites() {
        return;
    }
    let (reg, _work) = registry_with_busybox(&[]);
    let root = tempfile::tempdir().unwrap();
    let store = new_store(root.path());
    let puller = Puller::new(store.clone());
    let reference = format!("{}/test/busybox:1", reg.host());

    let rec = puller.pull(&reference, &reg.options()).await.unwrap();
    assert_eq!(rec.reference, reference);
    assert_eq!(rec.index_digest, None);
    assert_eq!(rec.platform, Platform::host());
    assert_eq!(puller.blobs_fetched(), 2, "config and one layer");
    assert!(puller.bytes_fetched() > 100_000);

    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].repository, format!("{}/test/busybox", reg.host()));
    assert_eq!(list[0].tag.as_deref(), Some("1"));
    assert_eq!(list[0].digest, rec.manifest_digest);
    assert_eq!(list[0].image_id, rec.config_digest);
    let config = store.image_config(&reference).unwrap();
    assert_eq!(config.cmd, vec!["sh"]);
    assert!(config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(config.diff_ids.len(), 1);
    busybox_rootfs_ok(&store, &reference);
    assert_eq!(store.unpack_count(), 1);

    // A second pull re-reads the manifest but fetches no blob and unpacks nothing.
    let again = puller.pull(&reference, &reg.options()).await.unwrap();
    assert_eq!(again, rec);
    assert_eq!(puller.blobs_fetched(), 2);
    assert_eq!(store.unpack_count(), 1);

    // By digest, through the free function.
    let by_digest = format!("{}/test/busybox@{}", reg.host(), rec.manifest_digest);
    let rec2 = pull(&store, &by_digest, &reg.options()).await.unwrap();
    assert_eq!(rec2.reference, by_digest);
    assert_eq!(rec2.config_digest, rec.config_digest);
    assert_eq!(store.list().unwrap().len(), 2);

    // A fresh store fetches everything again and ends up with the same image.
    let root2 = tempfile::tempdir().unwrap();
    let rec3 = pull(&new_store(root2.path()), &reference, &reg.options())
        .await
        .unwrap();
    assert_eq!(rec3, rec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_errors_keep_the_registry_message() {
    if !prerequisites() {
        return;
    }
    let (reg, _work) = registry_with_busybox(&[]);
    let root = tempfile::tempdir().unwrap();
    let store = new_store(root.path());
    let puller = Puller::new(store.clone());

    let missing_tag = format!("{}/test/busybox:nope", reg.host());
    let err = puller.pull(&missing_tag, &reg.options()).await.unwrap_err();
    eprintln!("missing tag: {err}");
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("manifest unknown") && msg.contains(&missing_tag),
        "{msg}"
    );
    assert_eq!(err.reference(), missing_tag);

    let missing_repo = format!("{}/test/nothing:1", reg.host());
    let err = puller
        .pull(&missing_repo, &reg.options())
        .await
        .unwrap_err();
    eprintln!("missing repository: {err}");
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("unknown"), "{err}");

    let missing_digest = format!("{}/test/busybox@sha256:{}", reg.host(), "0".repeat(64));
    let err = puller
        .pull(&missing_digest, &reg.options())
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");

    // HTTPS to a plain HTTP registry fails in the TLS handshake, naming the reference.
    let err = puller
        .pull(
            &format!("{}/test/busybox:1", reg.host()),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Transport { .. }), "{err:?}");
    eprintln!("https to http: {err}");

    // Nothing listens on a freshly released port.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("127.0.0.1:{port}");
    let opts = PullOptions {
        insecure_registries: vec![closed.clone()],
        ..Default::default()
    };
    let err = puller
        .pull(&format!("{closed}/x:1"), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Transport { .. }), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    eprintln!("nothing listening: {err}");

    let err = puller
        .pull("UPPER/case:", &reg.options())
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::InvalidReference { .. }), "{err:?}");
    assert!(store.list().unwrap().is_empty());
    assert_eq!(puller.blobs_fetched(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_fetch_once() {
    if !prerequisites() {
        return;
    }
    let (reg, _work) = registry_with_busybox(&[]);
    let root = tempfile::tempdir().unwrap();
    let store = new_store(root.path());
    let puller = Arc::new(Puller::new(store.clone()));
    let reference = format!("{}/test/busybox:1", reg.host());
    let opts = reg.options();

    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let puller = puller.clone();
            let reference = reference.clone();
            let opts = opts.clone();
            tokio::spawn(async move { puller.pull(&reference, &opts).await })
        })
        .collect();
    let mut records = Vec::new();
    for t in tasks {
        records.push(t.await.unwrap().unwrap());
    }
    assert!(records.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(puller.blobs_fetched(), 2, "one set of blob fetches");
    assert_eq!(store.unpack_count(), 1);
    // The registry saw one GET per blob.
    let log = reg.log();
    let blob_gets = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/test/busybox/blobs/"))
        .count();
    assert_eq!(blob_gets, 2, "registry log:\n{log}");
    busybox_rootfs_ok(&store, &reference);
}

fn small_image(arch: &str, marker: &str) -> TestImage {
    let layer = LayerBuilder::new()
        .dir("etc", 0o755)
        .file("etc/arch", marker.as_bytes(), 0o644)
        .build();
    TestImage::new(arch, json!({"Cmd": [marker]}), vec![Layer::gzip(layer)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_resolves_the_platform() {
    if !prerequisites() {
        return;
    }
    let reg = Registry::start(&[]);
    let host = Platform::host();
    let other_arch = if host.architecture == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let here = small_image(&host.architecture, "native");
    let there = small_image(other_arch, "foreign");
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    write_oci_layout(
        &layout,
        &[OciEntry::Index {
            ref_name: "multi",
            images: vec![&there, &here],
        }],
    )
    .unwrap();
    reg.push(
        &format!("oci:{}:multi", layout.display()),
        "test/multi:1",
        None,
        true,
    );
    let reference = format!("{}/test/multi:1", reg.host());

    let root = tempfile::tempdir().unwrap();
    let store = new_store(root.path());
    let rec = pull(&store, &reference, &reg.options()).await.unwrap();
    assert_eq!(rec.config_digest, here.config_digest());
    assert!(rec.index_digest.is_some());
    assert_eq!(store.image_config(&reference).unwrap().cmd, vec!["native"]);
    let layers = store.rootfs_layers(&reference).unwrap();
    assert_eq!(
        std::fs::read(layers[0].join("etc/arch")).unwrap(),
        b"native"
    );
    let list = store.list().unwrap();
    assert_eq!(list[0].digest, rec.index_digest.clone().unwrap());

    // Another platform, into another store.
    let root2 = tempfile::tempdir().unwrap();
    let opts = PullOptions {
        platform: Platform::new("linux", other_arch, None),
        ..reg.options()
    };
    let rec2 = pull(&new_store(root2.path()), &reference, &opts)
        .await
        .unwrap();
    assert_eq!(rec2.config_digest, there.config_digest());
    assert_eq!(rec2.index_digest, rec.index_digest);

    // No windows image in the index.
    let opts = PullOptions {
        platform: Platform::new("windows", "amd64", None),
        ..reg.options()
    };
    let err = pull(&store, &reference, &opts).await.unwrap_err();
    assert!(
        matches!(err, PullError::NoMatchingPlatform { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("windows/amd64"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_takes_docker_config_credentials() {
    if !prerequisites() {
        return;
    }
    let (reg, work) = registry_with_busybox(&[("puller", "s3cret")]);
    let reference = format!("{}/test/busybox:1", reg.host());
    let root = tempfile::tempdir().unwrap();
    let store = new_store(root.path());
    let puller = Puller::new(store.clone());

    let err = puller.pull(&reference, &reg.options()).await.unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err:?}");
    eprintln!("anonymous: {err}");
    assert!(err.to_string().contains(&reference), "{err}");

    let config_path = work.path().join("config.json");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    std::fs::write(
        &config_path,
        json!({"auths": {
            format!("http://{}/v2/", reg.host()): {"auth": b64("puller:wrong")},
            "other.example": {"auth": b64("x:y")},
        }})
        .to_string(),
    )
    .unwrap();
    let config = load_docker_config(&config_path).unwrap();
    let opts = PullOptions {
        auth: config.auth_for(&reg.host()),
        ..reg.options()
    };
    assert!(opts.auth.is_some());
    let err = puller.pull(&reference, &opts).await.unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err:?}");

    std::fs::write(
        &config_path,
        json!({"auths": {reg.host(): {"username": "puller", "password": "s3cret"}}}).to_string(),
    )
    .unwrap();
    let config = load_docker_config(&config_path).unwrap();
    let opts = PullOptions {
        auth: config.auth_for(&reg.host()),
        ..reg.options()
    };
    let rec = puller.pull(&reference, &opts).await.unwrap();
    assert_eq!(rec.reference, reference);
    busybox_rootfs_ok(&store, &reference);
}

/// A one-request-per-connection HTTP server standing in for a registry with a token service:
/// `/v2/` challenges for a bearer token, `/token` exchanges the refresh token `refresh-me` for
/// `access-1`, and manifests answer `MANIFEST_UNKNOWN` to that token (401 otherwise). Every
/// request line and its body are recorded.
async fn fake_token_registry() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (realm, log) = (format!("http://{host}/token"), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = conn.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break (head.to_string(), body.to_string());
                    }
                }
            };
            let line = head.lines().next().unwrap_or_default().to_string();
            let bearer = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case("authorization: bearer access-1"));
            log.lock().unwrap().push(format!("{line} {body}"));
            let (status, extra, body) = if line.starts_with("GET /v2/ ") {
                (
                    "401 Unauthorized",
                    format!("WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\"\r\n"),
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .to_string(),
                )
            } else if line.starts_with("POST /token ") && body.contains("refresh_token=refresh-me")
            {
                (
                    "200 OK",
                    String::new(),
                    r#"{"access_token":"access-1"}"#.to_string(),
                )
            } else if line.starts_with("POST /token ") {
                (
                    "401 Unauthorized",
                    String::new(),
                    "invalid refresh token".to_string(),
                )
            } else if bearer {
                (
                    "404 Not Found",
                    String::new(),
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                        .to_string(),
                )
            } else {
                (
                    "401 Unauthorized",
                    String::new(),
                    r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .to_string(),
                )
            };
            let response = format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        }
    });
    (host, seen)
}

#[tokio::test]
async fn identity_token_is_exchanged_for_an_access_token() {
    let (host, seen) = fake_token_registry().await;
    let root = tempfile::tempdir().unwrap();
    let store = new_store(root.path());
    let reference = format!("{host}/test/x:1");
    let config = DockerConfig::parse(
        json!({"auths": {host.clone(): {"identitytoken": "refresh-me"}}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    let opts = PullOptions {
        auth: config.auth_for(&host),
        insecure_registries: vec![host.clone()],
        ..Default::default()
    };
    let err = pull(&store, &reference, &opts).await.unwrap_err();
    // The access token reached the manifest request, which the fake answers with 404.
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
    let requests = seen.lock().unwrap().clone();
    let token_request = requests
        .iter()
        .find(|r| r.starts_with("POST /token "))
        .expect("token request");
    for part in [
        "grant_type=refresh_token",
        "service=fake",
        "scope=repository%3Atest%2Fx%3Apull",
    ] {
        assert!(token_request.contains(part), "{token_request}");
    }

    let opts = PullOptions {
        auth: Some(Credentials::IdentityToken("stale".into())),
        ..opts
    };
    let err = pull(&store, &reference, &opts).await.unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("invalid refresh token"), "{err}");

    // Anonymous requests get the registry's 401.
    let opts = PullOptions { auth: None, ..opts };
    let err = pull(&store, &reference, &opts).await.unwrap_err();
    assert!(matches!(err, PullError::Unauthorized { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_from_registry_is_refused() {
    if !prerequisites() {
        return;
    }
    let (reg, _work) = registry_with_busybox(&[]);
    let reference = format!("{}/test/busybox:1", reg.host());
    // Learn the layer digest from a first pull, then corrupt the registry's copy in place.
    let root = tempfile::tempdir().unwrap();
    let rec = pull(&new_store(root.path()), &reference, &reg.options())
        .await
        .unwrap();
    let store = ImageStore::open(root.path()).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&rec.manifest_digest).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let hex = layer.trim_start_matches("sha256:");
    let data = reg
        .dir
        .path()
        .join("storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();

    let root2 = tempfile::tempdir().unwrap();
    let store2 = new_store(root2.path());
    let err = pull(&store2, &reference, &reg.options()).await.unwrap_err();
    assert!(
        matches!(
            err,
            PullError::InvalidContent { .. } | PullError::Store { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(hex), "{err}");
    eprintln!("corrupt layer: {err}");
    assert_eq!(store2.blob_size(&layer).unwrap(), None);
    assert!(store2.list().unwrap().is_empty());
    let leftovers: Vec<_> = std::fs::read_dir(root2.path().join("images/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
