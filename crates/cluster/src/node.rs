//! The Node object and its Lease, the pure part: what staticlet registers (labels, addresses,
//! capacity, nodeInfo), the Ready condition, and the Lease's content. The loop that sends them
//! is in `lib.rs`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use serde_json::{json, Value};

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// A lease is valid this long after its renewal (kubelet's `nodeLeaseDurationSeconds`).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Maximum pods reported in capacity (kubelet's default `maxPods`).
pub const MAX_PODS: &str = "110";

/// Facts about this machine for the Node's status, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub cpus: usize,
    /// `MemTotal` in KiB.
    pub memory_kib: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    /// e.g. `containerd://1.6.20`, `staticlet://0.1.0`.
    pub container_runtime_version: String,
}

impl HostFacts {
    /// Reads `/proc` and `/etc` (missing files give empty strings, never an error).
    pub fn read(container_runtime_version: String) -> HostFacts {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        HostFacts {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_kib,
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            system_uuid: read("/sys/class/dmi/id/product_uuid"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            container_runtime_version,
        }
    }
}

/// What the Node is registered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpecInput {
    pub node_name: String,
    pub host_ip: String,
    /// `--node-labels`, on top of the well-known ones.
    pub labels: BTreeMap<String, String>,
    /// `registerWithTaints` (key, value, effect): the new Node's taints.
    pub taints: Vec<(String, String, String)>,
    pub facts: HostFacts,
    /// The node API's port (`status.daemonEndpoints.kubeletEndpoint.Port`, where the API server
    /// reaches `kubectl logs`/`exec`); 0 when it is off.
    pub kubelet_port: u16,
}

/// Kubernetes' name of this machine's architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The labels staticlet sets on its Node (kubelet's well-known ones, then `--node-labels`).
pub fn node_labels(input: &NodeSpecInput) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("kubernetes.io/hostname".into(), input.node_name.clone()),
        ("kubernetes.io/os".into(), "linux".into()),
        ("kubernetes.io/arch".into(), go_arch().into()),
        ("beta.kubernetes.io/os".into(), "linux".into()),
        ("beta.kubernetes.io/arch".into(), go_arch().into()),
    ]);
    l.extend(input.labels.clone());
    l
}

/// The Ready condition: `KubeletReady` / `KubeletNotReady` as kubelet reports them.
pub fn ready_condition(
    ready: bool,
    message: &str,
    transition: SystemTime,
    now: SystemTime,
) -> NodeCondition {
    let t = staticlet_agent::status::time;
    NodeCondition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
        reason: Some(
            if ready {
                "KubeletReady"
            } else {
                "KubeletNotReady"
            }
            .into(),
        ),
        message: Some(if ready {
            "staticlet is posting ready status".to_string()
        } else {
            message.to_string()
        }),
        last_heartbeat_time: Some(t(now)),
        last_transition_time: Some(t(transition)),
    }
}

/// The Node's addresses, `(type, address)`: its InternalIP (the host IP, if any) and Hostname
/// (the node name). The serving certificate's SANs are made from them, as kubelet's are.
pub fn node_addresses(host_ip: &str, node_name: &str) -> Vec<(&'static str, String)> {
    let mut addresses = Vec::new();
    if !host_ip.is_empty() {
        addresses.push(("InternalIP", host_ip.to_string()));
    }
    addresses.push(("Hostname", node_name.to_string()));
    addresses
}

/// The Node's status (without conditions).
pub fn node_status(input: &NodeSpecInput) -> NodeStatus {
    let f = &input.facts;
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(f.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", f.memory_kib)),
        ),
        ("pods".to_string(), Quantity(MAX_PODS.into())),
    ]);
    let addresses = node_addresses(&input.host_ip, &input.node_name)
        .into_iter()
        .map(|(type_, address)| NodeAddress {
            type_: type_.into(),
            address,
        })
        .collect();
    NodeStatus {
        addresses: Some(addresses),
        allocatable: Some(resources.clone()),
        capacity: Some(resources),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(input.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: f.boot_id.clone(),
            container_runtime_version: f.container_runtime_version.clone(),
            kernel_version: f.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: f.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: f.os_image.clone(),
            system_uuid: f.system_uuid.clone(),
            swap: None,
        }),
        ..Default::default()
    }
}

/// `status.nodeInfo.kubeletVersion`: the Kubernetes release whose kubelet API staticlet
/// implements (its `k8s-openapi` feature, `v1_34`), with staticlet's own version as semver build
/// metadata. Tools parse this as a Kubernetes version (kubeadm's upgrade preflight refuses
/// anything else, e.g. the `staticlet/0.1.0` of earlier releases); `kubectl get nodes` shows both.
pub const KUBELET_VERSION: &str = concat!("v1.34.0+staticlet.", env!("CARGO_PKG_VERSION"));

/// The Node to create when none exists.
pub fn new_node(input: &NodeSpecInput, ready: NodeCondition) -> Node {
    let mut status = node_status(input);
    status.conditions = Some(vec![ready]);
    Node {
        metadata: ObjectMeta {
            name: Some(input.node_name.clone()),
            labels: Some(node_labels(input)),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_string(),
                "0".to_string(),
            )])),
            ..Default::default()
        },
        spec: (!input.taints.is_empty()).then(|| NodeSpec {
            taints: Some(
                input
                    .taints
                    .iter()
                    .map(|(key, value, effect)| Taint {
                        key: key.clone(),
                        value: (!value.is_empty()).then(|| value.clone()),
                        effect: effect.clone(),
                        time_added: None,
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: Some(status),
    }
}

/// A strategic merge patch of the Node's `status` (conditions merge by type, so conditions of
/// other writers stay).
pub fn status_patch(input: &NodeSpecInput, ready: NodeCondition) -> Value {
    let mut status = node_status(input);
    status.conditions = Some(vec![ready]);
    json!({ "status": status })
}

/// Labels of ours missing or different on an adopted Node, as a merge patch (`None`: in sync).
/// Only our keys are in it: labels of others (kubeadm's `node-role.kubernetes.io/control-plane`,
/// a user's) are never removed or changed, nor are taints or annotations (never patched).
pub fn labels_patch(input: &NodeSpecInput, node: &Node) -> Option<Value> {
    let have = node.metadata.labels.clone().unwrap_or_default();
    let missing: BTreeMap<String, String> = node_labels(input)
        .into_iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .collect();
    (!missing.is_empty()).then(|| json!({ "metadata": { "labels": missing } }))
}

/// The node's Lease, renewed at `now`: holder = node name, 40 s, owned by the Node (so it goes
/// with it), as kubelet's `nodelease` controller writes it.
pub fn lease(node_name: &str, node_uid: &str, now: SystemTime, base: Option<Lease>) -> Lease {
    let mut l = base.unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(node_name.to_string()),
            namespace: Some(LEASE_NAMESPACE.into()),
            ..Default::default()
        },
        spec: None,
    });
    l.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.to_string(),
        uid: node_uid.to_string(),
        controller: None,
        block_owner_deletion: None,
    }]);
    let spec = l.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(node_name.to_string());
    spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
    let micros = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    spec.renew_time = Some(MicroTime(
        k8s_openapi::jiff::Timestamp::from_microsecond(micros).unwrap_or_default(),
    ));
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> NodeSpecInput {
        NodeSpecInput {
            node_name: "n1".into(),
            host_ip: "10.0.0.5".into(),
            labels: BTreeMap::from([("example.com/role".into(), "edge".into())]),
            taints: vec![(
                "example.com/dedicated".into(),
                "cp".into(),
                "NoSchedule".into(),
            )],
            kubelet_port: 10250,
            facts: HostFacts {
                cpus: 2,
                memory_kib: 1024,
                container_runtime_version: "staticlet://0.1.0".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn new_node_carries_labels_addresses_capacity_and_version() {
        let t = SystemTime::UNIX_EPOCH;
        let n = new_node(&input(), ready_condition(true, "", t, t));
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(v["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert_eq!(v["metadata"]["labels"]["kubernetes.io/os"], "linux");
        assert_eq!(v["metadata"]["labels"]["kubernetes.io/arch"], go_arch());
        assert_eq!(v["metadata"]["labels"]["example.com/role"], "edge");
        assert_eq!(v["status"]["addresses"][0]["type"], "InternalIP");
        assert_eq!(v["status"]["addresses"][0]["address"], "10.0.0.5");
        assert_eq!(
            v["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert_eq!(v["status"]["capacity"]["cpu"], "2");
        assert_eq!(v["status"]["capacity"]["memory"], "1024Ki");
        assert_eq!(v["status"]["allocatable"]["pods"], "110");
        assert_eq!(
            v["status"]["nodeInfo"]["kubeletVersion"],
            "v1.34.0+staticlet.0.1.0"
        );
        assert_eq!(
            v["status"]["nodeInfo"]["containerRuntimeVersion"],
            "staticlet://0.1.0"
        );
        assert_eq!(v["status"]["conditions"][0]["reason"], "KubeletReady");
        assert_eq!(
            v["spec"]["taints"],
            json!([{"key": "example.com/dedicated", "value": "cp", "effect": "NoSchedule"}])
        );
    }

    #[test]
    fn not_ready_condition_has_the_reason() {
        let t = SystemTime::UNIX_EPOCH;
        let c = ready_condition(false, "container runtime not ready: down", t, t);
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some("KubeletNotReady"));
        assert_eq!(
            c.message.as_deref(),
            Some("container runtime not ready: down")
        );
    }

    #[test]
    fn labels_patch_only_when_out_of_sync() {
        let t = SystemTime::UNIX_EPOCH;
        let mut n = new_node(&input(), ready_condition(true, "", t, t));
        assert_eq!(labels_patch(&input(), &n), None);
        n.metadata
            .labels
            .as_mut()
            .unwrap()
            .remove("example.com/role");
        // Others' labels (kubeadm's role) are left alone, ours come back.
        n.metadata.labels.as_mut().unwrap().insert(
            "node-role.kubernetes.io/control-plane".into(),
            String::new(),
        );
        let p = labels_patch(&input(), &n).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"labels": {"example.com/role": "edge"}}})
        );
    }

    #[test]
    fn lease_is_held_by_the_node_for_40s() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        let l = lease("n1", "uid-1", now, None);
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(v["metadata"]["namespace"], "kube-node-lease");
        assert_eq!(v["spec"]["holderIdentity"], "n1");
        assert_eq!(v["spec"]["leaseDurationSeconds"], 40);
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert!(v["spec"]["renewTime"]
            .as_str()
            .unwrap()
            .starts_with("1970-01-01T00:00:01.5"));
    }
}
