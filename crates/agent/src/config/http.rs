//! The manifest URL source (≈ kubelet's `config/http.go`).
//!
//! Polls `--manifest-url` every `--http-check-frequency` with kubelet's rules: a 10 s timeout and
//! a 10 MiB cap; a Pod or a PodList; a non-200 answer or a transport error keeps the previous
//! pods; a zero-length body removes them all; a byte-identical body is a no-op; one invalid item
//! rejects the whole list (the previous pods are kept).
//!
//! Beyond kubelet: conditional requests (`If-None-Match` / `If-Modified-Since` when the server
//! gave an `ETag` / `Last-Modified`), and the last good body kept on disk so that a node that
//! boots while the URL is down still runs its pods; the manifest record says so (`stale`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use staticlet_manifest::{ManifestError, Origin, StaticPod, MAX_MANIFEST_BYTES};
use staticlet_runtime::Clock;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::lastgood::{self, LastGood};
use super::{ManifestRecord, SourceKind, SourceSnapshot, SourceUpdate};

/// kubelet's HTTP client timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The URL source. Owns the last body, the validators and the pods of the URL.
#[derive(Debug)]
pub struct HttpSource {
    url: String,
    headers: Vec<(String, String)>,
    node: String,
    frequency: Duration,
    client: reqwest::Client,
    lastgood: Option<LastGood>,
    clock: Clock,
    /// Body of the last 200 answer (parsed or not).
    last_body: Option<Vec<u8>>,
    /// Why `last_body` was not applied, if it was not.
    body_error: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    pods: Vec<Arc<StaticPod>>,
    record: ManifestRecord,
    /// True once the source has something to say (a body, from the URL or the cache).
    seen: bool,
    failures: u32,
}

/// What one poll concluded.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Changed,
}

impl HttpSource {
    /// A source polling `url` with `headers` (in order; repeated names are sent repeatedly).
    pub fn new(
        url: &str,
        headers: Vec<(String, String)>,
        node: &str,
        frequency: Duration,
        lastgood: Option<LastGood>,
        clock: Clock,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .build()
            .expect("reqwest client with default TLS settings");
        Self {
            url: url.to_string(),
            headers,
            node: node.to_string(),
            frequency,
            client,
            lastgood,
            clock,
            last_body: None,
            body_error: None,
            etag: None,
            last_modified: None,
            pods: Vec::new(),
            record: ManifestRecord {
                source: SourceKind::Http,
                origin: url.to_string(),
                pods: vec![],
                hashes: vec![],
                error: None,
                last_applied: None,
                stale: false,
                seen: None,
                applied: None,
                ready: None,
                running: None,
                rollout: None,
            },
            seen: false,
            failures: 0,
        }
    }

    fn snapshot(&self) -> SourceSnapshot {
        SourceSnapshot {
            pods: self.pods.clone(),
            manifests: vec![self.record.clone()],
        }
    }

    /// Parses a body into pods: a Pod, or a PodList whose items must all be valid.
    pub fn parse(&self, body: &[u8]) -> Result<Vec<Arc<StaticPod>>, String> {
        let origin = Origin::Url(self.url.clone());
        let doc = staticlet_manifest::decode_document(body).map_err(|e| e.to_string())?;
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "PodList" {
            let pod = staticlet_manifest::from_value(doc, &origin, &self.node)
                .map_err(|e| e.to_string())?;
            return Ok(vec![Arc::new(pod)]);
        }
        let items = match doc.get("items") {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(_) => return Err("items: must be a list of Pods".into()),
        };
        let mut pods = Vec::new();
        let mut names = HashSet::new();
        for (i, mut item) in items.into_iter().enumerate() {
            if let Some(obj) = item.as_object_mut() {
                obj.entry("apiVersion").or_insert_with(|| "v1".into());
                obj.entry("kind").or_insert_with(|| "Pod".into());
            }
            let pod = staticlet_manifest::from_value(item, &origin, &self.node).map_err(|e| {
                let lines = match &e {
                    ManifestError::Invalid(_) => e.lines().join("; "),
                    other => other.to_string(),
                };
                format!("items[{i}]: {lines}")
            })?;
            if !names.insert(pod.full_name()) {
                return Err(format!(
                    "items[{i}]: duplicate pod {}/{} in the list",
                    pod.namespace, pod.name
                ));
            }
            pods.push(Arc::new(pod));
        }
        Ok(pods)
    }

    fn apply_pods(&mut self, pods: Vec<Arc<StaticPod>>, stale: bool) {
        self.record.pods = pods
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        self.record.hashes = pods.iter().map(|p| p.uid.clone()).collect();
        self.record.last_applied = Some(self.clock.now());
        self.record.stale = stale;
        self.pods = pods;
        self.seen = true;
    }

    /// Loads the remembered body, if any: the pods run from it until the URL answers.
    pub fn load_cache(&mut self) -> bool {
        let Some(entry) = self.lastgood.as_ref().and_then(|lg| lg.load(&self.url)) else {
            return false;
        };
        let body = entry.content.into_bytes();
        let pods = if body.is_empty() {
            Ok(Vec::new())
        } else {
            self.parse(&body)
        };
        match pods {
            Ok(pods) => {
                info!(url = %self.url, pods = pods.len(), "running the pods of the cached manifest until the URL answers");
                self.apply_pods(pods, true);
                self.last_body = Some(body);
                self.etag = entry.etag;
                self.last_modified = entry.last_modified;
                true
            }
            Err(e) => {
                warn!(url = %self.url, error = %e, "ignoring unusable cached manifest");
                false
            }
        }
    }

    fn fail(&mut self, error: String) -> Outcome {
        self.failures += 1;
        // kubelet logs the first three failures loudly, then quietly.
        if self.failures <= 3 {
            warn!(url = %self.url, error = %error, "manifest URL not applied; keeping the previous pods");
        } else if self.failures == 4 {
            warn!(url = %self.url, "manifest URL keeps failing; logging further failures at debug level");
        } else {
            tracing::debug!(url = %self.url, error = %error, "manifest URL not applied");
        }
        let changed = self.record.error.as_ref() != Some(&error);
        self.record.error = Some(error);
        if changed {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    }

    fn succeed(&mut self) {
        if self.failures > 0 {
            info!(url = %self.url, "successfully read pods from URL");
        }
        self.failures = 0;
    }

    async fn fetch(&self) -> Result<reqwest::Response, String> {
        let mut req = self.client.get(&self.url);
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(etag) = &self.etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &self.last_modified {
            req = req.header(reqwest::header::IF_MODIFIED_SINCE, lm);
        }
        req.send().await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg = format!("{msg}: {s}");
                src = s.source();
            }
            msg
        })
    }

    async fn read_body(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading body: {e}"))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_MANIFEST_BYTES {
                return Err(format!("body larger than {MAX_MANIFEST_BYTES} bytes"));
            }
        }
        Ok(body)
    }

    async fn poll(&mut self) -> Outcome {
        let resp = match self.fetch().await {
            Ok(r) => r,
            Err(e) => return self.fail(format!("{}: {e}", self.url)),
        };
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && self.last_body.is_some() {
            self.succeed();
            return self.clear_transport_error();
        }
        if status != reqwest::StatusCode::OK {
            return self.fail(format!("{}: {status}", self.url));
        }
        let etag = header(&resp, reqwest::header::ETAG);
        let last_modified = header(&resp, reqwest::header::LAST_MODIFIED);
        let body = match Self::read_body(resp).await {
            Ok(b) => b,
            Err(e) => return self.fail(format!("{}: {e}", self.url)),
        };
        self.succeed();
        if self.last_body.as_deref() == Some(&body[..]) {
            if self.body_error.is_none() {
                self.etag = etag;
                self.last_modified = last_modified;
            }
            return self.clear_transport_error();
        }
        self.last_body = Some(body.clone());
        let parsed = if body.is_empty() {
            warn!(url = %self.url, "zero-length data received; removing every pod of this URL");
            Ok(Vec::new())
        } else {
            self.parse(&body)
        };
        match parsed {
            Ok(pods) => {
                // Conditional-request validators describe the body we accepted; a bad body
                // keeps none, so the server is asked again in full.
                self.etag = etag;
                self.last_modified = last_modified;
                if let Some(lg) = &self.lastgood {
                    let entry = lastgood::Entry {
                        origin: self.url.clone(),
                        content: String::from_utf8_lossy(&body).into_owned(),
                        etag: self.etag.clone(),
                        last_modified: self.last_modified.clone(),
                    };
                    if let Err(e) = lg.store(&entry) {
                        warn!(url = %self.url, error = %e, "cannot cache manifest");
                    }
                }
                info!(url = %self.url, pods = pods.len(), "manifest URL applied");
                self.body_error = None;
                self.record.error = None;
                self.apply_pods(pods, false);
                Outcome::Changed
            }
            Err(e) => {
                self.etag = None;
                self.last_modified = None;
                self.body_error = Some(e.clone());
                // The pods (if any) keep running at the last good version.
                self.record.stale = !self.pods.is_empty();
                self.fail(e)
            }
        }
    }

    fn clear_transport_error(&mut self) -> Outcome {
        // The same (good or bad) body again: a parse error stays, a transport error clears.
        let was = (self.record.error.clone(), self.record.stale);
        self.record.error = self.body_error.clone();
        self.record.stale = self.record.error.is_some() && !self.pods.is_empty();
        if was != (self.record.error.clone(), self.record.stale) {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    }

    /// Runs the source until `shutdown`. A snapshot is sent once the source has a body (from the
    /// URL or the cache) and after every change; an unreachable URL without cache sends nothing,
    /// so the source stays "not seen" (as in kubelet, orphan cleanup then waits).
    pub async fn run(mut self, tx: mpsc::Sender<SourceUpdate>, shutdown: CancellationToken) {
        if self.load_cache() {
            let update = SourceUpdate {
                kind: SourceKind::Http,
                snapshot: self.snapshot(),
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                o = self.poll() => o,
            };
            if outcome == Outcome::Changed && self.seen {
                let update = SourceUpdate {
                    kind: SourceKind::Http,
                    snapshot: self.snapshot(),
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.frequency) => {}
            }
        }
    }
}

fn header(resp: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Parses kubelet's `--manifest-url-header` format: `Name:Value,Name2:Value2` (repeatable).
pub fn parse_headers(values: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for v in values {
        for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, val) = pair.split_once(':').ok_or_else(|| {
                format!("invalid --manifest-url-header {pair:?}: expected Name:Value")
            })?;
            let k = k.trim();
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(format!(
                    "invalid --manifest-url-header {pair:?}: bad header name"
                ));
            }
            out.push((k.to_string(), val.trim().to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
