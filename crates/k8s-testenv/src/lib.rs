//! A real Kubernetes control plane for end-to-end tests: etcd and kube-apiserver started from
//! already-built binaries (`scripts/build-k8s.sh`), with a kubeadm-generated PKI, in a private
//! temporary directory, on free loopback ports.
//!
//! ```no_run
//! use staticlet_k8s_testenv::{skip_reason, ControlPlane};
//!
//! if let Some(why) = skip_reason() {
//!     eprintln!("skipped: {why}");
//!     return;
//! }
//! let cp = ControlPlane::start("node-a").unwrap();
//! // Give `cp.node_kubeconfig()` to staticlet; look at what it did as cluster-admin:
//! let pods = cp.kubectl_json(&["get", "pods", "-A"]).unwrap();
//! # let _ = pods;
//! ```
//!
//! What runs: etcd and kube-apiserver only (no controller-manager, scheduler or kubelet), the
//! apiserver with `--authorization-mode=Node,RBAC` and `--enable-admission-plugins=NodeRestriction`
//! as in a kubeadm cluster, so the node credentials are exactly as restricted as a kubelet's.
//! Everything is synchronous (`std::process`); from async tests call it as it is (start takes
//! seconds) or through `spawn_blocking`.
//!
//! Environment:
//! - `STATICLET_K8S_BIN`: the directory with the binaries (default [`DEFAULT_BIN_DIR`]).
//! - `STATICLET_REQUIRE_K8S=1`: missing binaries are a failure, not a skip (see [`skip_reason`]).
//! - `STATICLET_KEEP_TESTENV=1`: the temporary directory (logs, PKI, kubeconfigs, etcd data) is
//!   kept after the control plane is dropped; its path is printed to stderr.
//! - `STATICLET_K8S_READY_TIMEOUT`: seconds to wait for the apiserver to be ready (default 180).

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Where `scripts/build-k8s.sh` puts the binaries by default, used when `STATICLET_K8S_BIN` is
/// unset.
pub const DEFAULT_BIN_DIR: &str = "/var/cache/staticlet-k8s/v1.34.4/bin";

/// The binaries [`ControlPlane`] runs.
const REQUIRED_BINS: [&str; 4] = ["etcd", "kube-apiserver", "kubeadm", "kubectl"];

/// The service CIDR given to kubeadm and kube-apiserver.
const SERVICE_CIDR: &str = "10.96.0.0/12";

/// The directory with the Kubernetes binaries: `$STATICLET_K8S_BIN` if set and not empty, else
/// [`DEFAULT_BIN_DIR`].
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("STATICLET_K8S_BIN") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_BIN_DIR),
    }
}

/// Why the control plane can't run here (binaries missing from [`bin_dir`]), or `None` if it can.
///
/// Tests call it first and return early (after printing the reason) when it is `Some`.
///
/// # Panics
/// If `STATICLET_REQUIRE_K8S=1` and binaries are missing (CI sets it, so a broken setup fails
/// instead of silently skipping every end-to-end test).
pub fn skip_reason() -> Option<String> {
    let dir = bin_dir();
    let missing: Vec<&str> = REQUIRED_BINS
        .iter()
        .copied()
        .filter(|b| !is_executable(&dir.join(b)))
        .collect();
    if missing.is_empty() {
        return None;
    }
    let reason = format!(
        "Kubernetes binaries missing from {} ({}); run scripts/build-k8s.sh and/or set \
         STATICLET_K8S_BIN to the directory it prints",
        dir.display(),
        missing.join(", ")
    );
    if env_flag("STATICLET_REQUIRE_K8S") {
        panic!("STATICLET_REQUIRE_K8S=1 but {reason}");
    }
    Some(reason)
}

/// A running etcd + kube-apiserver in a private temporary directory.
///
/// Dropping it kills both processes (SIGKILL, then waits for them) and removes the directory
/// (unless `STATICLET_KEEP_TESTENV=1`). Dropped while panicking, it first prints the directory
/// and the tail of the apiserver's log to stderr.
///
/// Layout of [`dir`](Self::dir): `pki/` (kubeadm's certificates), `kubeconfig/`
/// (`super-admin.conf`, `kubelet.conf`), `etcd-data/`, and the logs `kubeadm.log`, `etcd.log`,
/// `apiserver.log`.
#[derive(Debug)]
pub struct ControlPlane {
    // Removes the directory when dropped, i.e. after `Drop for ControlPlane` has killed the
    // processes (fields are dropped after it runs).
    dir: tempfile::TempDir,
    bin: PathBuf,
    node_name: String,
    api_port: u16,
    apiserver_args: Vec<OsString>,
    etcd: Child,
    apiserver: Option<Child>,
}

impl ControlPlane {
    /// Starts a control plane whose node credentials are for the node `node_name`.
    ///
    /// Generates a PKI with kubeadm (`init phase certs all`, `init phase kubeconfig super-admin`
    /// and `init phase kubeconfig kubelet` with `nodeRegistration.name = node_name`, so
    /// `kubelet.conf` authenticates as `CN=system:node:<node_name>, O=system:nodes`), starts etcd
    /// and kube-apiserver on free loopback ports (`--authorization-mode=Node,RBAC`,
    /// `--enable-admission-plugins=NodeRestriction`, `--allow-privileged`,
    /// `--enable-bootstrap-token-auth`), polls `/readyz` until
    /// ready (up to 180 s, see `STATICLET_K8S_READY_TIMEOUT`), then creates the ServiceAccount
    /// `default/default` (kube-controller-manager, which would, does not run; without it the
    /// ServiceAccount admission plugin refuses every non-mirror pod in `default`).
    ///
    /// Errors name the step that failed and carry the tail of the component's log. A start that
    /// fails because a port was taken in the meantime is retried with other ports.
    pub fn start(node_name: &str) -> Result<ControlPlane, String> {
        Self::start_opts(node_name, false)
    }

    /// As [`start`](Self::start), and the API server verifies node agents' serving
    /// certificates against the cluster CA (`--kubelet-certificate-authority=pki/ca.crt`), as a
    /// cluster whose kubelets use `serverTLSBootstrap` can: `kubectl logs` and the node proxy
    /// then fail against a self-signed serving certificate.
    pub fn start_verifying_kubelets(node_name: &str) -> Result<ControlPlane, String> {
        Self::start_opts(node_name, true)
    }

    fn start_opts(node_name: &str, verify_kubelets: bool) -> Result<ControlPlane, String> {
        validate_node_name(node_name)?;
        if let Some(why) = skip_reason() {
            return Err(why);
        }
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            match Self::start_once(node_name, verify_kubelets) {
                Ok(cp) => return Ok(cp),
                Err(Failure {
                    port_taken: true,
                    message,
                }) if attempt < ATTEMPTS => {
                    eprintln!("staticlet-k8s-testenv: a port was taken, retrying: {message}");
                    attempt += 1;
                }
                Err(Failure { message, .. }) => return Err(message),
            }
        }
    }

    /// The private temporary directory (PKI, kubeconfigs, etcd data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The apiserver's URL, `https://127.0.0.1:PORT` (the server of both kubeconfigs).
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }

    /// A kubeconfig for a cluster admin: kubeadm's `super-admin.conf`, a client certificate in
    /// group `system:masters`, so it works without any RBAC binding.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig/super-admin.conf")
    }

    /// The kubeconfig a kubelet for [`node_name`](Self::node_name) would use (kubeadm's
    /// `kubelet.conf`): user `system:node:<node_name>` in group `system:nodes`, hence limited by
    /// the Node authorizer and the NodeRestriction admission plugin.
    pub fn node_kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig/kubelet.conf")
    }

    /// The node name the node credentials are for.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Runs the real kubectl as cluster admin with `args` and returns its output (stdout and
    /// stderr captured; never panics: a kubectl that can't be started gives an `Output` with exit
    /// code 127 and the error in stderr).
    ///
    /// The admin kubeconfig is passed first, so `args` may override it: with
    /// `["--kubeconfig", node_kubeconfig, ...]` (the last `--kubeconfig` wins) kubectl acts as the
    /// node. No `--request-timeout` is set: against a frozen apiserver pass one.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let out = self.kubectl_command(args).output();
        out.unwrap_or_else(|e| spawn_failure_output(&self.bin.join("kubectl"), &e))
    }

    /// Runs `kubectl <args> -o json` as [`kubectl`](Self::kubectl) does and parses stdout.
    /// `Err` carries kubectl's stderr when it fails (e.g. `NotFound`), or the parse error.
    pub fn kubectl_json(&self, args: &[&str]) -> Result<serde_json::Value, String> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.kubectl(&all);
        if !out.status.success() {
            return Err(format!(
                "kubectl {}: {}: {}",
                all.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| {
            format!(
                "kubectl {}: output is not JSON ({e}): {}",
                all.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Applies a YAML or JSON manifest (one or several objects) with `kubectl apply -f -` as
    /// cluster admin. `Err` carries kubectl's stderr.
    pub fn apply(&self, manifest: &str) -> Result<(), String> {
        let mut cmd = self.kubectl_command(&["apply", "-f", "-"]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.join("kubectl").display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A kubectl that fails before reading stdin closes it: its stderr says why.
            let _ = stdin.write_all(manifest.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for kubectl apply: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "kubectl apply: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Kills the apiserver with SIGKILL (also when frozen) and waits for it. etcd keeps running,
    /// so [`restart_apiserver`](Self::restart_apiserver) finds the same data. No-op if it is not
    /// running.
    pub fn kill_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the apiserver again with the same flags, port and certificates (killing it first if
    /// it still runs) and waits until it is ready, as [`start`](Self::start) does. Its log is
    /// appended to the same `apiserver.log`, after a marker line.
    pub fn restart_apiserver(&mut self) -> Result<(), String> {
        self.kill_apiserver();
        self.spawn_apiserver(true)?;
        self.wait_ready(ready_deadline()).map_err(|f| f.message)
    }

    /// Freezes the apiserver (SIGSTOP): its port still accepts connections but nothing answers,
    /// like a hung server. No-op if it is not running.
    pub fn freeze_apiserver(&self) {
        self.signal_apiserver(Signal::SIGSTOP);
    }

    /// Resumes an apiserver frozen by [`freeze_apiserver`](Self::freeze_apiserver) (SIGCONT).
    pub fn thaw_apiserver(&self) {
        self.signal_apiserver(Signal::SIGCONT);
    }

    /// The last `lines` lines of the apiserver's log (all its runs), for assertion messages.
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        tail(&self.dir().join("apiserver.log"), lines)
    }

    // ------------------------------------------------------------------------------ internals

    fn start_once(node_name: &str, verify_kubelets: bool) -> Result<ControlPlane, Failure> {
        let keep = env_flag("STATICLET_KEEP_TESTENV");
        let mut dir = tempfile::Builder::new()
            .prefix("staticlet-k8s-testenv.")
            .tempdir()
            .map_err(|e| Failure::other(format!("cannot create a temporary directory: {e}")))?;
        dir.disable_cleanup(keep);
        let d = dir.path().to_path_buf();
        let bin = bin_dir();
        let [etcd_client, etcd_peer, etcd_metrics, api_port] = free_ports()?;

        // kubeadm refuses a loopback advertise address (it takes 127.0.0.1 for "the global
        // address on lo"), so the certificates and the apiserver advertise the host's source
        // address while the apiserver binds 127.0.0.1 only; 127.0.0.1 is in the serving
        // certificate's SANs and is the server of both kubeconfigs (set below).
        let advertise = advertise_address();
        let version = kubeadm_version(&bin)?;
        let pki = d.join("pki");
        let kubeconfig_dir = d.join("kubeconfig");
        for sub in [&pki, &kubeconfig_dir, &d.join("etcd-data")] {
            fs::create_dir_all(sub)
                .map_err(|e| Failure::other(format!("cannot create {}: {e}", sub.display())))?;
        }
        let advertise_line = match advertise {
            Some(ip) => format!("advertiseAddress: {ip}"),
            None => String::new(),
        };
        let kubeadm_config = format!(
            "apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  {advertise_line}
  bindPort: {api_port}
nodeRegistration:
  name: {node_name}
  criSocket: unix:///run/containerd/containerd.sock
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: {version}
clusterName: staticlet-testenv
certificatesDir: {pki}
controlPlaneEndpoint: 127.0.0.1:{api_port}
networking:
  serviceSubnet: {SERVICE_CIDR}
apiServer:
  certSANs: [127.0.0.1, localhost]
",
            pki = pki.display()
        );
        let config_path = d.join("kubeadm.yaml");
        fs::write(&config_path, kubeadm_config)
            .map_err(|e| Failure::other(format!("cannot write {}: {e}", config_path.display())))?;
        let kubeadm_log = d.join("kubeadm.log");
        for phase in [
            &["certs", "all"][..],
            &["kubeconfig", "super-admin"][..],
            &["kubeconfig", "kubelet"][..],
        ] {
            let mut cmd = Command::new(bin.join("kubeadm"));
            cmd.args(["init", "phase"])
                .args(phase)
                .arg("--config")
                .arg(&config_path);
            if phase[0] == "kubeconfig" {
                cmd.arg("--kubeconfig-dir").arg(&kubeconfig_dir);
            }
            run_logged(cmd, &kubeadm_log).map_err(|e| {
                Failure::other(format!("kubeadm init phase {}: {e}", phase.join(" ")))
            })?;
        }
        // kubeadm points kubelet.conf at the advertise address (a control-plane node's kubelet
        // talks to its local apiserver), where nothing listens: point both at 127.0.0.1.
        let server = format!("https://127.0.0.1:{api_port}");
        for conf in ["super-admin.conf", "kubelet.conf"] {
            let mut cmd = Command::new(bin.join("kubectl"));
            cmd.arg("--kubeconfig")
                .arg(kubeconfig_dir.join(conf))
                .args([
                    "config",
                    "set-cluster",
                    "staticlet-testenv",
                    "--server",
                    &server,
                ]);
            run_logged(cmd, &kubeadm_log).map_err(|e| {
                Failure::other(format!("kubectl config set-cluster in {conf}: {e}"))
            })?;
        }

        let p = |rel: &str| pki.join(rel).into_os_string();
        let etcd_url = |port: u16| format!("https://127.0.0.1:{port}");
        let mut etcd = Command::new(bin.join("etcd"));
        etcd.arg("--name")
            .arg("staticlet-testenv")
            .arg("--data-dir")
            .arg(d.join("etcd-data"))
            .arg(format!("--listen-client-urls={}", etcd_url(etcd_client)))
            .arg(format!("--advertise-client-urls={}", etcd_url(etcd_client)))
            .arg(format!("--listen-peer-urls={}", etcd_url(etcd_peer)))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                etcd_url(etcd_peer)
            ))
            .arg(format!(
                "--initial-cluster=staticlet-testenv={}",
                etcd_url(etcd_peer)
            ))
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{etcd_metrics}"
            ))
            .arg("--cert-file")
            .arg(p("etcd/server.crt"))
            .arg("--key-file")
            .arg(p("etcd/server.key"))
            .arg("--trusted-ca-file")
            .arg(p("etcd/ca.crt"))
            .arg("--client-cert-auth")
            .arg("--peer-cert-file")
            .arg(p("etcd/peer.crt"))
            .arg("--peer-key-file")
            .arg(p("etcd/peer.key"))
            .arg("--peer-trusted-ca-file")
            .arg(p("etcd/ca.crt"))
            .arg("--peer-client-cert-auth")
            // A throwaway store: no fsync keeps etcd (and so the apiserver) fast and steady on a
            // busy test machine. Data survives apiserver restarts, which never touch etcd.
            .arg("--unsafe-no-fsync");
        let etcd = spawn_logged(etcd, &d.join("etcd.log"), false).map_err(Failure::other)?;

        let mut args: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: OsString| {
            let mut a = OsString::from(format!("--{name}="));
            a.push(value);
            args.push(a);
        };
        let s = |v: &str| OsString::from(v);
        flag("bind-address", s("127.0.0.1"));
        flag(
            "advertise-address",
            s(&advertise.unwrap_or(Ipv4Addr::LOCALHOST).to_string()),
        );
        flag("secure-port", s(&api_port.to_string()));
        flag("etcd-servers", s(&etcd_url(etcd_client)));
        flag("etcd-cafile", p("etcd/ca.crt"));
        flag("etcd-certfile", p("apiserver-etcd-client.crt"));
        flag("etcd-keyfile", p("apiserver-etcd-client.key"));
        flag("tls-cert-file", p("apiserver.crt"));
        flag("tls-private-key-file", p("apiserver.key"));
        flag("client-ca-file", p("ca.crt"));
        flag(
            "kubelet-client-certificate",
            p("apiserver-kubelet-client.crt"),
        );
        flag("kubelet-client-key", p("apiserver-kubelet-client.key"));
        if verify_kubelets {
            flag("kubelet-certificate-authority", p("ca.crt"));
        }
        // As kubeadm: reach a node agent at its InternalIP (its Hostname need not resolve).
        flag(
            "kubelet-preferred-address-types",
            s("InternalIP,ExternalIP,Hostname"),
        );
        flag("cert-dir", d.join("apiserver-certs").into_os_string());
        flag(
            "service-account-issuer",
            s("https://kubernetes.default.svc.cluster.local"),
        );
        flag("service-account-key-file", p("sa.pub"));
        flag("service-account-signing-key-file", p("sa.key"));
        flag("service-cluster-ip-range", s(SERVICE_CIDR));
        flag("authorization-mode", s("Node,RBAC"));
        flag("enable-admission-plugins", s("NodeRestriction"));
        flag("allow-privileged", s("true"));
        flag("profiling", s("false"));
        // As kubeadm: bootstrap tokens (Secrets in kube-system) authenticate, for TLS bootstrap.
        flag("enable-bootstrap-token-auth", s("true"));

        let mut cp = ControlPlane {
            dir,
            bin,
            node_name: node_name.to_string(),
            api_port,
            apiserver_args: args,
            etcd,
            apiserver: None,
        };
        cp.spawn_apiserver(false).map_err(Failure::other)?;
        cp.wait_ready(ready_deadline())?;
        cp.create_default_service_account()
            .map_err(Failure::other)?;
        cp.bind_cluster_admins().map_err(Failure::other)?;
        Ok(cp)
    }

    /// The kubectl command [`kubectl`](Self::kubectl) runs, to spawn a long-running one
    /// (`port-forward`, `logs -f`).
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            // Discovery cache per control plane, not in $HOME.
            .arg("--cache-dir")
            .arg(self.dir().join("kubectl-cache"))
            .args(args)
            // No user preferences or aliases (~/.kube/kuberc).
            .env("KUBERC", "off")
            .stdin(Stdio::null());
        cmd
    }

    fn spawn_apiserver(&mut self, restart: bool) -> Result<(), String> {
        let mut cmd = Command::new(self.bin.join("kube-apiserver"));
        cmd.args(&self.apiserver_args);
        let child = spawn_logged(cmd, &self.dir().join("apiserver.log"), restart)?;
        self.apiserver = Some(child);
        Ok(())
    }

    /// Polls until `/readyz` answers ok, a component exits, or `deadline`.
    fn wait_ready(&mut self, deadline: SystemTime) -> Result<(), Failure> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.api_port));
        loop {
            self.check_alive()?;
            // A cheap TCP probe first: kubectl runs only once the port is open.
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                let out = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"]);
                if out.status.success() {
                    return Ok(());
                }
            }
            if SystemTime::now() >= deadline {
                self.check_alive()?;
                let verbose =
                    self.kubectl(&["get", "--raw", "/readyz?verbose", "--request-timeout=5s"]);
                return Err(Failure::other(format!(
                    "kube-apiserver not ready at {} within {} s\n/readyz?verbose: {}{}\n{}\n{}",
                    self.server(),
                    ready_timeout().as_secs(),
                    String::from_utf8_lossy(&verbose.stdout),
                    String::from_utf8_lossy(&verbose.stderr),
                    log_tail_message(&self.dir().join("etcd.log"), 20),
                    log_tail_message(&self.dir().join("apiserver.log"), 40),
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `Err` if etcd or the apiserver has exited, with its log's tail.
    fn check_alive(&mut self) -> Result<(), Failure> {
        let etcd = self
            .etcd
            .try_wait()
            .ok()
            .flatten()
            .map(|s| ("etcd", "etcd.log", s));
        let api = match self.apiserver.as_mut() {
            Some(c) => c.try_wait().ok().flatten(),
            None => None,
        };
        let api = api.map(|s| ("kube-apiserver", "apiserver.log", s));
        match etcd.or(api) {
            None => Ok(()),
            Some((name, log, status)) => {
                let path = self.dir().join(log);
                let text = tail(&path, 40);
                Err(Failure {
                    port_taken: text.contains("address already in use"),
                    message: format!(
                        "{name} exited ({status}) before it was ready\n{}",
                        log_tail_message(&path, 40)
                    ),
                })
            }
        }
    }

    /// What kube-controller-manager's serviceaccount controller would do, for `default` only.
    /// The namespace itself may appear a moment after /readyz: retried until the deadline.
    fn create_default_service_account(&self) -> Result<(), String> {
        let deadline = ready_deadline();
        loop {
            let out = self.kubectl(&["create", "serviceaccount", "default", "-n", "default"]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() || stderr.contains("AlreadyExists") {
                return Ok(());
            }
            if SystemTime::now() >= deadline {
                return Err(format!(
                    "cannot create ServiceAccount default/default: {}",
                    stderr.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// kubeadm's `kubeadm:cluster-admins` ClusterRoleBinding (to `cluster-admin`): the group of
    /// `admin.conf` and of the apiserver's kubelet client certificate
    /// (`apiserver-kubelet-client.crt`), which node agents authorize with SubjectAccessReviews.
    fn bind_cluster_admins(&self) -> Result<(), String> {
        let out = self.kubectl(&[
            "create",
            "clusterrolebinding",
            "kubeadm:cluster-admins",
            "--clusterrole=cluster-admin",
            "--group=kubeadm:cluster-admins",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || stderr.contains("AlreadyExists") {
            Ok(())
        } else {
            Err(format!(
                "cannot create ClusterRoleBinding kubeadm:cluster-admins: {}",
                stderr.trim()
            ))
        }
    }

    /// A file of kubeadm's PKI (`ca.crt`, `apiserver-kubelet-client.crt`, ...).
    pub fn pki(&self, rel: &str) -> PathBuf {
        self.dir().join("pki").join(rel)
    }

    fn signal_apiserver(&self, signal: Signal) {
        if let Some(child) = &self.apiserver {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
            // The child is never reaped while we hold it, so its pid can't be reused.
            if let Err(e) = kill(pid, signal) {
                panic!("cannot send {signal} to kube-apiserver (pid {pid}): {e}");
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "staticlet-k8s-testenv: control plane in {} (node {}, {})\n{}",
                self.dir().display(),
                self.node_name,
                self.server(),
                log_tail_message(&self.dir().join("apiserver.log"), 20)
            );
        }
        self.kill_apiserver();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
        if env_flag("STATICLET_KEEP_TESTENV") {
            eprintln!(
                "staticlet-k8s-testenv: kept {} (STATICLET_KEEP_TESTENV=1)",
                self.dir().display()
            );
        }
    }
}

/// A failed start attempt; `port_taken` ones are retried with other ports.
struct Failure {
    port_taken: bool,
    message: String,
}

impl Failure {
    fn other(message: String) -> Failure {
        Failure {
            port_taken: false,
            message,
        }
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn ready_timeout() -> Duration {
    let secs = std::env::var("STATICLET_K8S_READY_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

fn ready_deadline() -> SystemTime {
    SystemTime::now() + ready_timeout()
}

/// A node name must be a DNS subdomain (RFC 1123), as Kubernetes requires of Node names.
fn validate_node_name(name: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "node name {name:?} is not a lowercase RFC 1123 subdomain"
        ))
    }
}

/// The ports handed out by this process, never handed out twice.
static PORTS_TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Four distinct free loopback ports: etcd client, peer, metrics, apiserver.
///
/// Chosen at random below the kernel's ephemeral range (from which `bind(0)` and outgoing
/// connections take theirs, so nothing else grabs them between now and the components'
/// `bind`), checked free by binding them, and remembered so that two control planes of one
/// test process never get the same port.
fn free_ports() -> Result<[u16; 4], Failure> {
    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(12_000));
    let mut taken = PORTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let random = RandomState::new();
    let mut ports = [0u16; 4];
    let mut n = 0;
    for i in 0u64..10_000 {
        if n == ports.len() {
            break;
        }
        let port = low + (random.hash_one(i) % u64::from(high - low)) as u16;
        if taken.contains(&port) || ports[..n].contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            ports[n] = port;
            n += 1;
        }
    }
    if n < ports.len() {
        return Err(Failure::other(format!(
            "no 4 free loopback ports in {low}..{high}"
        )));
    }
    taken.extend(ports);
    Ok(ports)
}

/// The host's source address for off-host traffic (what `ip route get` would say), if it has
/// one that is not loopback. A UDP `connect` only looks up the route: nothing is sent.
fn advertise_address() -> Option<Ipv4Addr> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    sock.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).ok()?;
    match sock.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// `kubeadm version -o short`, e.g. `v1.34.4` (kubeadm would otherwise look the version up
/// online).
fn kubeadm_version(bin: &Path) -> Result<String, Failure> {
    let out = Command::new(bin.join("kubeadm"))
        .args(["version", "-o", "short"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Failure::other(format!("cannot run kubeadm: {e}")))?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && v.starts_with('v') {
        Ok(v)
    } else {
        Err(Failure::other(format!(
            "kubeadm version -o short: {}: {v} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Opens `log` for a child's stdout and stderr (appending, after a marker line, if `append`).
fn log_stdio(log: &Path, append: bool) -> Result<(Stdio, Stdio), String> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    if append {
        let _ = writeln!(
            file,
            "===== staticlet-k8s-testenv: restarted at {:?} =====",
            SystemTime::now()
        );
    }
    let err = file
        .try_clone()
        .map_err(|e| format!("cannot dup {}: {e}", log.display()))?;
    Ok((Stdio::from(file), Stdio::from(err)))
}

fn spawn_logged(mut cmd: Command, log: &Path, append: bool) -> Result<Child, String> {
    let (out, err) = log_stdio(log, append)?;
    let program = PathBuf::from(cmd.get_program());
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

/// Runs `cmd` to completion with its output appended to `log`.
fn run_logged(cmd: Command, log: &Path) -> Result<(), String> {
    let mut child = spawn_logged(cmd, log, false)?;
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{status}\n{}", log_tail_message(log, 20)))
    }
}

fn spawn_failure_output(program: &Path, e: &std::io::Error) -> Output {
    use std::os::unix::process::ExitStatusExt;
    Output {
        status: std::process::ExitStatus::from_raw(127 << 8),
        stdout: Vec::new(),
        stderr: format!("cannot run {}: {e}", program.display()).into_bytes(),
    }
}

fn log_tail_message(path: &Path, lines: usize) -> String {
    format!(
        "--- last {lines} lines of {} ---\n{}",
        path.display(),
        tail(path, lines)
    )
}

/// The last `lines` lines of a file (read from its last 256 KiB at most), lossily decoded.
fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 256 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX && file.seek(SeekFrom::Start(len - MAX)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["a", "node-a", "n1.example.com", "0"] {
            assert!(validate_node_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Node",
            "-a",
            "a-",
            "a..b",
            "a b",
            "a\nb: c",
            &"a".repeat(64),
        ] {
            assert!(validate_node_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ports_are_distinct_and_never_reused() {
        let a = free_ports().ok().unwrap();
        let b = free_ports().ok().unwrap();
        let all: HashSet<u16> = a.iter().chain(&b).copied().collect();
        assert_eq!(all.len(), 8, "{a:?} {b:?}");
    }

    #[test]
    fn tail_takes_last_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        fs::write(&p, "1\n2\n3\n").unwrap();
        assert_eq!(tail(&p, 2), "2\n3");
        assert_eq!(tail(&p, 10), "1\n2\n3");
        assert_eq!(tail(&d.path().join("missing"), 3), "");
    }
}
