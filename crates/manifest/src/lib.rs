//! Static pod manifests: from bytes to a validated [`StaticPod`] with a stable identity.
//!
//! This crate mirrors kubelet's `pkg/kubelet/config/common.go` (`tryDecodeSinglePod`,
//! `applyDefaults`) plus the parts of the API server's defaulting and validation that matter on
//! a node. It is pure: no I/O, no clock, no async. The agent's sources, `staticlet validate` and
//! the tests all go through [`load`], so the offline lint and the agent can never disagree.
//!
//! Pipeline of [`load`]:
//! 1. decode YAML or JSON (one document, at most [`MAX_MANIFEST_BYTES`]) into a JSON value;
//! 2. compute the identity ([`hash::config_hash`]) from the *canonical* form of that value, the
//!    origin and the node name, so the UID never depends on formatting, key order, comments or
//!    on staticlet's own version;
//! 3. decode into `k8s_openapi` types, reporting the field path of any type error;
//! 4. apply the API server's defaults ([`defaults`]) and kubelet's static-pod metadata;
//! 5. validate ([`validate`]): every problem, each with its field path.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Toleration};
use serde_json::Value;

pub mod defaults;
pub mod duration;
pub mod extensions;
pub mod hash;
pub mod validate;

pub use validate::FieldError;

/// Largest manifest accepted, as kubelet's `maxConfigLength`.
pub const MAX_MANIFEST_BYTES: usize = 10 << 20;

/// `kubernetes.io/config.hash`: the static pod's UID.
pub const ANNOTATION_CONFIG_HASH: &str = "kubernetes.io/config.hash";
/// `kubernetes.io/config.source`: `file` or `http`.
pub const ANNOTATION_CONFIG_SOURCE: &str = "kubernetes.io/config.source";
/// `kubernetes.io/config.seen`: when the agent first saw this UID.
pub const ANNOTATION_CONFIG_SEEN: &str = "kubernetes.io/config.seen";
/// `kubernetes.io/config.mirror`: on mirror pods, the hash of their static pod.
pub const ANNOTATION_CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";
/// `staticlet.io/ready-deadline`: a Go duration; an update of the pod must be Ready within it or
/// it is rolled back (it wins over `--rollout-ready-deadline`).
pub const ANNOTATION_READY_DEADLINE: &str = "staticlet.io/ready-deadline";

/// Where a manifest came from. Part of the pod's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// A file; the path as the agent names it (absolute, symlinks not resolved).
    File(String),
    /// A manifest URL.
    Url(String),
}

impl Origin {
    /// `file` or `http`, the value of `kubernetes.io/config.source`.
    pub fn source_kind(&self) -> &'static str {
        match self {
            Origin::File(_) => "file",
            Origin::Url(_) => "http",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(p) => f.write_str(p),
            Origin::Url(u) => f.write_str(u),
        }
    }
}

/// A decoded, defaulted and validated static pod.
///
/// Invariant: `pod.metadata.name`, `namespace` and `uid` are set and equal to the fields here;
/// `pod.spec` is set; `pod.metadata.annotations` holds `config.hash` and `config.source`.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticPod {
    /// The UID: the config hash (or the manifest's own `metadata.uid`).
    pub uid: String,
    /// `<name>-<node>`.
    pub name: String,
    pub namespace: String,
    pub origin: Origin,
    /// The full object as the agent serves it (status empty).
    pub pod: Pod,
    /// The manifest's bytes (a URL's `PodList` item: its JSON), UTF-8 since they decoded.
    /// Kept so that a version can be started again later (a rollback after an agent restart).
    pub content: Arc<str>,
    /// The lowercase hex SHA-256 of `content`: the version's identity for rollouts and
    /// `staticlet wait manifest` (for a file, the hash of the file).
    pub content_hash: String,
}

impl StaticPod {
    /// kubelet's "full name": `<name>_<namespace>`. One pod per full name runs at a time.
    pub fn full_name(&self) -> String {
        format!("{}_{}", self.name, self.namespace)
    }

    /// The pod's spec (always present, see the type's invariant).
    pub fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        self.pod
            .spec
            .as_ref()
            .expect("StaticPod invariant: spec is set")
    }

    /// The `staticlet.io/ready-deadline` annotation (validated by [`load`]).
    pub fn ready_deadline(&self) -> Option<std::time::Duration> {
        let v = self
            .pod
            .metadata
            .annotations
            .as_ref()?
            .get(ANNOTATION_READY_DEADLINE)?;
        duration::parse_go_duration(v).ok()
    }
}

/// The lowercase hex SHA-256 of `data` (a manifest's content hash).
pub fn content_hash(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Why a manifest was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {size} bytes, larger than the limit of {MAX_MANIFEST_BYTES} bytes")]
    TooLarge { size: usize },
    #[error("empty manifest")]
    Empty,
    #[error("cannot parse as YAML or JSON: {0}")]
    Syntax(String),
    #[error("holds {0} documents; a manifest file holds exactly one Pod")]
    MultipleDocuments(usize),
    #[error("{0}")]
    NotAPod(String),
    #[error("{path}: {message}")]
    Decode { path: String, message: String },
    #[error("{}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

impl ManifestError {
    /// The individual problems, one line each (`field.path: message`).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ManifestError::Invalid(errs) => errs.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn join_errors(errs: &[FieldError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Decodes one document of YAML or JSON into a JSON value, with kubelet's size limit.
pub fn decode_document(data: &[u8]) -> Result<Value, ManifestError> {
    if data.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge { size: data.len() });
    }
    let text =
        std::str::from_utf8(data).map_err(|e| ManifestError::Syntax(format!("not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(ManifestError::Empty);
    }
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()));
    }
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
    let mut docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    match docs.len() {
        0 => Err(ManifestError::Empty),
        1 => Ok(docs.remove(0)),
        n => Err(ManifestError::MultipleDocuments(n)),
    }
}

/// Checks that a decoded value is a `v1` `Pod`.
pub fn check_kind(value: &Value) -> Result<(), ManifestError> {
    let Some(obj) = value.as_object() else {
        return Err(ManifestError::NotAPod(
            "a manifest must be a YAML or JSON object".into(),
        ));
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if kind != "Pod" {
        let got = if kind.is_empty() {
            "nothing".to_string()
        } else {
            format!("{kind:?}")
        };
        return Err(ManifestError::NotAPod(format!(
            "kind: must be \"Pod\", got {got}"
        )));
    }
    if api_version != "v1" {
        return Err(ManifestError::NotAPod(format!(
            "apiVersion: must be \"v1\" for a Pod, got {api_version:?}"
        )));
    }
    Ok(())
}

/// Decodes a JSON value into a Pod, naming the field of the first type error.
pub fn to_pod(value: Value) -> Result<Pod, ManifestError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ManifestError::Decode {
            path: if path == "." { "(root)".into() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// The whole pipeline: bytes of one manifest → a static pod for `node`.
pub fn load(data: &[u8], origin: &Origin, node: &str) -> Result<StaticPod, ManifestError> {
    let value = decode_document(data)?;
    let text = std::str::from_utf8(data).expect("decode_document checked UTF-8");
    from_value_with_content(value, origin, node, text)
}

/// The pipeline from an already decoded document (used for the items of a URL's `PodList`).
pub fn from_value(value: Value, origin: &Origin, node: &str) -> Result<StaticPod, ManifestError> {
    let text = serde_json::to_string(&value).unwrap_or_default();
    from_value_with_content(value, origin, node, &text)
}

fn from_value_with_content(
    value: Value,
    origin: &Origin,
    node: &str,
    content: &str,
) -> Result<StaticPod, ManifestError> {
    check_kind(&value)?;
    let hash = hash::config_hash(&value, origin, node);
    let mut pod = to_pod(value)?;
    let meta = &mut pod.metadata;
    if meta.name.as_deref().unwrap_or("").is_empty() {
        return Err(ManifestError::Invalid(vec![FieldError::new(
            "metadata.name",
            "name is needed for the pod (generateName is not supported for static pods)",
        )]));
    }
    if pod.spec.is_none() {
        return Err(ManifestError::Invalid(vec![FieldError::new(
            "spec",
            "Required value",
        )]));
    }
    let node = node.to_lowercase();
    let uid = match meta.uid.as_deref() {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => hash,
    };
    let name = format!("{}-{}", meta.name.as_deref().unwrap_or_default(), node);
    let namespace = match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns.to_string(),
        _ => "default".to_string(),
    };
    meta.name = Some(name.clone());
    meta.namespace = Some(namespace.clone());
    meta.uid = Some(uid.clone());
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    annotations.insert(ANNOTATION_CONFIG_HASH.into(), uid.clone());
    annotations.insert(ANNOTATION_CONFIG_SOURCE.into(), origin.source_kind().into());

    defaults::apply(&mut pod);
    let spec = pod.spec.as_mut().expect("checked above");
    spec.node_name = Some(node.clone());
    if let Origin::File(_) = origin {
        // kubelet: "so they are not evicted when there are node problems".
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        let no_execute = Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Toleration::default()
        };
        if !tolerations.contains(&no_execute) {
            tolerations.push(no_execute);
        }
    }
    pod.status = None;

    let errs = validate::validate_pod(&pod);
    if !errs.is_empty() {
        return Err(ManifestError::Invalid(errs));
    }
    Ok(StaticPod {
        uid,
        name,
        namespace,
        origin: origin.clone(),
        pod,
        content: Arc::from(content),
        content_hash: content_hash(content.as_bytes()),
    })
}

#[cfg(test)]
mod tests;
