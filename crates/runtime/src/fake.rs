//! A scriptable, in-memory [`ContainerRuntime`] for component tests.
//!
//! Containers do not run anything: each start follows the script registered for the container's
//! name (exit with a code after a delay, or run until stopped), on tokio's clock, so tests with
//! paused time are deterministic. Every call is recorded with its time, faults can be injected
//! per operation, and one `FakeRuntime` can outlive an agent, which is how adoption after an agent
//! restart is tested.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::{
    labels, AuthConfig, Clock, ContainerConfig, ContainerEvent, ContainerId, ContainerRuntime,
    ContainerState, ContainerStats, ContainerStatus, ExecResult, Image, ImageSpec, LabelSelector,
    Result, RuntimeError, RuntimeStatus, RuntimeVersion, SandboxConfig, SandboxId, SandboxState,
    SandboxStatus,
};

/// What one run of a container does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// Exit with `code` after `after`.
    Exit { after: Duration, code: i32 },
    /// Run until stopped.
    Forever,
}

/// How a container named in a script behaves.
#[derive(Debug, Clone)]
pub struct Script {
    /// Behaviour of the next runs, in order; once empty, `then` applies.
    pub runs: VecDeque<Run>,
    /// Behaviour of every run after `runs` is used up.
    pub then: Run,
    /// Time the container takes to exit after its stop signal; `None` ignores the signal, so it
    /// is killed when the stop timeout runs out.
    pub exits_after_signal: Option<Duration>,
    /// Exit code after a handled stop signal.
    pub signal_exit_code: i32,
}

impl Default for Script {
    fn default() -> Self {
        Self {
            runs: VecDeque::new(),
            then: Run::Forever,
            exits_after_signal: Some(Duration::ZERO),
            signal_exit_code: 0,
        }
    }
}

impl Script {
    /// Runs until stopped, exits promptly on its stop signal.
    pub fn forever() -> Self {
        Self::default()
    }

    /// Every run exits with `code` after `after`.
    pub fn exits(after: Duration, code: i32) -> Self {
        Self {
            then: Run::Exit { after, code },
            ..Self::default()
        }
    }

    /// Takes `d` to exit after the stop signal (`None`: ignores it).
    pub fn on_signal(mut self, d: Option<Duration>) -> Self {
        self.exits_after_signal = d;
        self
    }

    /// These runs first, then `self.then`.
    pub fn first(mut self, runs: impl IntoIterator<Item = Run>) -> Self {
        self.runs = runs.into_iter().collect();
        self
    }
}

/// How an exec in a container answers (see [`FakeRuntime::exec_script`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecReply {
    /// The command ran and exited with `code`, printing `stdout`.
    Exit { code: i32, stdout: String },
    /// The command never finishes: the exec fails once its timeout has passed, as the embedded
    /// runtime's does (`exec failed: command timed out after ...`).
    Hang,
    /// The exec itself fails.
    Error(RuntimeError),
    /// The command exits with `code` after `after` (on tokio's clock), or times out first.
    Slow { after: Duration, code: i32 },
}

impl ExecReply {
    /// Exit with `code` and no output.
    pub fn code(code: i32) -> Self {
        ExecReply::Exit {
            code,
            stdout: String::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct ExecScript {
    replies: VecDeque<ExecReply>,
    then: ExecReply,
}

/// Operations faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    RunSandbox,
    PullImage,
    CreateContainer,
    StartContainer,
    StopContainer,
    List,
    /// `exec_sync` (a delay here is not bounded by the exec's timeout: a stuck runtime).
    Exec,
}

/// A recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    RunSandbox {
        uid: String,
        attempt: u32,
    },
    StopSandbox {
        uid: String,
    },
    RemoveSandbox {
        uid: String,
    },
    PullImage {
        image: String,
    },
    Create {
        uid: String,
        name: String,
        attempt: u32,
    },
    Start {
        uid: String,
        name: String,
        attempt: u32,
    },
    Stop {
        uid: String,
        name: String,
        attempt: u32,
        timeout: Duration,
    },
    Remove {
        uid: String,
        name: String,
        attempt: u32,
    },
    Exec {
        uid: String,
        name: String,
        cmd: Vec<String>,
    },
}

#[derive(Debug)]
struct FakeContainer {
    status: ContainerStatus,
    uid: String,
    /// Incremented at each start and stop, so a stale exit timer does nothing.
    generation: u64,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    sandboxes: BTreeMap<SandboxId, SandboxStatus>,
    containers: BTreeMap<ContainerId, FakeContainer>,
    images: HashMap<String, Image>,
    scripts: HashMap<String, Script>,
    exec_scripts: HashMap<String, ExecScript>,
    pull_errors: HashMap<String, String>,
    /// Per container name: (share of one core it burns while running, working set bytes).
    usage: HashMap<String, (f64, u64)>,
    faults: HashMap<Op, VecDeque<RuntimeError>>,
    delays: HashMap<Op, Duration>,
    calls: Vec<(SystemTime, Call)>,
    /// `list_containers` calls so far (not in `calls`: they are not actions).
    container_lists: u64,
    /// Whether `subscribe_events` offers a stream (a runtime without events when false).
    no_events: bool,
    down: bool,
    network_ready: bool,
}

/// The fake runtime. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    clock: Clock,
    events: broadcast::Sender<ContainerEvent>,
}

impl FakeRuntime {
    /// An empty fake runtime whose timestamps come from `clock`. Images are "pulled" on demand
    /// unless a pull error is registered for them.
    pub fn new(clock: Clock) -> Self {
        let (events, _) = broadcast::channel(1024);
        let state = State {
            network_ready: true,
            ..State::default()
        };
        Self {
            state: Arc::new(Mutex::new(state)),
            clock,
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not poison every later assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the behaviour of containers with this name (in any pod).
    /// Containers named `container_name` use `cpu_cores` of CPU while running and have a
    /// working set of `memory_bytes` (what `list_container_stats` reports; default nothing).
    pub fn usage(&self, container_name: &str, cpu_cores: f64, memory_bytes: u64) {
        self.lock()
            .usage
            .insert(container_name.to_string(), (cpu_cores, memory_bytes));
    }

    pub fn script(&self, container_name: &str, script: Script) {
        self.lock()
            .scripts
            .insert(container_name.to_string(), script);
    }

    /// Sets how execs in containers with this name answer: `replies` in order, then `then` for
    /// every later exec. Without a script an exec exits 0 and echoes its command.
    pub fn exec_script(
        &self,
        container_name: &str,
        replies: impl IntoIterator<Item = ExecReply>,
        then: ExecReply,
    ) {
        self.lock().exec_scripts.insert(
            container_name.to_string(),
            ExecScript {
                replies: replies.into_iter().collect(),
                then,
            },
        );
    }

    /// Makes every pull of `image` fail with `message` until cleared with `None`.
    pub fn pull_error(&self, image: &str, message: Option<&str>) {
        let mut s = self.lock();
        match message {
            Some(m) => s.pull_errors.insert(image.to_string(), m.to_string()),
            None => s.pull_errors.remove(image),
        };
    }

    /// Like [`exec_script`](Self::exec_script), for the execs of one command (its first word)
    /// in containers with this name; such a script comes before the container's.
    pub fn exec_script_for_command(
        &self,
        container_name: &str,
        command: &str,
        replies: impl IntoIterator<Item = ExecReply>,
        then: ExecReply,
    ) {
        self.lock().exec_scripts.insert(
            command_script_key(container_name, command),
            ExecScript {
                replies: replies.into_iter().collect(),
                then,
            },
        );
    }

    /// Makes the next call of `op` fail with `err`.
    pub fn fail_next(&self, op: Op, err: RuntimeError) {
        self.lock().faults.entry(op).or_default().push_back(err);
    }

    /// Makes every call of `op` take `d` (on tokio's clock).
    pub fn delay(&self, op: Op, d: Duration) {
        self.lock().delays.insert(op, d);
    }

    /// Makes the whole runtime unavailable (every call fails) or available again.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }

    /// Sets the network condition reported by `status`.
    pub fn set_network_ready(&self, ready: bool) {
        self.lock().network_ready = ready;
    }

    /// Makes `subscribe_events` return `None`, like a runtime without an event stream: the
    /// agent must then notice changes by relisting. Set before the agent starts.
    pub fn without_events(self) -> Self {
        self.lock().no_events = true;
        self
    }

    /// How many times `list_containers` was called.
    pub fn container_lists(&self) -> u64 {
        self.lock().container_lists
    }

    /// Every call so far, with its time.
    pub fn calls(&self) -> Vec<(SystemTime, Call)> {
        self.lock().calls.clone()
    }

    /// Every container status, including exited ones not yet removed.
    pub fn containers(&self) -> Vec<ContainerStatus> {
        self.lock()
            .containers
            .values()
            .map(|c| c.status.clone())
            .collect()
    }

    /// Every sandbox status.
    pub fn sandboxes(&self) -> Vec<SandboxStatus> {
        self.lock().sandboxes.values().cloned().collect()
    }

    /// Makes a running container exit now with `code`, as if its process died.
    pub fn crash(&self, id: &ContainerId, code: i32) {
        let ev = {
            let mut s = self.lock();
            let now = self.clock.now();
            s.containers.get_mut(id).and_then(|c| exit(c, now, code))
        };
        if let Some(ev) = ev {
            let _ = self.events.send(ev);
        }
    }

    async fn enter(&self, op: Option<Op>) -> Result<()> {
        let delay = op.and_then(|op| self.lock().delays.get(&op).copied());
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut s = self.lock();
        if s.down {
            return Err(RuntimeError::Unavailable("fake runtime is down".into()));
        }
        if let Some(op) = op {
            if let Some(err) = s.faults.get_mut(&op).and_then(|q| q.pop_front()) {
                return Err(err);
            }
        }
        Ok(())
    }

    fn record(&self, s: &mut State, call: Call) {
        s.calls.push((self.clock.now(), call));
    }

    fn spawn_exit_timer(&self, id: ContainerId, generation: u64, after: Duration, code: i32) {
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let ev = {
                let mut s = this.lock();
                let now = this.clock.now();
                match s.containers.get_mut(&id) {
                    Some(c) if c.generation == generation => exit(c, now, code),
                    _ => None,
                }
            };
            if let Some(ev) = ev {
                let _ = this.events.send(ev);
            }
        });
    }
}

fn exit(c: &mut FakeContainer, now: SystemTime, code: i32) -> Option<ContainerEvent> {
    if c.status.state != ContainerState::Running {
        return None;
    }
    c.generation += 1;
    c.status.state = ContainerState::Exited;
    c.status.finished_at = Some(now);
    c.status.exit_code = Some(code);
    c.status.reason = if code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    Some(ContainerEvent {
        container_id: c.status.id.clone(),
        pod_uid: c.uid.clone(),
        state: ContainerState::Exited,
    })
}

fn not_found(kind: &'static str, id: &str) -> RuntimeError {
    RuntimeError::NotFound {
        kind,
        id: id.to_string(),
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<RuntimeVersion> {
        self.enter(None).await?;
        Ok(RuntimeVersion {
            runtime_name: "fake".into(),
            runtime_version: "0.0.0".into(),
            api_version: "v1".into(),
        })
    }

    async fn status(&self) -> Result<RuntimeStatus> {
        self.enter(None).await?;
        let ready = self.lock().network_ready;
        Ok(RuntimeStatus {
            runtime_ready: true,
            network_ready: ready,
            message: if ready {
                String::new()
            } else {
                "fake network not ready".into()
            },
        })
    }

    async fn run_pod_sandbox(&self, config: &SandboxConfig) -> Result<SandboxId> {
        self.enter(Some(Op::RunSandbox)).await?;
        let mut s = self.lock();
        s.next_id += 1;
        let id = SandboxId(format!("sandbox-{}", s.next_id));
        let status = SandboxStatus {
            id: id.clone(),
            name: config.name.clone(),
            namespace: config.namespace.clone(),
            uid: config.uid.clone(),
            attempt: config.attempt,
            state: SandboxState::Ready,
            created_at: self.clock.now(),
            ip: if config.host_network {
                String::new()
            } else {
                format!("10.88.0.{}", s.next_id)
            },
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        };
        s.sandboxes.insert(id.clone(), status);
        self.record(
            &mut s,
            Call::RunSandbox {
                uid: config.uid.clone(),
                attempt: config.attempt,
            },
        );
        Ok(id)
    }

    async fn stop_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.enter(None).await?;
        let mut s = self.lock();
        let now = self.clock.now();
        let mut events = Vec::new();
        for c in s
            .containers
            .values_mut()
            .filter(|c| &c.status.sandbox_id == id)
        {
            events.extend(exit(c, now, 137));
        }
        let Some(sb) = s.sandboxes.get_mut(id) else {
            return Ok(());
        };
        sb.state = SandboxState::NotReady;
        let uid = sb.uid.clone();
        self.record(&mut s, Call::StopSandbox { uid });
        drop(s);
        for ev in events {
            let _ = self.events.send(ev);
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &SandboxId) -> Result<()> {
        self.enter(None).await?;
        let mut s = self.lock();
        let Some(sb) = s.sandboxes.remove(id) else {
            return Ok(());
        };
        s.containers.retain(|_, c| &c.status.sandbox_id != id);
        self.record(&mut s, Call::RemoveSandbox { uid: sb.uid });
        Ok(())
    }

    async fn pod_sandbox_status(&self, id: &SandboxId) -> Result<SandboxStatus> {
        self.enter(None).await?;
        self.lock()
            .sandboxes
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("sandbox", &id.0))
    }

    async fn list_pod_sandboxes(&self, selector: &LabelSelector) -> Result<Vec<SandboxStatus>> {
        self.enter(Some(Op::List)).await?;
        let s = self.lock();
        Ok(s.sandboxes
            .values()
            .filter(|sb| selector.matches(&sb.labels))
            .cloned()
            .collect())
    }

    async fn image_status(&self, image: &ImageSpec) -> Result<Option<Image>> {
        self.enter(None).await?;
        Ok(self.lock().images.get(&image.image).cloned())
    }

    async fn pull_image(&self, image: &ImageSpec, _auth: Option<&AuthConfig>) -> Result<String> {
        self.enter(Some(Op::PullImage)).await?;
        let mut s = self.lock();
        self.record(
            &mut s,
            Call::PullImage {
                image: image.image.clone(),
            },
        );
        if let Some(message) = s.pull_errors.get(&image.image) {
            return Err(RuntimeError::ImagePull {
                image: image.image.clone(),
                message: message.clone(),
            });
        }
        let id = format!("sha256:{:064x}", image.image.len() as u64 * 7919);
        s.images.insert(
            image.image.clone(),
            Image {
                id: id.clone(),
                repo_tags: vec![image.image.clone()],
                repo_digests: vec![],
                size: 1024,
            },
        );
        Ok(id)
    }

    async fn create_container(
        &self,
        sandbox: &SandboxId,
        config: &ContainerConfig,
        sandbox_config: &SandboxConfig,
    ) -> Result<ContainerId> {
        self.enter(Some(Op::CreateContainer)).await?;
        let mut s = self.lock();
        if !s.sandboxes.contains_key(sandbox) {
            return Err(not_found("sandbox", &sandbox.0));
        }
        let image_ref = match s.images.get(&config.image.image) {
            Some(img) => img.id.clone(),
            None => {
                return Err(RuntimeError::Failed {
                    op: "create container",
                    message: format!("image {:?} not present", config.image.image),
                })
            }
        };
        s.next_id += 1;
        let id = ContainerId(format!("ctr-{}", s.next_id));
        let status = ContainerStatus {
            id: id.clone(),
            sandbox_id: sandbox.clone(),
            name: config.name.clone(),
            attempt: config.attempt,
            state: ContainerState::Created,
            created_at: self.clock.now(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            reason: String::new(),
            message: String::new(),
            image: config.image.clone(),
            image_ref,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            log_path: sandbox_config.log_directory.join(&config.log_path),
        };
        let uid = sandbox_config.uid.clone();
        let call = Call::Create {
            uid: uid.clone(),
            name: config.name.clone(),
            attempt: config.attempt,
        };
        s.containers.insert(
            id.clone(),
            FakeContainer {
                status,
                uid,
                generation: 0,
            },
        );
        self.record(&mut s, call);
        Ok(id)
    }

    async fn start_container(&self, id: &ContainerId) -> Result<()> {
        self.enter(Some(Op::StartContainer)).await?;
        let (generation, run) = {
            let mut s = self.lock();
            let now = self.clock.now();
            let name = {
                let c = s
                    .containers
                    .get(id)
                    .ok_or_else(|| not_found("container", &id.0))?;
                if c.status.state != ContainerState::Created {
                    return Err(RuntimeError::Failed {
                        op: "start container",
                        message: format!("container {id} is not in state Created"),
                    });
                }
                c.status.name.clone()
            };
            let run = match s.scripts.get_mut(&name) {
                Some(script) => script.runs.pop_front().unwrap_or(script.then),
                None => Run::Forever,
            };
            let c = s.containers.get_mut(id).expect("checked above");
            c.generation += 1;
            c.status.state = ContainerState::Running;
            c.status.started_at = Some(now);
            let generation = c.generation;
            let call = Call::Start {
                uid: c.uid.clone(),
                name: c.status.name.clone(),
                attempt: c.status.attempt,
            };
            let ev = ContainerEvent {
                container_id: id.clone(),
                pod_uid: c.uid.clone(),
                state: ContainerState::Running,
            };
            self.record(&mut s, call);
            let _ = self.events.send(ev);
            (generation, run)
        };
        if let Run::Exit { after, code } = run {
            self.spawn_exit_timer(id.clone(), generation, after, code);
        }
        Ok(())
    }

    async fn stop_container(&self, id: &ContainerId, timeout: Duration) -> Result<()> {
        self.enter(Some(Op::StopContainer)).await?;
        let (wait, code) = {
            let mut s = self.lock();
            let Some(c) = s.containers.get(id) else {
                return Ok(());
            };
            let call = Call::Stop {
                uid: c.uid.clone(),
                name: c.status.name.clone(),
                attempt: c.status.attempt,
                timeout,
            };
            let running = c.status.state == ContainerState::Running;
            let script = s.scripts.get(&c.status.name).cloned().unwrap_or_default();
            self.record(&mut s, call);
            if !running {
                return Ok(());
            }
            match script.exits_after_signal {
                Some(d) if d <= timeout => (d, script.signal_exit_code),
                _ => (timeout, 137),
            }
        };
        tokio::time::sleep(wait).await;
        let ev = {
            let mut s = self.lock();
            let now = self.clock.now();
            s.containers.get_mut(id).and_then(|c| exit(c, now, code))
        };
        if let Some(ev) = ev {
            let _ = self.events.send(ev);
        }
        Ok(())
    }

    async fn remove_container(&self, id: &ContainerId) -> Result<()> {
        self.enter(None).await?;
        let mut s = self.lock();
        let Some(c) = s.containers.remove(id) else {
            return Ok(());
        };
        let call = Call::Remove {
            uid: c.uid,
            name: c.status.name,
            attempt: c.status.attempt,
        };
        self.record(&mut s, call);
        Ok(())
    }

    async fn container_status(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.enter(None).await?;
        let s = self.lock();
        s.containers
            .get(id)
            .map(|c| c.status.clone())
            .ok_or_else(|| not_found("container", &id.0))
    }

    async fn list_containers(&self, selector: &LabelSelector) -> Result<Vec<ContainerStatus>> {
        self.enter(Some(Op::List)).await?;
        let mut s = self.lock();
        s.container_lists += 1;
        Ok(s.containers
            .values()
            .filter(|c| selector.matches(&c.status.labels))
            .map(|c| c.status.clone())
            .collect())
    }

    async fn list_container_stats(&self, selector: &LabelSelector) -> Result<Vec<ContainerStats>> {
        self.enter(Some(Op::List)).await?;
        let s = self.lock();
        let now = self.clock.now();
        Ok(s.containers
            .iter()
            .filter(|(_, c)| {
                c.status.state == ContainerState::Running && selector.matches(&c.status.labels)
            })
            .map(|(id, c)| {
                let usage = s.usage.get(&c.status.name);
                let ran = c
                    .status
                    .started_at
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                ContainerStats {
                    id: id.clone(),
                    labels: c.status.labels.clone(),
                    timestamp: now,
                    cpu_usage_core_nanos: usage
                        .map(|(cores, _)| (ran.as_nanos() as f64 * cores) as u64),
                    memory_working_set_bytes: usage.map(|(_, m)| *m),
                }
            })
            .collect())
    }

    async fn exec_sync(
        &self,
        id: &ContainerId,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecResult> {
        self.enter(Some(Op::Exec)).await?;
        let reply = {
            let mut s = self.lock();
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| not_found("container", &id.0))?;
            let name = c.status.name.clone();
            let call = Call::Exec {
                uid: c.uid.clone(),
                name: name.clone(),
                cmd: cmd.to_vec(),
            };
            self.record(&mut s, call);
            let by_command = command_script_key(&name, cmd.first().map_or("", |c| c.as_str()));
            let key = if s.exec_scripts.contains_key(&by_command) {
                by_command
            } else {
                name
            };
            s.exec_scripts
                .get_mut(&key)
                .map(|e| e.replies.pop_front().unwrap_or_else(|| e.then.clone()))
        };
        match reply {
            None => Ok(ExecResult {
                stdout: cmd.join(" ").into_bytes(),
                stderr: vec![],
                exit_code: 0,
            }),
            Some(ExecReply::Exit { code, stdout }) => Ok(ExecResult {
                stdout: stdout.into_bytes(),
                stderr: vec![],
                exit_code: code,
            }),
            Some(ExecReply::Hang) => {
                tokio::time::sleep(timeout).await;
                Err(RuntimeError::Failed {
                    op: "exec",
                    message: format!("command timed out after {timeout:?}"),
                })
            }
            Some(ExecReply::Error(e)) => Err(e),
            Some(ExecReply::Slow { after, code }) => {
                if after > timeout {
                    tokio::time::sleep(timeout).await;
                    return Err(RuntimeError::Failed {
                        op: "exec",
                        message: format!("command timed out after {timeout:?}"),
                    });
                }
                tokio::time::sleep(after).await;
                Ok(ExecResult {
                    stdout: vec![],
                    stderr: vec![],
                    exit_code: code,
                })
            }
        }
    }

    fn subscribe_events(&self) -> Option<broadcast::Receiver<ContainerEvent>> {
        if self.lock().no_events {
            return None;
        }
        Some(self.events.subscribe())
    }
}

/// The key of an exec script for one command of a container.
fn command_script_key(container_name: &str, command: &str) -> String {
    format!("{container_name}\0{command}")
}

/// The label set of a container of pod `uid`, as the agent writes it (for tests that set up
/// runtime state by hand).
pub fn container_labels(uid: &str, name: &str, attempt: u32) -> crate::Labels {
    let mut l = LabelSelector::pod(uid).0;
    l.insert(labels::CONTAINER_NAME.into(), name.into());
    l.insert(labels::ATTEMPT.into(), attempt.to_string());
    l
}
