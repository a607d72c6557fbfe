//! The manifest corpus: every file of `testdata/valid` and `testdata/kubeadm` loads, and every
//! file of `testdata/invalid` is refused with the errors its `# expect:` lines name.

use std::fs;
use std::path::{Path, PathBuf};

use staticlet_manifest::{load, Origin, StaticPod};

const NODE: &str = "node-1";

fn files(dir: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "json"))
        .collect();
    files.sort();
    files
}

fn load_file(path: &Path) -> Result<StaticPod, staticlet_manifest::ManifestError> {
    let bytes = fs::read(path).expect("read manifest");
    load(&bytes, &Origin::File(path.display().to_string()), NODE)
}

/// The `# expect: <line>` comments at the top of a file.
fn expectations(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).expect("read manifest");
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn invalid_manifests_are_refused_with_the_expected_errors() {
    let files = files("invalid");
    assert!(files.len() >= 25, "only {} invalid manifests", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let want = expectations(path);
        assert!(!want.is_empty(), "{}: no `# expect:` line", path.display());
        match load_file(path) {
            Ok(_) => failures.push(format!("{}: loaded, want {want:?}", path.display())),
            Err(e) => {
                let got = e.lines();
                for w in &want {
                    if !got.contains(w) {
                        failures.push(format!("{}:\n  want {w}\n  got  {got:#?}", path.display()));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_manifests_load() {
    let files = files("valid");
    assert!(!files.is_empty());
    for path in &files {
        if let Err(e) = load_file(path) {
            panic!("{}: {:#?}", path.display(), e.lines());
        }
    }
}

#[test]
fn kubeadm_control_plane_manifests_load_unmodified() {
    let files = files("kubeadm");
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "etcd.yaml",
            "kube-apiserver.yaml",
            "kube-controller-manager.yaml",
            "kube-scheduler.yaml"
        ]
    );
    for path in &files {
        let pod =
            load_file(path).unwrap_or_else(|e| panic!("{}: {:#?}", path.display(), e.lines()));
        assert_eq!(pod.namespace, "kube-system");
        let stem = path.file_stem().unwrap().to_string_lossy();
        assert_eq!(pod.name, format!("{stem}-{NODE}"));
        let spec = pod.spec();
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(
            spec.priority_class_name.as_deref(),
            Some("system-node-critical")
        );
        let c = &spec.containers[0];
        assert!(c.startup_probe.is_some() && c.liveness_probe.is_some());
        // With hostNetwork, the named probe port gets hostPort = containerPort.
        let port = &c.ports.as_ref().unwrap()[0];
        assert_eq!(port.host_port, Some(port.container_port));
        assert!(pod.pod.status.is_none());
    }
}
