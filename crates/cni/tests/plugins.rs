//! Tests against the real reference plugins (Debian's `containernetworking-plugins`, installed in
//! `/usr/lib/cni`) in a network namespace and bridge of their own, and against small shell-script
//! plugins for the protocol details (environment, stdin, errors, timeouts).
//!
//! The real-plugin tests need root and `ip` (iproute2); without root they are skipped with a
//! message. No traffic is sent anywhere: the tests only look at addresses, files and iptables.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use staticlet_cni::{AttachRequest, Cni, Error, NetworkConfig, PortMapping};

const PLUGIN_DIR: &str = "/usr/lib/cni";

fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Whether the real-plugin tests can run; panics when root lacks the plugins (a missing install
/// step should fail, not skip).
fn real_plugins_available(test: &str) -> bool {
    if !is_root() {
        eprintln!("{test}: skipped: needs root (network namespaces, bridges)");
        return false;
    }
    assert!(
        Path::new(PLUGIN_DIR).join("bridge").is_file(),
        "{test}: {PLUGIN_DIR}/bridge missing: apt-get install containernetworking-plugins"
    );
    true
}

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A network namespace, a bridge name, a /24 and temporary conf, cache and IPAM dirs, all
/// unique to one test; removed on drop.
struct Net {
    ns: String,
    bridge: String,
    octet: u8,
    dir: tempfile::TempDir,
}

impl Net {
    fn new(portmap: bool) -> Net {
        static NEXT: AtomicU8 = AtomicU8::new(0);
        let r = random_u64();
        let octet = 1 + ((r as u8).wrapping_add(NEXT.fetch_add(37, Ordering::Relaxed)) % 250);
        let net = Net {
            ns: format!("staticlet-cnitest-{:08x}", (r >> 8) as u32),
            bridge: format!("stcni{:04x}", (r >> 40) as u16),
            octet,
            dir: tempfile::tempdir().unwrap(),
        };
        let (ok, out) = run(&["ip", "netns", "add", &net.ns]);
        assert!(ok, "ip netns add {}: {out}", net.ns);
        std::fs::create_dir_all(net.conf_dir()).unwrap();
        let mut plugins = vec![serde_json::json!({
            "type": "bridge",
            "bridge": net.bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": format!("10.233.{octet}.0/24")}]],
                "dataDir": net.ipam_dir(),
            }
        })];
        if portmap {
            plugins.push(serde_json::json!({
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true
            }));
        }
        plugins.push(serde_json::json!({"type": "loopback"}));
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "stcnitest",
            "plugins": plugins,
        });
        std::fs::write(
            net.conf_dir().join("10-test.conflist"),
            serde_json::to_vec_pretty(&conflist).unwrap(),
        )
        .unwrap();
        net
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }
    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }
    fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }
    fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.ns)
    }
    fn cni(&self) -> Cni {
        Cni::new(self.conf_dir(), vec![PLUGIN_DIR.into()], self.cache_dir())
    }
    fn request(&self, container_id: &str) -> AttachRequest {
        AttachRequest {
            container_id: container_id.to_string(),
            netns_path: self.netns_path(),
            ifname: "eth0".into(),
            pod_name: "web-node1".into(),
            pod_namespace: "default".into(),
            pod_uid: "0123456789abcdef".into(),
            port_mappings: Vec::new(),
        }
    }
    fn in_subnet(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                o[0] == 10 && o[1] == 233 && o[2] == self.octet && o[3] > 1
            }
            IpAddr::V6(_) => false,
        }
    }
    /// The addresses host-local holds (its files named after the IPs).
    fn allocated(&self) -> Vec<String> {
        let mut ips: Vec<String> = std::fs::read_dir(self.ipam_dir().join("stcnitest"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<IpAddr>().is_ok())
                    .collect()
            })
            .unwrap_or_default();
        ips.sort();
        ips
    }
    fn eth0_addrs(&self) -> (bool, String) {
        run(&["ip", "-n", &self.ns, "-4", "addr", "show", "eth0"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

fn iptables_nat() -> String {
    run(&["iptables-save", "-t", "nat"]).1
}

#[tokio::test]
async fn add_attaches_the_netns_and_del_releases_it() {
    if !real_plugins_available("add_attaches_the_netns_and_del_releases_it") {
        return;
    }
    let net = Net::new(true);
    let cni = net.cni();
    assert_eq!(cni.status().await, Ok(()));
    let id = format!("sandbox{:x}", random_u64());
    let mut req = net.request(&id);
    req.port_mappings.push(PortMapping {
        host_port: 30000 + u16::from(net.octet),
        container_port: 80,
        protocol: "TCP".into(),
        host_ip: String::new(),
    });

    let result = cni.add(&req).await.expect("ADD");
    let ip = result.pod_ip().expect("a pod IP");
    assert!(net.in_subnet(ip), "{ip} not in 10.233.{}.0/24", net.octet);
    assert_eq!(result.ips.len(), 1, "only eth0's address: {:?}", result.ips);
    let (ok, addrs) = net.eth0_addrs();
    assert!(ok && addrs.contains(&format!("inet {ip}/24")), "{addrs}");
    assert_eq!(net.allocated(), vec![ip.to_string()]);
    let (ok, lo) = run(&["ip", "-n", &net.ns, "link", "show", "lo"]);
    assert!(ok && lo.contains("UP"), "loopback is up: {lo}");
    // portmap wrote its DNAT chain for this sandbox (no traffic is sent to it).
    assert!(
        iptables_nat().contains(&id),
        "portmap rules for {id} missing:\n{}",
        iptables_nat()
    );
    let cache = net.cache_dir().join("stcnitest").join(&id);
    assert!(cache.is_file(), "{} missing", cache.display());

    cni.del(&req).await.expect("DEL");
    let (ok, out) = net.eth0_addrs();
    assert!(!ok, "eth0 still in the netns: {out}");
    assert!(
        net.allocated().is_empty(),
        "host-local still holds {:?}",
        net.allocated()
    );
    assert!(!iptables_nat().contains(&id), "portmap rules left behind");
    assert!(!cache.exists(), "cache entry left behind");
    assert_eq!(cni.cached_result(&id).await.unwrap(), None);

    cni.del(&req).await.expect("second DEL");
}

#[tokio::test]
async fn del_tolerates_a_missing_netns_and_cache() {
    if !real_plugins_available("del_tolerates_a_missing_netns_and_cache") {
        return;
    }
    let net = Net::new(false);
    let cni = net.cni();
    // Never added, netns path that does not exist.
    let mut never = net.request("neveradded");
    never.netns_path = "/run/netns/staticlet-cnitest-does-not-exist".into();
    cni.del(&never).await.expect("DEL of a never-added sandbox");

    // Added, then the netns goes away before DEL (e.g. after a node reboot): IPAM is released.
    let req = net.request("gonenetns");
    let ip = cni.add(&req).await.unwrap().pod_ip().unwrap();
    assert_eq!(net.allocated(), vec![ip.to_string()]);
    let (ok, out) = run(&["ip", "netns", "del", &net.ns]);
    assert!(ok, "{out}");
    cni.del(&req).await.expect("DEL without the netns");
    assert!(
        net.allocated().is_empty(),
        "host-local still holds {:?}",
        net.allocated()
    );
    cni.del(&req).await.expect("DEL again");
}

#[tokio::test]
async fn cached_result_survives_a_new_instance() {
    if !real_plugins_available("cached_result_survives_a_new_instance") {
        return;
    }
    let net = Net::new(false);
    let req = net.request("restarted");
    let added = net.cni().add(&req).await.unwrap();

    // An agent restart: a new invoker over the same directories.
    let cni = net.cni();
    let cached = cni
        .cached_result("restarted")
        .await
        .unwrap()
        .expect("cached");
    assert_eq!(cached, added);
    assert_eq!(cached.pod_ip(), added.pod_ip());
    assert_eq!(cni.cached_result("other").await.unwrap(), None);

    // The cached configuration tears the pod down even after the conf dir is gone.
    std::fs::remove_dir_all(net.conf_dir()).unwrap();
    cni.del(&req)
        .await
        .expect("DEL from the cached configuration");
    assert!(
        net.allocated().is_empty(),
        "host-local still holds {:?}",
        net.allocated()
    );
    let (ok, _) = net.eth0_addrs();
    assert!(!ok, "eth0 still in the netns");
}

#[tokio::test]
async fn failed_add_rolls_back_the_chain() {
    if !real_plugins_available("failed_add_rolls_back_the_chain") {
        return;
    }
    let net = Net::new(false);
    // bridge succeeds, then a plugin that fails: bridge's allocation must not leak.
    let bins = tempfile::tempdir().unwrap();
    script(
        bins.path(),
        "failer",
        r#"cat >/dev/null; [ "$CNI_COMMAND" = DEL ] && exit 0
echo '{"cniVersion":"1.0.0","code":11,"msg":"no can do","details":"by design"}'; exit 1"#,
    );
    let mut conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.conf_dir().join("10-test.conflist")).unwrap())
            .unwrap();
    conf["plugins"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "failer"}));
    std::fs::write(
        net.conf_dir().join("10-test.conflist"),
        serde_json::to_vec(&conf).unwrap(),
    )
    .unwrap();
    let cni = Cni::new(
        net.conf_dir(),
        vec![bins.path().into(), PLUGIN_DIR.into()],
        net.cache_dir(),
    );
    let err = cni.add(&net.request("rolledback")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("\"failer\"") && text.contains("ADD") && text.contains("code 11"),
        "{text}"
    );
    assert!(text.contains("no can do: by design"), "{text}");
    assert!(
        net.allocated().is_empty(),
        "host-local still holds {:?}",
        net.allocated()
    );
    let (ok, _) = net.eth0_addrs();
    assert!(!ok, "eth0 left in the netns");
    assert_eq!(cni.cached_result("rolledback").await.unwrap(), None);
}

#[tokio::test]
async fn missing_plugin_binary_names_plugin_and_bin_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("net.d");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("10-x.conflist"),
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"loopback"},{"type":"nosuchplugin"}]}"#,
    )
    .unwrap();
    let bins = vec![dir.path().join("bin-a"), dir.path().join("bin-b")];
    let cni = Cni::new(&conf, bins.clone(), dir.path().join("cache"));
    let status = cni.status().await.unwrap_err();
    let mut req = AttachRequest {
        container_id: "c1".into(),
        netns_path: dir.path().into(), // exists; never entered, as no plugin runs
        ifname: "eth0".into(),
        pod_name: "p".into(),
        pod_namespace: "ns".into(),
        pod_uid: "u".into(),
        port_mappings: Vec::new(),
    };
    let add = cni.add(&req).await.unwrap_err();
    assert!(matches!(add, Error::PluginNotFound { .. }), "{add:?}");
    for text in [status, add.to_string()] {
        assert!(text.contains("\"loopback\""), "{text}");
        for b in &bins {
            assert!(text.contains(&b.display().to_string()), "{text}");
        }
    }
    // DEL reports the missing plugin too, after trying the rest of the chain.
    req.netns_path = "/nonexistent".into();
    let del = cni.del(&req).await.unwrap_err().to_string();
    assert!(del.contains("\"nosuchplugin\""), "{del}");
}

#[tokio::test]
async fn no_config_is_none_and_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("net.d");
    assert_eq!(NetworkConfig::load(&missing).unwrap(), None);
    assert_eq!(NetworkConfig::load(dir.path()).unwrap(), None);
    let cni = Cni::new(&missing, vec![PLUGIN_DIR.into()], dir.path().join("cache"));
    let status = cni.status().await.unwrap_err();
    assert_eq!(
        status,
        format!("no CNI configuration file in {}", missing.display())
    );
    let req = AttachRequest {
        container_id: "c1".into(),
        netns_path: dir.path().into(),
        ifname: "eth0".into(),
        pod_name: "p".into(),
        pod_namespace: "ns".into(),
        pod_uid: "u".into(),
        port_mappings: Vec::new(),
    };
    assert!(matches!(cni.add(&req).await, Err(Error::NoConfig { .. })));
    cni.del(&req)
        .await
        .expect("DEL with nothing configured or cached");
}

#[tokio::test]
async fn malformed_conflist_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("10-bad.conflist");
    std::fs::write(
        &file,
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"#,
    )
    .unwrap();
    let err = NetworkConfig::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&file.display().to_string()), "{err}");
    std::fs::write(
        &file,
        r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"bridge":"b"}]}"#,
    )
    .unwrap();
    let err = NetworkConfig::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains("`plugins[0].type`"),
        "{err}"
    );
    let cni = Cni::new(dir.path(), vec![], dir.path().join("cache"));
    assert!(cni.status().await.unwrap_err().contains("10-bad.conflist"));
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Two recording plugins: the environment and stdin each one got are written to files.
#[tokio::test]
async fn env_and_stdin_follow_libcni() {
    let dir = tempfile::tempdir().unwrap();
    let (bin1, bin2, rec) = (
        dir.path().join("bin1"),
        dir.path().join("bin2"),
        dir.path().join("rec"),
    );
    for d in [&bin1, &bin2, &rec] {
        std::fs::create_dir(d).unwrap();
    }
    let body = format!(
        r#"n=$(basename "$0")
cat > {rec}/$n.$CNI_COMMAND.stdin
env | grep ^CNI_ | sort > {rec}/$n.$CNI_COMMAND.env
[ "$CNI_COMMAND" = DEL ] && exit 0
echo '{{"cniVersion":"1.0.0","interfaces":[{{"name":"eth0","sandbox":"'$CNI_NETNS'"}}],"ips":[{{"address":"10.99.0.7/24","interface":0}}],"by":"'$n'"}}'"#,
        rec = rec.display()
    );
    script(&bin1, "first", &body);
    script(&bin2, "second", &body);
    script(&bin2, "first", "exit 99"); // shadowed by bin1's
    let conf = dir.path().join("net.d");
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(
        conf.join("05-rec.conf"),
        r#"{"cniVersion":"0.4.0","name":"single","type":"first"}"#,
    )
    .unwrap();
    std::fs::write(
        conf.join("10-rec.conflist"),
        r#"{"cniVersion":"1.0.0","name":"rec","plugins":[
            {"type":"first","runtimeConfig":{"portMappings":[{"hostPort":1}]},"custom":{"a":1}},
            {"type":"second","capabilities":{"portMappings":true}}]}"#,
    )
    .unwrap();
    // The lexically first file wins: 05-rec.conf (a single plugin, wrapped).
    let cni = Cni::new(
        &conf,
        vec![bin1.clone(), bin2.clone()],
        dir.path().join("cache"),
    );
    assert_eq!(cni.load_config().unwrap().name, "single");
    std::fs::remove_file(conf.join("05-rec.conf")).unwrap();
    assert_eq!(cni.status().await, Ok(()));

    let req = AttachRequest {
        container_id: "cid42".into(),
        netns_path: dir.path().into(),
        ifname: "eth0".into(),
        pod_name: "web-node1".into(),
        pod_namespace: "kube-system".into(),
        pod_uid: "uid-9".into(),
        port_mappings: vec![PortMapping {
            host_port: 8443,
            container_port: 443,
            protocol: "TCP".into(),
            host_ip: "127.0.0.1".into(),
        }],
    };
    let result = cni.add(&req).await.unwrap();
    assert_eq!(result.pod_ip(), Some("10.99.0.7".parse().unwrap()));
    assert_eq!(result.raw["by"], "second");

    let read = |f: &str| std::fs::read_to_string(rec.join(f)).unwrap();
    let env = read("first.ADD.env");
    let want_env = format!(
        "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=web-node1;K8S_POD_INFRA_CONTAINER_ID=cid42;K8S_POD_UID=uid-9\n\
         CNI_COMMAND=ADD\nCNI_CONTAINERID=cid42\nCNI_IFNAME=eth0\nCNI_NETNS={}\nCNI_PATH={}:{}\n",
        dir.path().display(),
        bin1.display(),
        bin2.display()
    );
    assert_eq!(env, want_env);
    let first: serde_json::Value = serde_json::from_str(&read("first.ADD.stdin")).unwrap();
    assert_eq!(first["name"], "rec");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["custom"]["a"], 1);
    assert!(first.get("prevResult").is_none(), "{first}");
    assert!(
        first.get("runtimeConfig").is_none(),
        "not the plugin's to set: {first}"
    );
    let second: serde_json::Value = serde_json::from_str(&read("second.ADD.stdin")).unwrap();
    assert_eq!(second["prevResult"]["by"], "first");
    assert_eq!(
        second["runtimeConfig"]["portMappings"],
        serde_json::json!([{"hostPort": 8443, "containerPort": 443, "protocol": "tcp", "hostIP": "127.0.0.1"}])
    );

    // DEL: reverse order, the cached result as prevResult, empty CNI_NETNS once it is gone.
    let mut del_req = req.clone();
    del_req.netns_path = dir.path().join("gone");
    cni.del(&del_req).await.unwrap();
    let first_del: serde_json::Value = serde_json::from_str(&read("first.DEL.stdin")).unwrap();
    assert_eq!(first_del["prevResult"]["by"], "second");
    assert!(read("first.DEL.env").contains("CNI_NETNS=\n"));
    let modified = |f: &str| std::fs::metadata(rec.join(f)).unwrap().modified().unwrap();
    assert!(modified("second.DEL.env") <= modified("first.DEL.env"));
}

#[tokio::test]
async fn plugin_errors_and_timeouts_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    script(
        &bin,
        "jsonerr",
        r#"cat >/dev/null; echo '{"cniVersion":"1.0.0","code":7,"msg":"invalid config","details":"field x"}'; exit 1"#,
    );
    script(
        &bin,
        "plainerr",
        "cat >/dev/null; echo 'it broke' >&2; exit 3",
    );
    script(&bin, "garbage", "cat >/dev/null; echo 'not json'");
    script(&bin, "slow", "exec sleep 30");
    let conf = dir.path().join("net.d");
    std::fs::create_dir(&conf).unwrap();
    let req = AttachRequest {
        container_id: "c".into(),
        netns_path: dir.path().into(),
        ifname: "eth0".into(),
        pod_name: "p".into(),
        pod_namespace: "n".into(),
        pod_uid: "u".into(),
        port_mappings: Vec::new(),
    };
    let cases = [
        (
            "jsonerr",
            "CNI error code 7, exit status 1): invalid config: field x",
        ),
        ("plainerr", "exit status 3): it broke"),
        ("garbage", "invalid result"),
        ("slow", "timed out after 300ms and was killed"),
    ];
    for (plugin, want) in cases {
        std::fs::write(
            conf.join("10.conflist"),
            format!(r#"{{"cniVersion":"1.0.0","name":"e","plugins":[{{"type":"{plugin}"}}]}}"#),
        )
        .unwrap();
        let cni = Cni::new(&conf, vec![bin.clone()], dir.path().join("cache"))
            .with_timeout(Duration::from_millis(300));
        let err = cni.add(&req).await.unwrap_err().to_string();
        assert!(
            err.contains(&format!("\"{plugin}\" ADD")) && err.contains(want),
            "{plugin}: {err}"
        );
    }
}
