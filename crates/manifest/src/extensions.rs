//! staticlet's own annotations (`staticlet.io/...`): documented extensions a manifest may use,
//! never required. Each is validated with the rest of the manifest, so a bad value is an invalid
//! manifest (the last good version keeps running) and a misspelt key is an error rather than a
//! silently ignored setting.
//!
//! Pure: [`errors`] is part of [`crate::validate::validate_pod`]; the typed accessors
//! ([`backoff`]) are for the agent and assume a validated pod (on a bad value they fall back to
//! the defaults, which validation has already refused).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::parse_go_duration;
use crate::validate::FieldError;

/// Prefix of every staticlet annotation.
pub const PREFIX: &str = "staticlet.io/";

/// First restart delay of a crashing container (kubelet: 10 s).
pub const BACKOFF_INITIAL: &str = "staticlet.io/backoff-initial";
/// Longest restart delay (kubelet: 300 s).
pub const BACKOFF_MAX: &str = "staticlet.io/backoff-max";
/// How long a container must run (from its last restart) for its delay to start over at the
/// initial value (kubelet: 10 minutes, twice its maximum delay).
pub const BACKOFF_RESET_AFTER: &str = "staticlet.io/backoff-reset-after";

/// `staticlet.io/after: "etcd,other"`: the manifest names of static pods in the same namespace
/// that must be Ready before this one starts.
pub const AFTER: &str = "staticlet.io/after";

/// Set by the agent on the pods it serves and on mirror pods; accepted (and ignored) in a
/// manifest, so that a pod copied from `staticlet get -o yaml` or `kubectl get -o yaml` loads.
pub const MIRROR_UID: &str = "staticlet.io/mirror-uid";
/// See [`MIRROR_UID`].
pub const MIRROR_ERROR: &str = "staticlet.io/mirror-error";

/// Every `staticlet.io/` annotation a manifest may carry.
pub const KNOWN: &[&str] = &[
    crate::ANNOTATION_READY_DEADLINE,
    AFTER,
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    BACKOFF_RESET_AFTER,
    MIRROR_UID,
    MIRROR_ERROR,
];

/// kubelet's container restart back-off: `containerBackOffPeriod`.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// kubelet's `MaxContainerBackOff`.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// kubelet's reset: a back-off entry expires twice its maximum after its last update.
pub const DEFAULT_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// The container restart back-off of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub reset_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: DEFAULT_BACKOFF_INITIAL,
            max: DEFAULT_BACKOFF_MAX,
            reset_after: DEFAULT_BACKOFF_RESET_AFTER,
        }
    }
}

fn path(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// Reads the back-off annotations: `Ok` with kubelet's values where one is absent, or every
/// problem found.
fn parse_backoff(ann: &BTreeMap<String, String>) -> Result<BackoffPolicy, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut get = |key: &str, default: Duration| match ann.get(key) {
        None => Some(default),
        Some(v) => match parse_go_duration(v) {
            Ok(d) if d.is_zero() => {
                errs.push(FieldError::new(
                    path(key),
                    format!("Invalid value: {v:?}: must be greater than 0"),
                ));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errs.push(FieldError::new(path(key), format!("Invalid value: {e}")));
                None
            }
        },
    };
    let initial = get(BACKOFF_INITIAL, DEFAULT_BACKOFF_INITIAL);
    let max = get(BACKOFF_MAX, DEFAULT_BACKOFF_MAX);
    let reset_after = get(BACKOFF_RESET_AFTER, DEFAULT_BACKOFF_RESET_AFTER);
    if let (Some(i), Some(m)) = (initial, max) {
        if i > m {
            // Name the annotation the user wrote; with both written, the maximum.
            let key = if ann.contains_key(BACKOFF_MAX) {
                BACKOFF_MAX
            } else {
                BACKOFF_INITIAL
            };
            errs.push(FieldError::new(
                path(key),
                format!(
                    "Invalid value: {:?}: the maximum back-off ({}) must not be less than the initial one ({})",
                    ann.get(key).map(String::as_str).unwrap_or_default(),
                    show(m),
                    show(i)
                ),
            ));
        }
    }
    match (initial, max, reset_after) {
        (Some(initial), Some(max), Some(reset_after)) if errs.is_empty() => Ok(BackoffPolicy {
            initial,
            max,
            reset_after,
        }),
        _ => Err(errs),
    }
}

fn show(d: Duration) -> String {
    let s = d.as_secs_f64();
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{s}s")
    }
}

/// Every problem with the pod's `staticlet.io/` annotations (part of validation).
pub fn errors(ann: &BTreeMap<String, String>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for key in ann.keys() {
        let lower = key.to_ascii_lowercase();
        if lower.starts_with(PREFIX) && !KNOWN.contains(&key.as_str()) {
            errs.push(FieldError::new(
                path(key),
                format!(
                    "Unsupported value: {key:?}: staticlet knows {}",
                    KNOWN
                        .iter()
                        .map(|k| format!("{k:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    if let Err(e) = parse_backoff(ann) {
        errs.extend(e);
    }
    if let Some(v) = ann.get(AFTER) {
        let names: Vec<&str> = v.split(',').map(str::trim).collect();
        for n in &names {
            if n.is_empty() || !crate::validate::is_dns1123_subdomain(n) {
                errs.push(FieldError::new(
                    path(AFTER),
                    format!("Invalid value: {v:?}: a comma-separated list of pod names (as in their manifests), found {n:?}"),
                ));
                break;
            }
        }
    }
    errs
}

/// The names a pod's `staticlet.io/after` lists (none when absent or invalid).
pub fn after(ann: Option<&BTreeMap<String, String>>) -> Vec<String> {
    let Some(v) = ann.and_then(|a| a.get(AFTER)) else {
        return Vec::new();
    };
    let names: Vec<String> = v.split(',').map(|n| n.trim().to_string()).collect();
    if names
        .iter()
        .any(|n| n.is_empty() || !crate::validate::is_dns1123_subdomain(n))
    {
        return Vec::new();
    }
    names
}

/// The pod's container restart back-off (kubelet's unless annotated). For a validated pod.
pub fn backoff(ann: Option<&BTreeMap<String, String>>) -> BackoffPolicy {
    ann.and_then(|a| parse_backoff(a).ok()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn backoff_policy_from_annotations() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let cases: &[(Pairs, BackoffPolicy)] = &[
            (&[], BackoffPolicy::default()),
            (
                &[(BACKOFF_INITIAL, "1s")],
                BackoffPolicy {
                    initial: s(1),
                    ..Default::default()
                },
            ),
            (
                &[
                    (BACKOFF_INITIAL, "500ms"),
                    (BACKOFF_MAX, "5s"),
                    (BACKOFF_RESET_AFTER, "1m"),
                ],
                BackoffPolicy {
                    initial: ms(500),
                    max: s(5),
                    reset_after: s(60),
                },
            ),
            // A maximum below kubelet's initial 10 s needs the initial too.
            (
                &[(BACKOFF_INITIAL, "2s"), (BACKOFF_MAX, "2s")],
                BackoffPolicy {
                    initial: s(2),
                    max: s(2),
                    ..Default::default()
                },
            ),
        ];
        for (pairs, want) in cases {
            let a = ann(pairs);
            assert_eq!(errors(&a), vec![], "{pairs:?}");
            assert_eq!(backoff(Some(&a)), *want, "{pairs:?}");
        }
        assert_eq!(backoff(None), BackoffPolicy::default());
    }

    #[test]
    fn bad_annotations_are_named() {
        let cases: &[(Pairs, &[&str])] = &[
            (
                &[(BACKOFF_INITIAL, "soon")],
                &["metadata.annotations[staticlet.io/backoff-initial]: Invalid value: invalid duration \"soon\""],
            ),
            (
                &[(BACKOFF_MAX, "0s")],
                &["metadata.annotations[staticlet.io/backoff-max]: Invalid value: \"0s\": must be greater than 0"],
            ),
            (
                &[(BACKOFF_RESET_AFTER, "-1m")],
                &["metadata.annotations[staticlet.io/backoff-reset-after]: Invalid value: invalid duration \"-1m\": must not be negative"],
            ),
            (
                &[(BACKOFF_MAX, "5s")],
                &["metadata.annotations[staticlet.io/backoff-max]: Invalid value: \"5s\": the maximum back-off (5s) must not be less than the initial one (10s)"],
            ),
            (
                &[(BACKOFF_INITIAL, "20m")],
                &["metadata.annotations[staticlet.io/backoff-initial]: Invalid value: \"20m\": the maximum back-off (300s) must not be less than the initial one (1200s)"],
            ),
            (
                &[("staticlet.io/backof-initial", "1s")],
                &["metadata.annotations[staticlet.io/backof-initial]: Unsupported value: \"staticlet.io/backof-initial\": staticlet knows"],
            ),
            (
                &[("example.com/anything", "x"), (MIRROR_UID, "u")],
                &[],
            ),
            (&[(AFTER, "etcd, kube-apiserver")], &[]),
            (
                &[(AFTER, "etcd,,x")],
                &["metadata.annotations[staticlet.io/after]: Invalid value: \"etcd,,x\": a comma-separated list of pod names (as in their manifests), found \"\""],
            ),
            (
                &[(AFTER, "Etcd")],
                &["metadata.annotations[staticlet.io/after]: Invalid value: \"Etcd\""],
            ),
        ];
        for (pairs, want) in cases {
            let got: Vec<String> = errors(&ann(pairs))
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got.len(), want.len(), "{pairs:?}: {got:?}");
            for (g, w) in got.iter().zip(want.iter()) {
                assert!(g.starts_with(w), "{pairs:?}: got {g:?}, want prefix {w:?}");
            }
            assert_eq!(backoff(Some(&ann(pairs))), BackoffPolicy::default());
        }
    }
}
