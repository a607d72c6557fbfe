//! A scriptable, in-memory [`ContainerRuntime`] for component tests.
//!
//! Containers do not run anything: each start follows the script registered for the container's
//! name (exit with a code after a delay, or run until stopped), on tokio's clock, so tests with
//! paused time are deterministic. Every call is recorded with its time, faults can be injected
//! per operation, and one `FakeRuntime` can outlive an agent, which is how adoption after an agent
//! restart is tested.
//!
//! Interactive execs ([`ContainerRuntime::exec`]) answer from the same exec scripts as
//! `exec_sync` (the reply's stdout is written to the exec's stdout), and without a script echo
//! their stdin to their stdout until its EOF, then exit 0; terminal sizes they receive are
//! recorded ([`FakeRuntime::terminal_sizes`]). Port forwarding connects to the address a test
//! registered for the port ([`FakeRuntime::port_forward_to`]), any other port is refused.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::{
    labels, AuthConfig, Clock, ContainerConfig, ContainerEvent, ContainerId, ContainerRuntime,
    ContainerState, ContainerStats, ContainerStatus, ExecIo, ExecRequest, ExecResult, Image,
    ImageSpec, LabelSelector, Result, RuntimeError, RuntimeStatus, RuntimeVersion, SandboxConfig,
    SandboxId, SandboxState, SandboxStatus, TerminalSize,
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
    /// runtime's does (`exec failed: command timed out after ...`). An interactive exec runs
    /// until its future is dropped.
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
    /// The interactive `exec`.
    InteractiveExec,
    PortForward,
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
    RemoveImage {
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
    /// An interactive exec (`exec`; `Exec` is `exec_sync`).
    InteractiveExec {
        uid: String,
        name: String,
        cmd: Vec<String>,
        tty: bool,
    },
    PortForward {
        uid: String,
        port: u16,
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
    /// Where port forwarding to a port connects (any sandbox).
    port_forwards: HashMap<u16, SocketAddr>,
    /// Terminal sizes interactive execs received, in order.
    terminal_sizes: Vec<(ContainerId, TerminalSize)>,
    pull_errors: HashMap<String, String>,
    /// What `image_store_dir` answers.
    image_dir: Option<PathBuf>,
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

    /// Makes port forwarding to `port` (of any sandbox) connect to `to`, e.g. a listener of
    /// the test; ports without one are refused.
    pub fn port_forward_to(&self, port: u16, to: SocketAddr) {
        self.lock().port_forwards.insert(port, to);
    }

    /// The terminal sizes interactive execs received so far, in order, with their container.
    pub fn terminal_sizes(&self) -> Vec<(ContainerId, TerminalSize)> {
        self.lock().terminal_sizes.clone()
    }

    /// Makes every pull of `image` fail with `message` until cleared with `None`.
    pub fn pull_error(&self, image: &str, message: Option<&str>) {
        let mut s = self.lock();
        match message {
            Some(m) => s.pull_errors.insert(image.to_string(), m.to_string()),
            None => s.pull_errors.remove(image),
        };
    }

    /// Makes `image_store_dir` answer `dir` (a directory of the test), so CRI `ImageFsInfo`
    /// has a real filesystem to measure.
    pub fn set_image_store_dir(&self, dir: Option<PathBuf>) {
        self.lock().image_dir = dir;
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

    /// Makes a ready sandbox die now, as if its shim or pause process was killed: it becomes
    /// `NotReady` and its running containers exit with 137 (SIGKILL).
    pub fn kill_sandbox(&self, id: &SandboxId) {
        let evs: Vec<ContainerEvent> = {
            let mut s = self.lock();
            let now = self.clock.now();
            if let Some(sb) = s.sandboxes.get_mut(id) {
                sb.state = SandboxState::NotReady;
            }
            s.containers
                .values_mut()
                .filter(|c| c.status.sandbox_id == *id)
                .filter_map(|c| exit(c, now, 137))
                .collect()
        };
        for ev in evs {
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
        let id = fake_image_id(&image.image);
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

    async fn list_images(&self) -> Result<Vec<Image>> {
        self.enter(None).await?;
        let s = self.lock();
        let mut by_id: BTreeMap<String, Image> = BTreeMap::new();
        for img in s.images.values() {
            let e = by_id.entry(img.id.clone()).or_insert_with(|| Image {
                repo_tags: Vec::new(),
                ..img.clone()
            });
            e.repo_tags.extend(img.repo_tags.iter().cloned());
            e.repo_tags.sort();
        }
        Ok(by_id.into_values().collect())
    }

    async fn remove_image(&self, image: &ImageSpec) -> Result<()> {
        self.enter(None).await?;
        let mut s = self.lock();
        let before = s.images.len();
        s.images
            .retain(|name, img| *name != image.image && img.id != image.image);
        if s.images.len() != before {
            self.record(
                &mut s,
                Call::RemoveImage {
                    image: image.image.clone(),
                },
            );
        }
        Ok(())
    }

    fn image_store_dir(&self) -> Option<PathBuf> {
        self.lock().image_dir.clone()
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
            next_exec_reply(&mut s, &name, cmd)
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

    async fn exec(&self, id: &ContainerId, req: &ExecRequest, io: ExecIo) -> Result<i32> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.enter(Some(Op::InteractiveExec)).await?;
        let reply = {
            let mut s = self.lock();
            let c = s
                .containers
                .get(id)
                .ok_or_else(|| not_found("container", &id.0))?;
            if c.status.state != ContainerState::Running {
                return Err(RuntimeError::Failed {
                    op: "exec",
                    message: format!("container {id}: container is not running"),
                });
            }
            let name = c.status.name.clone();
            let call = Call::InteractiveExec {
                uid: c.uid.clone(),
                name: name.clone(),
                cmd: req.cmd.clone(),
                tty: req.tty,
            };
            self.record(&mut s, call);
            next_exec_reply(&mut s, &name, &req.cmd)
        };
        let ExecIo {
            stdin,
            stdout,
            stderr: _,
            resize,
        } = io;
        let write_failed = |e: std::io::Error| RuntimeError::Failed {
            op: "exec",
            message: format!("container {id}: writing the stdout to the client: {e}"),
        };
        // Sizes already queued are recorded before the command "runs", later ones as they come.
        let mut resize = resize;
        if let Some(rx) = resize.as_mut() {
            let mut s = self.lock();
            while let Ok(size) = rx.try_recv() {
                s.terminal_sizes.push((id.clone(), size));
            }
        }
        let sizes = async {
            if let Some(mut rx) = resize {
                while let Some(size) = rx.recv().await {
                    self.lock().terminal_sizes.push((id.clone(), size));
                }
            }
            std::future::pending::<()>().await
        };
        let command = async {
            match reply {
                None => {
                    if let (Some(mut from), Some(mut to)) = (stdin, stdout) {
                        let mut buf = [0u8; 4096];
                        loop {
                            let n = from.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                break;
                            }
                            to.write_all(&buf[..n]).await.map_err(write_failed)?;
                            to.flush().await.map_err(write_failed)?;
                        }
                    }
                    Ok(0)
                }
                Some(ExecReply::Exit { code, stdout: text }) => {
                    if let Some(mut to) = stdout {
                        to.write_all(text.as_bytes()).await.map_err(write_failed)?;
                        to.flush().await.map_err(write_failed)?;
                    }
                    Ok(code)
                }
                Some(ExecReply::Hang) => std::future::pending().await,
                Some(ExecReply::Error(e)) => Err(e),
                Some(ExecReply::Slow { after, code }) => {
                    tokio::time::sleep(after).await;
                    Ok(code)
                }
            }
        };
        tokio::select! {
            r = command => r,
            () = sizes => unreachable!("pending"),
        }
    }

    async fn port_forward(&self, sandbox: &SandboxId, port: u16) -> Result<tokio::net::TcpStream> {
        self.enter(Some(Op::PortForward)).await?;
        let to = {
            let mut s = self.lock();
            let uid = s
                .sandboxes
                .get(sandbox)
                .ok_or_else(|| not_found("sandbox", &sandbox.0))?
                .uid
                .clone();
            self.record(&mut s, Call::PortForward { uid, port });
            s.port_forwards.get(&port).copied()
        };
        let failed = |e: std::io::Error| RuntimeError::Failed {
            op: "port-forward",
            message: format!("connecting to localhost:{port} in sandbox {sandbox}: {e}"),
        };
        match to {
            Some(addr) => tokio::net::TcpStream::connect(addr).await.map_err(failed),
            None => Err(failed(std::io::ErrorKind::ConnectionRefused.into())),
        }
    }

    fn subscribe_events(&self) -> Option<broadcast::Receiver<ContainerEvent>> {
        if self.lock().no_events {
            return None;
        }
        Some(self.events.subscribe())
    }
}

/// The next reply of the exec script for `cmd` in containers named `name` (a script of the
/// command comes before the container's), or `None` without a script.
fn next_exec_reply(s: &mut State, name: &str, cmd: &[String]) -> Option<ExecReply> {
    let by_command = command_script_key(name, cmd.first().map_or("", |c| c.as_str()));
    let key = if s.exec_scripts.contains_key(&by_command) {
        by_command
    } else {
        name.to_string()
    };
    s.exec_scripts
        .get_mut(&key)
        .map(|e| e.replies.pop_front().unwrap_or_else(|| e.then.clone()))
}

/// The id of a pulled image: a digest-shaped FNV-1a hash of its name, so different names get
/// different ids.
fn fake_image_id(name: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("sha256:{h:064x}")
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A fake with one running container named `name`; returns it, its sandbox and its id.
    async fn running(name: &str) -> (FakeRuntime, SandboxId, ContainerId) {
        let fake = FakeRuntime::new(Clock::new());
        let sb_config = SandboxConfig {
            name: "pod".into(),
            uid: "uid-1".into(),
            labels: LabelSelector::pod("uid-1").0,
            ..Default::default()
        };
        let sb = fake.run_pod_sandbox(&sb_config).await.unwrap();
        let image = ImageSpec {
            image: "busybox".into(),
        };
        fake.pull_image(&image, None).await.unwrap();
        let config = ContainerConfig {
            name: name.into(),
            image,
            labels: container_labels("uid-1", name, 0),
            ..Default::default()
        };
        let id = fake
            .create_container(&sb, &config, &sb_config)
            .await
            .unwrap();
        fake.start_container(&id).await.unwrap();
        (fake, sb, id)
    }

    fn request(cmd: &[&str], tty: bool) -> ExecRequest {
        ExecRequest {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin: true,
            stdout: true,
            stderr: !tty,
        }
    }

    #[tokio::test]
    async fn interactive_exec_echoes_stdin_and_records_the_call() {
        let (fake, _, id) = running("app").await;
        let (out_w, mut out_r) = tokio::io::duplex(4);
        let io = ExecIo {
            stdin: Some(Box::new(&b"hello\nworld\n"[..])),
            stdout: Some(Box::new(out_w)),
            stderr: None,
            resize: None,
        };
        let req = request(&["sh"], false);
        let (code, echoed) = tokio::join!(fake.exec(&id, &req, io), async {
            let mut s = String::new();
            out_r.read_to_string(&mut s).await.unwrap();
            s
        });
        assert_eq!(code.unwrap(), 0);
        assert_eq!(echoed, "hello\nworld\n");
        assert!(fake.calls().iter().any(|(_, c)| *c
            == Call::InteractiveExec {
                uid: "uid-1".into(),
                name: "app".into(),
                cmd: vec!["sh".into()],
                tty: false,
            }));
        // Not an exec_sync: probe counts stay untouched.
        assert!(!fake
            .calls()
            .iter()
            .any(|(_, c)| matches!(c, Call::Exec { .. })));
    }

    #[tokio::test]
    async fn interactive_exec_follows_exec_scripts_and_records_sizes() {
        let (fake, _, id) = running("app").await;
        fake.exec_script_for_command(
            "app",
            "date",
            [ExecReply::Exit {
                code: 3,
                stdout: "Thu\n".into(),
            }],
            ExecReply::Error(RuntimeError::Failed {
                op: "exec",
                message: "scripted".into(),
            }),
        );
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(TerminalSize {
            width: 100,
            height: 40,
        })
        .await
        .unwrap();
        let mut out = Vec::new();
        let (out_w, mut out_r) = tokio::io::duplex(64);
        let io = ExecIo {
            stdin: None,
            stdout: Some(Box::new(out_w)),
            stderr: None,
            resize: Some(rx),
        };
        let code = fake.exec(&id, &request(&["date"], true), io).await.unwrap();
        out_r.read_to_end(&mut out).await.unwrap();
        assert_eq!((code, out.as_slice()), (3, &b"Thu\n"[..]));
        assert_eq!(
            fake.terminal_sizes(),
            vec![(
                id.clone(),
                TerminalSize {
                    width: 100,
                    height: 40
                }
            )]
        );
        let io = ExecIo {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
        };
        let err = fake
            .exec(&id, &request(&["date"], true), io)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("scripted"), "{err}");
    }

    #[tokio::test]
    async fn interactive_exec_needs_a_running_container() {
        let (fake, _, id) = running("app").await;
        fake.crash(&id, 1);
        let io = ExecIo {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: None,
        };
        let err = fake
            .exec(&id, &request(&["sh"], false), io)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not running"), "{err}");
    }

    #[tokio::test]
    async fn port_forward_connects_to_the_registered_address_else_refuses() {
        let (fake, sb, _) = running("app").await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        fake.port_forward_to(8080, listener.local_addr().unwrap());
        let (stream, accepted) = tokio::join!(fake.port_forward(&sb, 8080), listener.accept());
        let (mut stream, (mut peer, _)) = (stream.unwrap(), accepted.unwrap());
        stream.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        let err = fake.port_forward(&sb, 8081).await.unwrap_err();
        assert!(
            err.to_string().contains("localhost:8081") && err.to_string().contains("refused"),
            "{err}"
        );
        assert!(fake.calls().iter().any(|(_, c)| *c
            == Call::PortForward {
                uid: "uid-1".into(),
                port: 8081
            }));
        let gone = fake.port_forward(&SandboxId("nope".into()), 8080).await;
        assert!(
            matches!(gone, Err(RuntimeError::NotFound { .. })),
            "{gone:?}"
        );
    }
}
