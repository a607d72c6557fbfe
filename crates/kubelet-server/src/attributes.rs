//! What a request to the node API asks for, as kubelet's authorizer sees it (kubelet's
//! `nodeAuthorizerAttributesGetter`, with `KubeletFineGrainedAuthz` on as in v1.34): the verb
//! from the HTTP method, the resource `nodes`, the node's name, and a subresource from the
//! path. Pure.
//!
//! | path | subresources checked, in order (all must allow) |
//! |---|---|
//! | `/stats/*` | `stats` |
//! | `/metrics/*` | `metrics` |
//! | `/logs/*` | `log` |
//! | `/checkpoint/*` | `checkpoint` |
//! | `/pods`, `/runningpods/` | `pods`, then `proxy` |
//! | `/healthz` | `healthz`, then `proxy` |
//! | `/configz` | `configz`, then `proxy` |
//! | `/statusz` | `statusz`, then `proxy` |
//! | anything else (`/containerLogs`, `/exec`, `/portForward`, ...) | `proxy` |
//!
//! kubelet authorizes the fine-grained subresource first and, failing that, `proxy`; a user
//! allowed `nodes/proxy` may therefore read every path.

/// One authorization question (a `SubjectAccessReview`'s `resourceAttributes`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: String,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub name: String,
    pub path: String,
}

/// kubelet's verb for an HTTP method (`""` for methods it does not map).
pub fn api_verb(method: &str) -> &'static str {
    match method {
        "POST" => "create",
        "GET" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        _ => "",
    }
}

/// Whether `path` is `prefix` or below it (kubelet's `isSubpath`).
fn is_subpath(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The subresources kubelet checks for `path`, in order: the first that allows decides, as
/// kubelet's fine-grained authorization does (`pods`, `healthz`, `configz` and `statusz` are
/// also readable with `proxy`).
pub fn subresources(path: &str) -> Vec<&'static str> {
    let mut subs = Vec::new();
    for (prefix, sub) in [
        ("/pods", "pods"),
        ("/healthz", "healthz"),
        ("/configz", "configz"),
        ("/statusz", "statusz"),
        ("/runningpods/", "pods"),
    ] {
        if is_subpath(path, prefix) {
            subs.push(sub);
            break;
        }
    }
    let last = [
        ("/stats", "stats"),
        ("/metrics", "metrics"),
        ("/logs", "log"),
        ("/checkpoint", "checkpoint"),
    ]
    .into_iter()
    .find(|(prefix, _)| is_subpath(path, prefix))
    .map_or("proxy", |(_, sub)| sub);
    subs.push(last);
    subs
}

/// The attributes to authorize for a request, fine-grained first.
pub fn request_attributes(method: &str, path: &str, node_name: &str) -> Vec<Attributes> {
    subresources(path)
        .into_iter()
        .map(|subresource| Attributes {
            verb: api_verb(method).to_string(),
            resource: "nodes",
            subresource,
            name: node_name.to_string(),
            path: path.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_kubelets_subresources() {
        let cases: &[(&str, &[&str])] = &[
            ("/stats/summary", &["stats"]),
            ("/stats", &["stats"]),
            ("/metrics", &["metrics"]),
            ("/metrics/resource", &["metrics"]),
            ("/metrics/cadvisor", &["metrics"]),
            ("/logs/", &["log"]),
            ("/logs/syslog", &["log"]),
            ("/checkpoint/ns/p/c", &["checkpoint"]),
            ("/pods", &["pods", "proxy"]),
            ("/pods/", &["pods", "proxy"]),
            ("/runningpods/", &["pods", "proxy"]),
            ("/healthz", &["healthz", "proxy"]),
            ("/healthz/ping", &["healthz", "proxy"]),
            ("/configz", &["configz", "proxy"]),
            ("/containerLogs/kube-system/etcd-n/etcd", &["proxy"]),
            ("/exec/ns/p/c", &["proxy"]),
            ("/portForward/ns/p", &["proxy"]),
            ("/attach/ns/p/c", &["proxy"]),
            // Not a subpath: a longer first segment.
            ("/statsfoo", &["proxy"]),
            ("/podsx", &["proxy"]),
            ("/", &["proxy"]),
        ];
        for (path, want) in cases {
            assert_eq!(subresources(path), *want, "{path}");
        }
    }

    #[test]
    fn verbs_come_from_the_method() {
        let a = request_attributes("POST", "/exec/ns/p/c", "node-1");
        assert_eq!(
            a,
            vec![Attributes {
                verb: "create".into(),
                resource: "nodes",
                subresource: "proxy",
                name: "node-1".into(),
                path: "/exec/ns/p/c".into(),
            }]
        );
        assert_eq!(api_verb("GET"), "get");
        assert_eq!(api_verb("PUT"), "update");
        assert_eq!(api_verb("PATCH"), "patch");
        assert_eq!(api_verb("DELETE"), "delete");
        assert_eq!(api_verb("OPTIONS"), "");
    }
}
