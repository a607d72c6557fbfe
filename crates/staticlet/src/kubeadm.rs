//! staticlet in kubelet's place under kubeadm: the layout kubeadm's systemd drop-in
//! (`packaging/systemd/10-kubeadm.conf`) gives the agent, `--config
//! /var/lib/kubelet/config.yaml` (and `--kubeadm-flags-env /var/lib/kubelet/kubeadm-flags.env`
//! when run without systemd), changes two things:
//!
//! - **CRI is served by default** on [`CRI_SOCKET`] (unless `--cri-listen` says otherwise or
//!   `containerRuntimeEndpoint` names another runtime), so that `nodeRegistration.criSocket`
//!   can name staticlet: kubeadm's preflight and its image pulls go through the embedded
//!   runtime, and the `containerRuntimeEndpoint` kubeadm then writes means "embedded".
//! - **A missing config file is waited for.** The service is started before `kubeadm init`,
//!   which writes `config.yaml` in its kubelet-start phase (after its preflight, which needs the
//!   CRI socket) and then restarts "the kubelet" through systemd where there is one. Until the
//!   file is there the agent serves only CRI and says what it waits for (log, systemd
//!   `STATUS=`); once the file is there, complete and valid, it re-executes itself
//!   (`commands/run.rs`' `exec_self`, same PID), so it starts with exactly the files kubeadm
//!   wrote, as a restarted kubelet would. A file that stays invalid is reported and waited on,
//!   never a crash loop. With `--kubeadm-flags-env` (no systemd to read the flags file), the
//!   flags file is waited for too: kubeadm writes it just after `config.yaml` (both in
//!   kubelet-start, then it restarts the kubelet, which then reads both), and an agent started
//!   between the two writes would miss kubeadm's flags, `--hostname-override` among them (a
//!   Node under the wrong name, which `kubeadm join` then waits for in vain). It is optional
//!   (systemd's `EnvironmentFile=-`): after [`FLAGS_GRACE_LOOKS`] looks without it, the agent
//!   starts without it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use staticlet_runtime::Clock;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::options::RunArgs;

/// The KubeletConfiguration kubeadm writes (`kubeadm init phase kubelet-start`).
pub const CONFIG_FILE: &str = "/var/lib/kubelet/config.yaml";
/// The kubelet flags kubeadm writes next to it (`KUBELET_KUBEADM_ARGS`).
pub const FLAGS_ENV_FILE: &str = "/var/lib/kubelet/kubeadm-flags.env";
/// Where CRI is served under kubeadm's layout; `nodeRegistration.criSocket` names it.
pub const CRI_SOCKET: &str = "unix:///run/staticlet/cri.sock";
/// How often the awaited config file is looked at.
const POLL: Duration = Duration::from_millis(500);
/// How many looks (of [`POLL`]) a complete, stable config file waits for the flags file of
/// `--kubeadm-flags-env` before the agent starts without it (about 10 s).
pub const FLAGS_GRACE_LOOKS: u32 = 20;

/// Whether `--config` is kubeadm's file.
pub fn is_layout(config: Option<&Path>) -> bool {
    config == Some(Path::new(CONFIG_FILE))
}

/// The path of a `unix://` endpoint (or a bare path), for comparing endpoints.
pub fn socket_path(uri: &str) -> &str {
    uri.trim_start_matches("unix://").trim_end_matches('/')
}

/// The socket CRI is served on: `--cri-listen`; else, under kubeadm's layout, [`CRI_SOCKET`]
/// unless the runtime endpoint names another runtime (whose own socket kubeadm then uses).
pub fn cri_listen(
    explicit: Option<&str>,
    config: Option<&Path>,
    endpoint: Option<&str>,
) -> Option<String> {
    if let Some(e) = explicit {
        return Some(e.to_string());
    }
    if !is_layout(config) {
        return None;
    }
    match endpoint {
        None => Some(CRI_SOCKET.to_string()),
        Some(e) if e.starts_with("simulate://") => Some(CRI_SOCKET.to_string()),
        Some(e) if socket_path(e) == socket_path(CRI_SOCKET) => Some(CRI_SOCKET.to_string()),
        Some(_) => None,
    }
}

/// The config file to wait for: kubeadm's, when it does not exist yet.
pub fn awaited_config(config: Option<&Path>) -> Option<&Path> {
    config.filter(|c| is_layout(Some(c)) && std::fs::symlink_metadata(c).is_err())
}

/// What to do after one look at the awaited file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitAction {
    /// Keep waiting (nothing new to say).
    Wait,
    /// Keep waiting and report this: the file is there but refused.
    Report(String),
    /// The file is complete and valid: start with it.
    Start,
}

/// kubeadm's flags file (`--kubeadm-flags-env`) as one look sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagsFile {
    /// No `--kubeadm-flags-env` (systemd reads the file, when it starts the agent).
    NotExpected,
    Absent,
    Present(Vec<u8>),
}

/// The wait for kubeadm's files, the pure part. The config file is taken only when it is
/// non-empty, neither it nor the flags file changed since the previous look (kubeadm may still
/// be writing them), the flags file, if expected, is there (or was not for
/// [`FLAGS_GRACE_LOOKS`] looks of a stable config file) and the whole command line with them is
/// valid; a refusal is reported once per distinct message.
#[derive(Debug, Default)]
pub struct ConfigWait {
    last: Option<(Vec<u8>, Option<Vec<u8>>)>,
    flags_missing: u32,
    reported: Option<String>,
}

impl ConfigWait {
    /// One look: the config file's content (`None`: absent), the flags file and, if it is worth
    /// it, the check of the command line with them.
    pub fn step(
        &mut self,
        content: Option<Vec<u8>>,
        flags: FlagsFile,
        check: impl FnOnce() -> Result<(), String>,
    ) -> WaitAction {
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            self.last = None;
            self.flags_missing = 0;
            return WaitAction::Wait;
        };
        let (flags_content, flags_absent) = match flags {
            FlagsFile::NotExpected => (None, false),
            FlagsFile::Absent => (None, true),
            FlagsFile::Present(f) => (Some(f), false),
        };
        let look = (content, flags_content);
        if self.last.as_ref() != Some(&look) {
            self.last = Some(look);
            self.flags_missing = 0;
            return WaitAction::Wait;
        }
        if flags_absent && self.flags_missing < FLAGS_GRACE_LOOKS {
            self.flags_missing += 1;
            return WaitAction::Wait;
        }
        match check() {
            Ok(()) => WaitAction::Start,
            Err(e) if self.reported.as_ref() == Some(&e) => WaitAction::Wait,
            Err(e) => {
                self.reported = Some(e.clone());
                WaitAction::Report(e)
            }
        }
    }
}

/// How the wait ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// The files are there: the caller re-executes the agent.
    Start,
    /// SIGTERM or SIGINT while waiting.
    Stopped,
}

/// Waits for `config` (kubeadm's, absent) and the flags file of `--kubeadm-flags-env` (see
/// [`ConfigWait`]), serving CRI with the embedded runtime meanwhile.
pub async fn wait_for_config(args: &RunArgs, config: &Path) -> Result<Waited> {
    let cri = cri_listen(args.cri_listen.as_deref(), Some(config), None);
    let shutdown = CancellationToken::new();
    let mut cri_socket = None;
    if let Some(uri) = cri {
        let Some(path) = uri.strip_prefix("unix://").filter(|p| p.starts_with('/')) else {
            anyhow::bail!("--cri-listen {uri:?}: expected unix:///absolute/path");
        };
        let path = std::path::PathBuf::from(path);
        std::fs::create_dir_all(&args.root_dir)
            .with_context(|| format!("creating --root-dir {}", args.root_dir.display()))?;
        let (runtime, _) = crate::runtime::runtime_for(
            None,
            Clock::new(),
            args,
            args.pod_cidr.as_deref(),
            // No configuration yet: nothing to say about cgroups.
            &Default::default(),
        )
        .await?;
        let listener = staticlet_cri_server::bind(&path)
            .with_context(|| format!("CRI endpoint: binding {}", path.display()))?;
        tokio::spawn(serve_cri(listener, runtime, shutdown.clone()));
        cri_socket = Some(path);
    }
    let waiting = format!(
        "waiting for {} (kubeadm writes it in its kubelet-start phase){}",
        config.display(),
        cri_socket
            .as_ref()
            .map(|p| format!("; serving CRI on unix://{} meanwhile", p.display()))
            .unwrap_or_default()
    );
    info!("{waiting}");
    crate::systemd::waiting(&waiting);
    let result = poll(config, args.kubeadm_flags_env.as_deref()).await;
    shutdown.cancel();
    if let Some(p) = &cri_socket {
        let _ = std::fs::remove_file(p);
    }
    if result == Waited::Start {
        info!(file = %config.display(), "written: starting with kubeadm's files");
    }
    Ok(result)
}

async fn serve_cri(
    listener: tokio::net::UnixListener,
    runtime: Arc<dyn staticlet_runtime::ContainerRuntime>,
    shutdown: CancellationToken,
) {
    if let Err(e) = staticlet_cri_server::serve(listener, runtime, shutdown).await {
        tracing::error!(error = %e, "the CRI endpoint stopped");
    }
}

async fn poll(config: &Path, flags_env: Option<&Path>) -> Waited {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "cannot handle SIGTERM while waiting");
            return Waited::Stopped;
        }
    };
    let mut wait = ConfigWait::default();
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Waited::Stopped,
            _ = term.recv() => return Waited::Stopped,
            _ = tick.tick() => {}
        }
        let content = std::fs::read(config).ok();
        let flags = match flags_env {
            None => FlagsFile::NotExpected,
            Some(f) => std::fs::read(f).map_or(FlagsFile::Absent, FlagsFile::Present),
        };
        match wait.step(content, flags, || {
            crate::reload_check().map_err(|e| format!("{e:#}"))
        }) {
            WaitAction::Wait => {}
            WaitAction::Report(e) => {
                warn!(file = %config.display(), error = %e, "not starting with it yet; waiting for a valid file");
                crate::systemd::waiting(&format!("{} refused: {e}", config.display()));
            }
            WaitAction::Start => return Waited::Start,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_is_served_by_default_under_kubeadms_layout_only() {
        let kubeadm = Some(Path::new(CONFIG_FILE));
        let other = Some(Path::new("/etc/staticlet/config.yaml"));
        #[allow(clippy::type_complexity)]
        let cases: [(Option<&str>, Option<&Path>, Option<&str>, Option<&str>); 8] = [
            // (--cri-listen, --config, containerRuntimeEndpoint) -> served on
            (None, kubeadm, None, Some(CRI_SOCKET)),
            (None, kubeadm, Some(CRI_SOCKET), Some(CRI_SOCKET)),
            (
                None,
                kubeadm,
                Some("/run/staticlet/cri.sock"),
                Some(CRI_SOCKET),
            ),
            (None, kubeadm, Some("simulate://"), Some(CRI_SOCKET)),
            (
                None,
                kubeadm,
                Some("unix:///run/containerd/containerd.sock"),
                None,
            ),
            (None, other, None, None),
            (None, None, None, None),
            (
                Some("unix:///tmp/x.sock"),
                other,
                None,
                Some("unix:///tmp/x.sock"),
            ),
        ];
        for (explicit, config, endpoint, want) in cases {
            assert_eq!(
                cri_listen(explicit, config, endpoint).as_deref(),
                want,
                "{explicit:?} {config:?} {endpoint:?}"
            );
        }
    }

    #[test]
    fn only_kubeadms_missing_file_is_awaited() {
        assert_eq!(awaited_config(None), None);
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config.yaml");
        assert_eq!(
            awaited_config(Some(&f)),
            None,
            "not kubeadm's path: an error at start"
        );
        // kubeadm's path: awaited while absent (the test machine has no kubeadm node).
        if !Path::new(CONFIG_FILE).exists() {
            assert_eq!(
                awaited_config(Some(Path::new(CONFIG_FILE))),
                Some(Path::new(CONFIG_FILE))
            );
        }
    }

    #[test]
    fn a_file_is_taken_when_complete_stable_and_valid() {
        let ok = || Ok(());
        let bad = |m: &str| {
            let m = m.to_string();
            move || Err(m)
        };
        let c = |s: &str| Some(s.as_bytes().to_vec());
        let mut w = ConfigWait::default();
        let steps: Vec<(Option<Vec<u8>>, WaitAction)> = vec![
            (None, WaitAction::Wait),
            (c(""), WaitAction::Wait),
            (c("kind: Kubelet"), WaitAction::Wait),
            // Still growing: not stable yet.
            (c("kind: KubeletConfiguration\n"), WaitAction::Wait),
        ];
        for (content, want) in steps {
            assert_eq!(
                w.step(content, FlagsFile::NotExpected, || panic!(
                    "checked too early"
                )),
                want
            );
        }
        assert_eq!(
            w.step(
                c("kind: KubeletConfiguration\n"),
                FlagsFile::NotExpected,
                ok
            ),
            WaitAction::Start
        );

        // A file that stays invalid: reported once per message, never started.
        let mut w = ConfigWait::default();
        assert_eq!(
            w.step(c("port: x"), FlagsFile::NotExpected, bad("port: x")),
            WaitAction::Wait
        );
        assert_eq!(
            w.step(c("port: x"), FlagsFile::NotExpected, bad("bad port")),
            WaitAction::Report("bad port".into())
        );
        assert_eq!(
            w.step(c("port: x"), FlagsFile::NotExpected, bad("bad port")),
            WaitAction::Wait
        );
        assert_eq!(
            w.step(c("port: x"), FlagsFile::NotExpected, bad("other")),
            WaitAction::Report("other".into())
        );
        // Fixed: started once stable.
        assert_eq!(
            w.step(c("port: 1"), FlagsFile::NotExpected, ok),
            WaitAction::Wait
        );
        assert_eq!(
            w.step(c("port: 1"), FlagsFile::NotExpected, ok),
            WaitAction::Start
        );
        // Removed again while waiting: back to waiting.
        let mut w = ConfigWait::default();
        assert_eq!(
            w.step(c("a: 1"), FlagsFile::NotExpected, ok),
            WaitAction::Wait
        );
        assert_eq!(w.step(None, FlagsFile::NotExpected, ok), WaitAction::Wait);
        assert_eq!(
            w.step(c("a: 1"), FlagsFile::NotExpected, ok),
            WaitAction::Wait
        );
        assert_eq!(
            w.step(c("a: 1"), FlagsFile::NotExpected, ok),
            WaitAction::Start
        );
    }

    #[test]
    fn kubeadms_flags_file_is_waited_for_after_the_config_file() {
        let ok = || Ok(());
        let c = |s: &str| Some(s.as_bytes().to_vec());
        let f = |s: &str| FlagsFile::Present(s.as_bytes().to_vec());
        // kubeadm writes config.yaml, then kubeadm-flags.env: a config file stable for longer
        // than a look does not start the agent while the flags file is missing.
        let mut w = ConfigWait::default();
        assert_eq!(w.step(c("a: 1"), FlagsFile::Absent, ok), WaitAction::Wait);
        for _ in 0..3 {
            assert_eq!(
                w.step(c("a: 1"), FlagsFile::Absent, || panic!("checked too early")),
                WaitAction::Wait
            );
        }
        // The flags file written: taken once it too is stable.
        assert_eq!(w.step(c("a: 1"), f("ARGS=--x"), ok), WaitAction::Wait);
        assert_eq!(w.step(c("a: 1"), f("ARGS=--x"), ok), WaitAction::Start);
        // Still being written: a change of the flags file is a change.
        let mut w = ConfigWait::default();
        assert_eq!(w.step(c("a: 1"), f("ARGS="), ok), WaitAction::Wait);
        assert_eq!(w.step(c("a: 1"), f("ARGS=--x"), ok), WaitAction::Wait);
        assert_eq!(w.step(c("a: 1"), f("ARGS=--x"), ok), WaitAction::Start);
        // Never written (it is optional): the agent starts without it after the grace looks.
        let mut w = ConfigWait::default();
        assert_eq!(w.step(c("a: 1"), FlagsFile::Absent, ok), WaitAction::Wait);
        for _ in 0..FLAGS_GRACE_LOOKS {
            assert_eq!(
                w.step(c("a: 1"), FlagsFile::Absent, || panic!("checked too early")),
                WaitAction::Wait
            );
        }
        assert_eq!(w.step(c("a: 1"), FlagsFile::Absent, ok), WaitAction::Start);
        // Not expected (systemd reads it): the config file alone, as before.
        let mut w = ConfigWait::default();
        assert_eq!(
            w.step(c("a: 1"), FlagsFile::NotExpected, ok),
            WaitAction::Wait
        );
        assert_eq!(
            w.step(c("a: 1"), FlagsFile::NotExpected, ok),
            WaitAction::Start
        );
    }
}
