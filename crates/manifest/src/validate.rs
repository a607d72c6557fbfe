//! Validation of a defaulted static pod: the parts of the API server's pod validation
//! (`pkg/apis/core/validation`) that matter on a node, plus kubelet's static-pod rules.
//!
//! Every error carries the field path in the API's notation
//! (`spec.containers[1].ports[0].containerPort`), so a user can find it in the file.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

/// One validation problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `spec.containers[0].image`.
    pub path: String,
    /// What is wrong, e.g. `Required value`.
    pub message: String,
}

impl FieldError {
    /// A new error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Validates a defaulted static pod (name already suffixed with the node name). Returns every
/// problem found, in field order.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if !is_dns1123_subdomain(name) {
        errs.push(FieldError::new(
            "metadata.name",
            format!("{name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253 characters)"),
        ));
    }
    let spec = pod.spec.as_ref().expect("caller checked spec");
    if spec.containers.is_empty() {
        errs.push(FieldError::new("spec.containers", "Required value"));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        if c.image.as_deref().unwrap_or("").trim().is_empty() {
            errs.push(FieldError::new(format!("spec.containers[{i}].image"), "Required value"));
        }
    }
    errs
}

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, alphanumeric at both ends, ≤ 253.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
