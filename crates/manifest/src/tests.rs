//! Tests of the whole pipeline. Golden hashes pin the identity layout forever.

use super::*;

const NGINX: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: nginx
    image: nginx:1.27
    ports:
    - containerPort: 80
";

fn file(p: &str) -> Origin {
    Origin::File(p.to_string())
}

#[test]
fn golden_hash_is_frozen() {
    // If this fails, every static pod of every user restarts on upgrade. Do not update the
    // expected value; fix the change instead.
    let pod = load(
        NGINX.as_bytes(),
        &file("/etc/kubernetes/manifests/web.yaml"),
        "node-a",
    )
    .unwrap();
    assert_eq!(pod.uid, GOLDEN_NGINX);
    let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}});
    assert_eq!(
        hash::config_hash(&v, &Origin::Url("http://10.0.0.1/pods".into()), "n"),
        GOLDEN_URL
    );
}

// Computed independently: sha256("staticlet.pod-hash.v1\n" + json.dumps(doc, sort_keys=True,
// separators=(",", ":")) + "\nhost:" + node + "\n" + origin)[:32 hex] in Python.
const GOLDEN_NGINX: &str = "37b17d00cba655bac264daecfc48b3ae";
const GOLDEN_URL: &str = "2cf193d7aa45f84159f73a8b0a86e74b";

#[test]
fn hash_ignores_formatting_comments_and_key_order() {
    let reordered = "# a comment
kind: Pod
spec:
  containers:
  - ports:
    - containerPort: 80
    image: nginx:1.27   # trailing comment
    name: nginx
metadata:
  labels: {app: web}
  name: web
apiVersion: v1
";
    let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web"}},
      "spec":{"containers":[{"name":"nginx","image":"nginx:1.27","ports":[{"containerPort":80}]}]}}"#;
    let o = file("/m/web.yaml");
    let a = load(NGINX.as_bytes(), &o, "node-a").unwrap().uid;
    assert_eq!(load(reordered.as_bytes(), &o, "node-a").unwrap().uid, a);
    assert_eq!(load(json.as_bytes(), &o, "node-a").unwrap().uid, a);
    assert_eq!(
        load(NGINX.as_bytes(), &o, "NODE-A").unwrap().uid,
        a,
        "node name is lower-cased"
    );
}

#[test]
fn hash_changes_with_content_path_and_node() {
    let o = file("/m/web.yaml");
    let a = load(NGINX.as_bytes(), &o, "node-a").unwrap().uid;
    let changed = NGINX.replace("nginx:1.27", "nginx:1.28");
    assert_ne!(load(changed.as_bytes(), &o, "node-a").unwrap().uid, a);
    assert_ne!(
        load(NGINX.as_bytes(), &file("/m/web2.yaml"), "node-a")
            .unwrap()
            .uid,
        a
    );
    assert_ne!(load(NGINX.as_bytes(), &o, "node-b").unwrap().uid, a);
    assert_ne!(
        load(
            NGINX.as_bytes(),
            &Origin::Url("/m/web.yaml".into()),
            "node-a"
        )
        .unwrap()
        .uid,
        a
    );
}

#[test]
fn kubelet_metadata_is_applied() {
    let p = load(NGINX.as_bytes(), &file("/m/web.yaml"), "Node-A").unwrap();
    assert_eq!(p.name, "web-node-a");
    assert_eq!(p.namespace, "default");
    assert_eq!(p.uid.len(), 32);
    let meta = &p.pod.metadata;
    assert_eq!(meta.uid.as_deref(), Some(p.uid.as_str()));
    let ann = meta.annotations.as_ref().unwrap();
    assert_eq!(ann[ANNOTATION_CONFIG_HASH], p.uid);
    assert_eq!(ann[ANNOTATION_CONFIG_SOURCE], "file");
    let spec = p.spec();
    assert_eq!(spec.node_name.as_deref(), Some("node-a"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirst"));
    let tol = spec.tolerations.as_ref().unwrap();
    assert_eq!(tol.len(), 1);
    assert_eq!(tol[0].effect.as_deref(), Some("NoExecute"));
    assert_eq!(tol[0].operator.as_deref(), Some("Exists"));
    let c = &spec.containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        c.ports.as_ref().unwrap()[0].protocol.as_deref(),
        Some("TCP")
    );
    assert_eq!(
        c.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );

    let url = load(NGINX.as_bytes(), &Origin::Url("http://x/".into()), "n").unwrap();
    assert!(
        url.spec().tolerations.is_none(),
        "URL pods get no NoExecute toleration"
    );
    assert_eq!(
        url.pod.metadata.annotations.as_ref().unwrap()[ANNOTATION_CONFIG_SOURCE],
        "http"
    );
}

#[test]
fn explicit_uid_and_namespace_are_kept() {
    let m = NGINX.replace(
        "  name: web\n",
        "  name: web\n  namespace: kube-system\n  uid: fixed-uid\n",
    );
    let p = load(m.as_bytes(), &file("/m/web.yaml"), "n").unwrap();
    assert_eq!(p.uid, "fixed-uid");
    assert_eq!(p.namespace, "kube-system");
    assert_eq!(p.full_name(), "web-n_kube-system");
}

#[test]
fn host_network_defaults_host_port() {
    let m = NGINX.replace("spec:\n", "spec:\n  hostNetwork: true\n");
    let p = load(m.as_bytes(), &file("/m/web.yaml"), "n").unwrap();
    assert_eq!(
        p.spec().containers[0].ports.as_ref().unwrap()[0].host_port,
        Some(80)
    );
}

#[test]
fn decode_errors_are_precise() {
    let o = file("/m/x.yaml");
    let cases: &[(&str, &str)] = &[
        ("", "empty manifest"),
        ("   \n# only a comment\n", "empty manifest"),
        ("kind: Pod\napiVersion: v1\nmetadata: {name: a}\nspec: {containers: [}", "cannot parse"),
        ("kind: Deployment\napiVersion: apps/v1\n", "kind: must be \"Pod\", got \"Deployment\""),
        ("apiVersion: v1\nkind: PodList\nitems: []\n", "kind: must be \"Pod\", got \"PodList\""),
        ("kind: Pod\napiVersion: v2\n", "apiVersion: must be \"v1\""),
        ("- a\n- b\n", "must be a YAML or JSON object"),
        (
            "kind: Pod\napiVersion: v1\nmetadata: {name: a}\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: b}\n",
            "holds 2 documents",
        ),
        (
            "kind: Pod\napiVersion: v1\nmetadata: {name: a}\nspec:\n  containers:\n  - name: c\n    image: i\n    ports:\n    - containerPort: eighty\n",
            "spec.containers[0].ports[0].containerPort: invalid type",
        ),
        ("kind: Pod\napiVersion: v1\nmetadata: {labels: {a: b}}\nspec: {containers: []}\n", "metadata.name: name is needed"),
    ];
    for (input, want) in cases {
        let err = load(input.as_bytes(), &o, "n").unwrap_err().to_string();
        assert!(
            err.contains(want),
            "input {input:?}: got {err:?}, want it to contain {want:?}"
        );
    }
    let big = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert!(matches!(
        load(&big, &o, "n"),
        Err(ManifestError::TooLarge { .. })
    ));
}
