//! The static pod's identity: a hash of the manifest's canonical content, its origin and the node.
//!
//! kubelet hashes its in-memory Pod struct, so its UIDs change whenever a kubelet upgrade adds a
//! field or a default, and every static pod restarts (kubernetes#116080). staticlet hashes only
//! what the user wrote: the decoded document, re-serialised as JSON with object keys sorted and
//! no insignificant white space. Comments, key order, YAML versus JSON and staticlet's own version
//! therefore never change a UID; any change of content, file path or node name does.
//!
//! **Compatibility invariant:** the byte layout hashed here is frozen. The golden tests in
//! `tests.rs` pin it; changing it restarts every static pod on upgrade.

use std::fmt::Write;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Origin;

/// Version tag of the hashed layout. Never change it for an existing layout.
const LAYOUT: &str = "staticlet.pod-hash.v1";

/// The config hash (and UID) of a manifest: 32 lowercase hex characters, like kubelet's.
pub fn config_hash(document: &Value, origin: &Origin, node: &str) -> String {
    let mut canonical = String::new();
    write_canonical(document, &mut canonical);
    let mut h = Sha256::new();
    h.update(LAYOUT.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    h.update(b"\nhost:");
    h.update(node.trim().to_lowercase().as_bytes());
    h.update(b"\n");
    match origin {
        Origin::File(path) => {
            h.update(b"file:");
            h.update(path.as_bytes());
        }
        Origin::Url(url) => {
            h.update(b"url:");
            h.update(url.as_bytes());
        }
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Canonical JSON: keys sorted by their UTF-8 bytes, no white space, serde_json's escaping and
/// number formatting. Written by hand so no crate feature (such as `preserve_order`) can change it.
pub fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
