//! Pulling images from OCI distribution registries (docker hub, a `registry:2`, quay, ...)
//! into the [`ImageStore`], with the `oci-client` crate over rustls (ring provider).
//!
//! A pull resolves the reference's manifest (fetched by a request of ours, cut at
//! [`MAX_MANIFEST_SIZE`]: oci-client would read any body whole); an image index (or docker manifest list) is
//! resolved to the wanted platform with [`select_manifest`], exactly as imports do. The config
//! and every layer blob not already in the store are then streamed into
//! [`ImageStore::blob_writer`] (chunks cross a small channel to a blocking writer thread, so no
//! layer is held in memory; digests and sizes are verified before a blob is kept), and the image
//! is committed with [`ImageStore::commit_image`] or [`ImageStore::commit_image_with_index`],
//! which unpacks the layers and verifies their diff IDs. A store [`Lease`](crate::Lease) is held
//! from the first request to the commit, so garbage collection cannot remove fetched blobs.
//!
//! Registries listed in [`PullOptions::insecure_registries`] (`HOST:PORT`) are spoken to over
//! plain HTTP; every other one over HTTPS with the webpki roots. Credentials come from
//! [`PullOptions::auth`], typically from a docker `config.json` via [`load_docker_config`] and
//! [`DockerConfig::auth_for`].
//!
//! A [`Puller`] joins concurrent pulls of the same reference and platform: the second caller
//! waits for the first pull and gets its result, so content is fetched once.

mod auth;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_spec::image::{ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::digest::sha256_digest;
use crate::error::io_err;
use crate::platform::{select_manifest, Platform};
use crate::reference::Reference;
use crate::store::{ImageRecord, ImageStore};

pub use auth::{load_docker_config, normalize_registry_host, Credentials, DockerConfig};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a pull accepts as a manifest, best first.
const ACCEPTED_MANIFESTS: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Image configs larger than this are refused (they are JSON documents).
const MAX_CONFIG_SIZE: u64 = 16 << 20;
/// Manifests and indexes larger than this are refused, as containerd does (kubelet's pulls go
/// through it): the response is cut there, so a registry cannot make a pull hold more.
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;
/// The most of an error response's body that is read (for its message).
const MAX_ERROR_BODY: u64 = 64 << 10;
/// Layer blobs fetched at the same time by one pull.
const LAYER_CONCURRENCY: usize = 3;
/// Chunks in flight between the network and the blob writer thread.
const CHANNEL_DEPTH: usize = 8;

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Credentials for the reference's registry; anonymous without.
    pub auth: Option<Credentials>,
    /// Registries (`HOST:PORT` as in the reference) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The platform a manifest is chosen for from an image index.
    pub platform: Platform,
    /// How long a response may send nothing before the pull fails (a registry that never
    /// finishes a response). Applies to each read, so slow but moving transfers go on.
    pub stall_timeout: Duration,
}

/// The default [`PullOptions::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for PullOptions {
    fn default() -> Self {
        Self {
            auth: None,
            insecure_registries: Vec::new(),
            platform: Platform::host(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
        }
    }
}

/// Why a pull failed. Each variant names the (normalised) reference; messages from the registry
/// (`manifest unknown`, `authentication required`) are kept as it sent them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PullError {
    /// The reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// The registry does not have the repository, tag, manifest or blob.
    #[error("pull {reference}: not found: {message}")]
    NotFound { reference: String, message: String },
    /// The registry refused the credentials (or their absence).
    #[error("pull {reference}: unauthorized: {message}")]
    Unauthorized { reference: String, message: String },
    /// The registry answered with another error.
    #[error("pull {reference}: registry error: {message}")]
    Registry { reference: String, message: String },
    /// The registry could not be reached or the connection failed.
    #[error("pull {reference}: {message}")]
    Transport { reference: String, message: String },
    /// The image index has no manifest for the wanted platform.
    #[error("pull {reference}: no manifest for platform {platform} in index {digest}")]
    NoMatchingPlatform {
        reference: String,
        platform: String,
        digest: String,
    },
    /// The registry sent content that does not match its digest, or a document the store
    /// cannot use (schema 1 manifests, nested indexes, malformed JSON).
    #[error("pull {reference}: invalid content from registry: {message}")]
    InvalidContent { reference: String, message: String },
    /// Writing to the store (or committing the image) failed.
    #[error("pull {reference}: {source}")]
    Store {
        reference: String,
        #[source]
        source: Arc<crate::Error>,
    },
}

impl PullError {
    /// The reference the failed pull was for.
    pub fn reference(&self) -> &str {
        match self {
            Self::InvalidReference { reference, .. }
            | Self::NotFound { reference, .. }
            | Self::Unauthorized { reference, .. }
            | Self::Registry { reference, .. }
            | Self::Transport { reference, .. }
            | Self::NoMatchingPlatform { reference, .. }
            | Self::InvalidContent { reference, .. }
            | Self::Store { reference, .. } => reference,
        }
    }

    fn store(reference: &str, e: crate::Error) -> Self {
        Self::Store {
            reference: reference.to_string(),
            source: Arc::new(e),
        }
    }

    fn invalid(reference: &str, message: impl Into<String>) -> Self {
        Self::InvalidContent {
            reference: reference.to_string(),
            message: message.into(),
        }
    }
}

/// An error and its sources, `: `-joined, without repeating a source its parent already shows.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Maps an `oci-client` error about `what` (`manifest`, `blob sha256:...`) to a [`PullError`].
fn registry_error(reference: &str, what: &str, e: OciDistributionError) -> PullError {
    let reference = reference.to_string();
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let not_found = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            });
            let unauthorized = envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied));
            let message = envelope
                .errors
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        format!("{:?}", e.code).to_lowercase()
                    } else {
                        e.message.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            if not_found {
                PullError::NotFound { reference, message }
            } else if unauthorized {
                PullError::Unauthorized { reference, message }
            } else {
                PullError::Registry {
                    reference,
                    message: format!("{what}: {message}"),
                }
            }
        }
        OciDistributionError::UnauthorizedError { url } => PullError::Unauthorized {
            reference,
            message: format!("registry answered 401 for {url}"),
        },
        OciDistributionError::AuthenticationFailure(reason) => PullError::Unauthorized {
            reference,
            message: reason.trim().to_string(),
        },
        OciDistributionError::ServerError { code, url, message } => {
            let message = format!("HTTP {code} for {url}: {}", message.trim());
            match code {
                404 => PullError::NotFound { reference, message },
                401 | 403 => PullError::Unauthorized { reference, message },
                _ => PullError::Registry { reference, message },
            }
        }
        OciDistributionError::RequestError(e) => PullError::Transport {
            reference,
            message: error_chain(&e),
        },
        OciDistributionError::IoError(e) => PullError::Transport {
            reference,
            message: format!("{what}: {}", error_chain(&e)),
        },
        other => PullError::InvalidContent {
            reference,
            message: format!("{what}: {}", error_chain(&other)),
        },
    }
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    reference: &str,
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, PullError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| PullError::store(reference, e)),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(PullError::store(
            reference,
            crate::Error::Io {
                op: "run blocking store task",
                path: Default::default(),
                source: std::io::Error::other(e),
            },
        )),
    }
}

/// What a manifest response holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DocumentKind {
    Index,
    Manifest,
}

pub(crate) fn document_kind(bytes: &[u8]) -> Result<DocumentKind, String> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<i64>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| format!("manifest: {e}"))?;
    match probe.media_type.as_deref() {
        Some(OCI_INDEX | DOCKER_LIST) => Ok(DocumentKind::Index),
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => Ok(DocumentKind::Manifest),
        Some(other) => Err(format!("unsupported manifest media type {other:?}")),
        None if probe.schema_version != Some(2) => Err(format!(
            "unsupported manifest schema version {:?}",
            probe.schema_version
        )),
        None if probe.manifests.is_some() => Ok(DocumentKind::Index),
        None => Ok(DocumentKind::Manifest),
    }
}

type PullResult = Result<ImageRecord, PullError>;

/// Pulls images into one store, joining concurrent pulls of the same reference.
pub struct Puller {
    store: Arc<ImageStore>,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<PullResult>>>>,
    blobs_fetched: AtomicU64,
    bytes_fetched: AtomicU64,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller")
            .field("store", &self.store.root())
            .field("blobs_fetched", &self.blobs_fetched())
            .finish_non_exhaustive()
    }
}

/// Pulls `reference` into `store` (one-off: concurrent calls are not joined; use a [`Puller`]
/// for that).
pub async fn pull(store: &Arc<ImageStore>, reference: &str, opts: &PullOptions) -> PullResult {
    Puller::new(store.clone()).pull(reference, opts).await
}

impl Puller {
    /// A puller writing into `store`.
    pub fn new(store: Arc<ImageStore>) -> Self {
        Self {
            store,
            inflight: Mutex::new(HashMap::new()),
            blobs_fetched: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
        }
    }

    /// The store pulled into.
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Blobs (configs and layers) downloaded by this puller so far; blobs found in the store
    /// are not counted.
    pub fn blobs_fetched(&self) -> u64 {
        self.blobs_fetched.load(Ordering::Relaxed)
    }

    /// Bytes of blobs downloaded by this puller so far.
    pub fn bytes_fetched(&self) -> u64 {
        self.bytes_fetched.load(Ordering::Relaxed)
    }

    /// Pulls `reference` (normalised as the store does: `busybox` is
    /// `docker.io/library/busybox:latest`) and returns its record in the store.
    ///
    /// A pull of the same reference and platform already running in this puller is joined
    /// instead of started again (its options win). If the caller that runs the pull is
    /// cancelled, a waiting caller takes over.
    pub async fn pull(&self, reference: &str, opts: &PullOptions) -> PullResult {
        let parsed = Reference::parse(reference).map_err(|e| match e {
            crate::Error::InvalidReference { reference, reason } => {
                PullError::InvalidReference { reference, reason }
            }
            other => PullError::InvalidReference {
                reference: reference.to_string(),
                reason: other.to_string(),
            },
        })?;
        let key = format!("{parsed} {}", opts.platform);
        let cell = self
            .inflight
            .lock()
            .expect("inflight map poisoned")
            .entry(key.clone())
            .or_default()
            .clone();
        let result = cell
            .get_or_init(|| async {
                let result = self.pull_now(&parsed, opts).await;
                if result.is_err() {
                    // Nothing of a failed pull stays (blobs fetched for it, layers unpacked).
                    let store = self.store.clone();
                    let _ = tokio::task::spawn_blocking(move || store.discard_unreferenced()).await;
                }
                result
            })
            .await
            .clone();
        let mut inflight = self.inflight.lock().expect("inflight map poisoned");
        if inflight.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            inflight.remove(&key);
        }
        result
    }

    async fn pull_now(&self, parsed: &Reference, opts: &PullOptions) -> PullResult {
        let r = parsed.to_string();
        let store = self.store.clone();
        let lease = blocking(&r, move || store.lease()).await?;
        tracing::info!(reference = %r, platform = %opts.platform, "pulling image");

        let client = make_client(opts).map_err(|message| PullError::Transport {
            reference: r.clone(),
            message,
        })?;
        let oref = match &parsed.digest {
            Some(d) => oci_client::Reference::with_digest(
                parsed.domain.clone(),
                parsed.path.clone(),
                d.clone(),
            ),
            None => oci_client::Reference::with_tag(
                parsed.domain.clone(),
                parsed.path.clone(),
                parsed.tag.clone().unwrap_or_else(|| "latest".to_string()),
            ),
        };
        let auth = registry_auth(&r, parsed, opts).await?;
        let manifests = ManifestFetcher::new(&client, &r, &oref, &auth, opts).await?;

        let top = manifests.fetch(&oref, MAX_MANIFEST_SIZE).await?;
        let top_digest = sha256_digest(&top);
        if let Some(want) = &parsed.digest {
            if *want != top_digest {
                return Err(PullError::invalid(
                    &r,
                    format!("the manifest's digest is {top_digest}, not {want}"),
                ));
            }
        }
        let kind = document_kind(&top).map_err(|m| PullError::invalid(&r, m))?;
        let (index, manifest_bytes) = match kind {
            DocumentKind::Manifest => (None, top),
            DocumentKind::Index => {
                let index = ImageIndex::from_reader(&top[..])
                    .map_err(|e| PullError::invalid(&r, format!("index {top_digest}: {e}")))?;
                let desc = select_manifest(&index, &opts.platform).ok_or_else(|| {
                    PullError::NoMatchingPlatform {
                        reference: r.clone(),
                        platform: opts.platform.to_string(),
                        digest: top_digest.clone(),
                    }
                })?;
                let digest = desc.digest().to_string();
                tracing::debug!(reference = %r, index = %top_digest, manifest = %digest, "platform manifest chosen");
                if desc.size() > MAX_MANIFEST_SIZE {
                    return Err(PullError::invalid(
                        &r,
                        format!(
                            "manifest {digest} is {} bytes, more than the limit of {MAX_MANIFEST_SIZE} bytes",
                            desc.size()
                        ),
                    ));
                }
                let bytes = manifests
                    .fetch(&oref.clone_with_digest(digest.clone()), desc.size())
                    .await?;
                let actual = sha256_digest(&bytes);
                if actual != digest || bytes.len() as u64 != desc.size() {
                    return Err(PullError::invalid(
                        &r,
                        format!(
                            "manifest {digest} ({} bytes) came as {actual} ({} bytes)",
                            desc.size(),
                            bytes.len()
                        ),
                    ));
                }
                if document_kind(&bytes).map_err(|m| PullError::invalid(&r, m))?
                    != DocumentKind::Manifest
                {
                    return Err(PullError::invalid(
                        &r,
                        format!("index {top_digest} lists another index {digest}"),
                    ));
                }
                (Some(top), bytes)
            }
        };
        let manifest_digest = sha256_digest(&manifest_bytes);
        let manifest = ImageManifest::from_reader(&manifest_bytes[..])
            .map_err(|e| PullError::invalid(&r, format!("manifest {manifest_digest}: {e}")))?;

        let config = self
            .fetch_config(
                &client,
                &oref,
                &r,
                manifest.config().digest().to_string(),
                manifest.config().size(),
            )
            .await?;
        let layers: Vec<(String, u64)> = manifest
            .layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size()))
            .collect();
        futures::stream::iter(layers)
            .map(|(digest, size)| self.fetch_blob(&client, &oref, &r, digest, size))
            .buffer_unordered(LAYER_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;

        let store = self.store.clone();
        let key = r.clone();
        let manifest_bytes = manifest_bytes.to_vec();
        let record = blocking(&r, move || match index {
            Some(index) => store.commit_image_with_index(&key, &index, &manifest_bytes, &config),
            None => store.commit_image(&key, &manifest_bytes, &config),
        })
        .await?;
        drop(lease);
        tracing::info!(reference = %r, id = %record.config_digest, manifest = %record.manifest_digest, "image pulled");
        Ok(record)
    }

    /// The config document: from the store if present, else from the registry (verified).
    async fn fetch_config(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        r: &str,
        digest: String,
        size: u64,
    ) -> Result<Vec<u8>, PullError> {
        if size > MAX_CONFIG_SIZE {
            return Err(PullError::invalid(
                r,
                format!("config {digest} is {size} bytes, more than 16 MiB"),
            ));
        }
        let store = self.store.clone();
        let d = digest.clone();
        let local = blocking(r, move || match store.blob_size(&d)? {
            Some(s) if s == size => store.read_blob(&d).map(Some),
            _ => Ok(None),
        })
        .await?;
        if let Some(bytes) = local {
            return Ok(bytes);
        }
        let what = format!("config {digest}");
        let mut stream = client
            .pull_blob_stream(oref, digest.as_str())
            .await
            .map_err(|e| registry_error(r, &what, e))?;
        check_content_length(r, &what, stream.content_length, size)?;
        let mut bytes = Vec::with_capacity(size as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| stream_error(r, &what, &e))?;
            if (bytes.len() + chunk.len()) as u64 > size {
                return Err(PullError::invalid(
                    r,
                    format!("{what} is larger than {size} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        let actual = sha256_digest(&bytes);
        if actual != digest || bytes.len() as u64 != size {
            return Err(PullError::invalid(
                r,
                format!("{what} came as {actual} ({} bytes)", bytes.len()),
            ));
        }
        self.blobs_fetched.fetch_add(1, Ordering::Relaxed);
        self.bytes_fetched.fetch_add(size, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Streams one layer blob into the store unless it is there already.
    async fn fetch_blob(
        &self,
        client: &oci_client::Client,
        oref: &oci_client::Reference,
        r: &str,
        digest: String,
        size: u64,
    ) -> Result<(), PullError> {
        let store = self.store.clone();
        let d = digest.clone();
        if blocking(r, move || store.blob_size(&d)).await? == Some(size) {
            tracing::debug!(reference = r, blob = %digest, "blob already present");
            return Ok(());
        }
        let what = format!("blob {digest}");
        let mut stream = client
            .pull_blob_stream(oref, digest.as_str())
            .await
            .map_err(|e| registry_error(r, &what, e))?;
        check_content_length(r, &what, stream.content_length, size)?;

        // `Some(chunk)` is data, `None` the end of a complete stream; a channel closed without
        // `None` abandons the blob (the writer's temp file is removed on drop).
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Bytes>>(CHANNEL_DEPTH);
        let store = self.store.clone();
        let want = digest.clone();
        let writer = blocking(r, move || {
            let mut w = store.blob_writer(Some(&want), Some(size))?;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Some(chunk) => w
                        .write_all(&chunk)
                        .map_err(io_err("write blob", store.blobs_dir()))?,
                    None => return w.commit().map(|_| true),
                }
            }
            Ok(false)
        });
        let feed_what = what.clone();
        let feed = async move {
            let mut received = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| stream_error(r, &feed_what, &e))?;
                received += chunk.len() as u64;
                if received > size {
                    return Err(PullError::invalid(
                        r,
                        format!("{feed_what} is larger than {size} bytes"),
                    ));
                }
                if tx.send(Some(chunk)).await.is_err() {
                    // The writer failed; its error is the one reported.
                    return Ok(());
                }
            }
            let _ = tx.send(None).await;
            Ok(())
        };
        let (fed, written) = futures::join!(feed, writer);
        fed?;
        if !written? {
            return Err(PullError::invalid(r, format!("{what}: transfer abandoned")));
        }
        self.blobs_fetched.fetch_add(1, Ordering::Relaxed);
        self.bytes_fetched.fetch_add(size, Ordering::Relaxed);
        tracing::debug!(reference = r, blob = %digest, size, "blob fetched");
        Ok(())
    }
}

/// Fetches manifests and indexes with a bound on their size: oci-client reads a manifest
/// response whole into memory (`pull_manifest_raw`), so a registry streaming one forever would
/// hold the pull's memory without limit. The request is ours (same timeouts and TLS roots as
/// oci-client's, the credentials or the token oci-client got for the pull, which it also keeps
/// for the blob requests); its body is cut at the limit.
struct ManifestFetcher<'a> {
    http: reqwest::Client,
    reference: &'a str,
    scheme: &'static str,
    /// `Authorization` for the registry: the bearer token oci-client obtained, or basic auth.
    bearer: Option<String>,
    basic: Option<(String, String)>,
}

impl<'a> ManifestFetcher<'a> {
    async fn new(
        client: &oci_client::Client,
        reference: &'a str,
        oref: &oci_client::Reference,
        auth: &RegistryAuth,
        opts: &PullOptions,
    ) -> Result<ManifestFetcher<'a>, PullError> {
        let transport = |message: String| PullError::Transport {
            reference: reference.to_string(),
            message,
        };
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(opts.stall_timeout)
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| transport(error_chain(&e)))?;
        // The token (for a bearer challenge), cached by the client for the blob requests too.
        let bearer = client
            .auth(oref, auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| registry_error(reference, "manifest", e))?;
        let basic = match auth {
            RegistryAuth::Basic(user, password) if bearer.is_none() => {
                Some((user.clone(), password.clone()))
            }
            _ => None,
        };
        Ok(ManifestFetcher {
            http,
            reference,
            scheme: scheme_for(oref.resolve_registry(), opts),
            bearer,
            basic,
        })
    }

    /// The manifest (or index) `oref` names, refused once more than `limit` bytes come. Its
    /// digest is checked by the caller (a tag has none to check against); a
    /// `Docker-Content-Digest` header that disagrees with the body is refused here, as
    /// oci-client does.
    async fn fetch(&self, oref: &oci_client::Reference, limit: u64) -> Result<Bytes, PullError> {
        let r = self.reference;
        let registry = oref.resolve_registry();
        let target = oref.digest().or(oref.tag()).unwrap_or("latest").to_string();
        let url = format!(
            "{}://{registry}/v2/{}/manifests/{target}",
            self.scheme,
            oref.repository()
        );
        let mut req = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, ACCEPTED_MANIFESTS.join(", "));
        if let Some(token) = &self.bearer {
            req = req.bearer_auth(token);
        } else if let Some((user, password)) = &self.basic {
            req = req.basic_auth(user, Some(password));
        }
        let transport = |e: &dyn std::error::Error| PullError::Transport {
            reference: r.to_string(),
            message: format!("manifest {target}: {}", error_chain(e)),
        };
        let mut res = req.send().await.map_err(|e| transport(&e))?;
        let status = res.status();
        if status != reqwest::StatusCode::OK {
            let mut body = Vec::new();
            while let Some(chunk) = res.chunk().await.map_err(|e| transport(&e))? {
                body.extend_from_slice(&chunk);
                if body.len() as u64 >= MAX_ERROR_BODY {
                    body.truncate(MAX_ERROR_BODY as usize);
                    break;
                }
            }
            return Err(registry_error(
                r,
                "manifest",
                status_error(status, &body, &url),
            ));
        }
        let too_large = |what: String| {
            PullError::invalid(r, format!("manifest {target}: {what} {limit} bytes"))
        };
        if let Some(len) = res.content_length().filter(|&l| l > limit) {
            return Err(too_large(format!(
                "the registry sends {len} bytes, more than the limit of"
            )));
        }
        let header_digest = res
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| transport(&e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large(
                    "the response is larger than the limit of".to_string(),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        if let Some(want) = header_digest.filter(|d| d.starts_with("sha256:")) {
            let actual = sha256_digest(&body);
            if actual != want {
                return Err(PullError::invalid(
                    r,
                    format!("manifest {target} is {actual}, the registry says {want}"),
                ));
            }
        }
        Ok(Bytes::from(body))
    }
}

/// The oci-client error for a registry response that is not 200 (as oci-client's own requests
/// report them), so that [`registry_error`] maps it the same way.
fn status_error(status: reqwest::StatusCode, body: &[u8], url: &str) -> OciDistributionError {
    let url = url.to_string();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return OciDistributionError::UnauthorizedError { url };
    }
    if status.is_client_error() {
        if let Ok(envelope) = serde_json::from_slice::<oci_client::errors::OciEnvelope>(body) {
            return OciDistributionError::RegistryError { envelope, url };
        }
    }
    OciDistributionError::ServerError {
        code: status.as_u16(),
        url,
        message: String::from_utf8_lossy(body).into_owned(),
    }
}

/// Refuses a blob response whose `Content-Length` is not the descriptor's size before any of
/// it is read.
fn check_content_length(
    r: &str,
    what: &str,
    content_length: Option<u64>,
    size: u64,
) -> Result<(), PullError> {
    match content_length {
        Some(len) if len != size => Err(PullError::invalid(
            r,
            format!("{what}: the registry sends {len} bytes for a blob of {size} bytes"),
        )),
        _ => Ok(()),
    }
}

/// A failure while a blob streams: transport errors, or oci-client's digest verification.
fn stream_error(r: &str, what: &str, e: &std::io::Error) -> PullError {
    let message = format!("{what}: {}", error_chain(e));
    if e.get_ref()
        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
    {
        PullError::invalid(r, message)
    } else {
        PullError::Transport {
            reference: r.to_string(),
            message,
        }
    }
}

fn install_crypto_provider() {
    // The workspace's rustls uses ring; a provider installed earlier (the agent's) is kept.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const USER_AGENT: &str = concat!("staticlet/", env!("CARGO_PKG_VERSION"));

fn make_client(opts: &PullOptions) -> Result<oci_client::Client, String> {
    install_crypto_provider();
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(opts.insecure_registries.clone()),
        platform_resolver: None,
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(opts.stall_timeout),
        user_agent: USER_AGENT,
        ..Default::default()
    };
    oci_client::Client::try_from(config).map_err(|e| error_chain(&e))
}

fn scheme_for(domain: &str, opts: &PullOptions) -> &'static str {
    if opts.insecure_registries.iter().any(|h| h == domain) {
        "http"
    } else {
        "https"
    }
}

/// The oci-client auth for a pull; identity tokens are exchanged for access tokens first.
async fn registry_auth(
    r: &str,
    parsed: &Reference,
    opts: &PullOptions,
) -> Result<RegistryAuth, PullError> {
    match &opts.auth {
        None => Ok(RegistryAuth::Anonymous),
        Some(Credentials::Basic { username, password }) => {
            Ok(RegistryAuth::Basic(username.clone(), password.clone()))
        }
        Some(Credentials::IdentityToken(token)) => {
            install_crypto_provider();
            let http = reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| PullError::Transport {
                    reference: r.to_string(),
                    message: error_chain(&e),
                })?;
            // Docker hub's API lives on registry-1.docker.io, as oci-client resolves it.
            let host = match parsed.domain.as_str() {
                crate::reference::DEFAULT_DOMAIN => "index.docker.io",
                other => other,
            };
            let base = format!("{}://{host}", scheme_for(host, opts));
            match auth::exchange_identity_token(&http, &base, &parsed.path, token).await {
                Ok(Some(access)) => Ok(RegistryAuth::Bearer(access)),
                Ok(None) => Ok(RegistryAuth::Bearer(token.clone())),
                Err((Some(401 | 403), message)) => Err(PullError::Unauthorized {
                    reference: r.to_string(),
                    message,
                }),
                Err((_, message)) => Err(PullError::Transport {
                    reference: r.to_string(),
                    message,
                }),
            }
        }
    }
}
