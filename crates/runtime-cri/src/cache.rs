//! The status cache of [`CriRuntime`](crate::CriRuntime): what `ContainerStatus` and
//! `PodSandboxStatus` last answered for each object, so that listing a steady runtime costs one
//! `ListContainers` and one `ListPodSandbox` instead of one more call per object.
//!
//! # Why an entry is never stale
//!
//! `ListContainers` / `ListPodSandbox` answer with each object's id and *current* state but
//! without what only the status calls carry (exit code, times, reason, message, log path, pod IP).
//! An entry is used only when the list reports the same id **in the same state** as the cached
//! status; any other listed state makes the caller fetch the status again. That is enough because
//! within one state the fields staticlet reads do not change:
//!
//! - a `CREATED` container has no start time, exit code or message yet;
//! - a `RUNNING` container's start time, image and log path are fixed when it starts (CRI has no
//!   restart of a container: a restart is a new container with a new id);
//! - an `EXITED` container's record (finish time, exit code, reason, message) is final;
//! - a `READY` sandbox keeps its IP; a `NOTREADY` sandbox never becomes ready again.
//!
//! Statuses in any other state (`CONTAINER_UNKNOWN`, values this client does not know) are not
//! served, so they are fetched on every list. Because the key includes the state, the cache
//! corrects itself after staticlet's own mutations too: `StartContainer` returns once the
//! runtime reports the container running and `StopContainer` once it reports it exited, so the
//! next list shows the new state and the status (with the fresh exit code) is fetched. The
//! runtime also marks the entries of what it starts or stops out of date (and drops those of what
//! it removes), which keeps that true for a runtime that would report the new state in its lists
//! a little late. A list that raced with a mutation may store an older status after that; the
//! next list's state then differs from it and it is fetched again. An out-of-date entry (also
//! made by `CreateContainer`, and for a status in an unknown state) serves no status, only the
//! container's sandbox, which CRI's `ContainerStatus` lacks and which never changes: reading a
//! container back by id after creating or starting it costs one call, not a list as well.
//!
//! One limit, shared with kubelet's pod cache: a runtime that amends an exited container's
//! `reason` after first reporting it exited (containerd processing an OOM event after the exit)
//! is seen with the reason of the first report.
//!
//! # Eviction
//!
//! Entries go when staticlet removes the object itself, when a status call answers NotFound,
//! and when a list proves the object gone: labels never change, so an entry whose labels match
//! the list's selector but whose id the list did not return belongs to an object that no longer
//! exists. Lists are filtered by label selector (one pod's, or every managed object's), so only
//! entries the selector covers are judged; the agent's periodic list of every managed object
//! covers them all. A list whose answer predates a concurrent list's insertion may evict that
//! newer entry: the object's status is then fetched once more, never wrong.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use k8s_cri::v1 as cri;
use staticlet_runtime::LabelSelector;

/// The state of an entry whose status is out of date: no list reports it, so it is never used
/// as a status, but the entry still names the container's sandbox.
const STALE: i32 = -1;

/// Whether a status in this CRI container state can be reused while the state holds.
fn container_state_is_stable(state: i32) -> bool {
    matches!(
        cri::ContainerState::try_from(state),
        Ok(cri::ContainerState::ContainerCreated
            | cri::ContainerState::ContainerRunning
            | cri::ContainerState::ContainerExited)
    )
}

/// Whether a status in this CRI sandbox state can be reused while the state holds.
fn sandbox_state_is_stable(state: i32) -> bool {
    cri::PodSandboxState::try_from(state).is_ok()
}

fn selected(selector: &LabelSelector, labels: &HashMap<String, String>) -> bool {
    selector.0.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[derive(Debug, Clone)]
struct CachedContainer {
    /// CRI's `ContainerStatus` has no sandbox id: it comes from the list.
    sandbox_id: String,
    status: cri::ContainerStatus,
}

#[derive(Debug, Default)]
struct Maps {
    containers: HashMap<String, CachedContainer>,
    sandboxes: HashMap<String, cri::PodSandboxStatus>,
}

/// Statuses by container and sandbox id, each valid while the object stays in its state.
#[derive(Debug, Default)]
pub(crate) struct StatusCache {
    maps: Mutex<Maps>,
}

impl StatusCache {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached status of container `id` if the list reports it in the cached state.
    pub(crate) fn container(&self, id: &str, listed_state: i32) -> Option<cri::ContainerStatus> {
        self.lock()
            .containers
            .get(id)
            .filter(|c| c.status.state == listed_state)
            .map(|c| c.status.clone())
    }

    /// The sandbox of container `id`, if known (it never changes).
    pub(crate) fn container_sandbox(&self, id: &str) -> Option<String> {
        self.lock().containers.get(id).map(|c| c.sandbox_id.clone())
    }

    /// Stores a status just fetched (one in an unstable state is kept out of date: only its
    /// sandbox is remembered).
    pub(crate) fn put_container(&self, status: &cri::ContainerStatus, sandbox_id: &str) {
        let mut status = status.clone();
        if !container_state_is_stable(status.state) {
            status.state = STALE;
        }
        self.lock().containers.insert(
            status.id.clone(),
            CachedContainer {
                sandbox_id: sandbox_id.to_string(),
                status,
            },
        );
    }

    pub(crate) fn forget_container(&self, id: &str) {
        self.lock().containers.remove(id);
    }

    /// Marks a container's status out of date (it was just started or stopped): the next list
    /// fetches it again, but its sandbox (which never changes) stays known, so a status asked
    /// for by id costs one call.
    pub(crate) fn invalidate_container(&self, id: &str) {
        if let Some(c) = self.lock().containers.get_mut(id) {
            c.status.state = STALE;
        }
    }

    /// Records a container just created in `sandbox_id` with these labels, its status still to
    /// be fetched.
    pub(crate) fn created_container(
        &self,
        id: &str,
        sandbox_id: &str,
        labels: HashMap<String, String>,
    ) {
        self.lock().containers.insert(
            id.to_string(),
            CachedContainer {
                sandbox_id: sandbox_id.to_string(),
                status: cri::ContainerStatus {
                    id: id.to_string(),
                    state: STALE,
                    labels,
                    ..Default::default()
                },
            },
        );
    }

    /// Drops the containers `selector` covers that a list with it did not return.
    pub(crate) fn prune_containers(&self, selector: &LabelSelector, listed: &HashSet<String>) {
        self.lock()
            .containers
            .retain(|id, c| listed.contains(id) || !selected(selector, &c.status.labels));
    }

    /// The cached status of sandbox `id` if the list reports it in the cached state.
    pub(crate) fn sandbox(&self, id: &str, listed_state: i32) -> Option<cri::PodSandboxStatus> {
        self.lock()
            .sandboxes
            .get(id)
            .filter(|s| s.state == listed_state)
            .cloned()
    }

    /// Stores a sandbox status just fetched (statuses in unknown states are dropped instead).
    pub(crate) fn put_sandbox(&self, status: &cri::PodSandboxStatus) {
        let mut m = self.lock();
        if sandbox_state_is_stable(status.state) {
            m.sandboxes.insert(status.id.clone(), status.clone());
        } else {
            m.sandboxes.remove(&status.id);
        }
    }

    /// Forgets a sandbox; `with_containers` also forgets its containers (removing a sandbox
    /// removes them).
    pub(crate) fn forget_sandbox(&self, id: &str, with_containers: bool) {
        let mut m = self.lock();
        m.sandboxes.remove(id);
        if with_containers {
            m.containers.retain(|_, c| c.sandbox_id != id);
        }
    }

    /// Drops the sandboxes `selector` covers that a list with it did not return.
    pub(crate) fn prune_sandboxes(&self, selector: &LabelSelector, listed: &HashSet<String>) {
        self.lock()
            .sandboxes
            .retain(|id, s| listed.contains(id) || !selected(selector, &s.labels));
    }

    /// How many container and sandbox statuses are cached (out-of-date entries not counted).
    pub(crate) fn len(&self) -> (usize, usize) {
        let m = self.lock();
        let containers = m.containers.values().filter(|c| c.status.state != STALE);
        (containers.count(), m.sandboxes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use staticlet_runtime::Labels;

    fn container(id: &str, state: cri::ContainerState, uid: &str) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: id.into(),
            state: state as i32,
            exit_code: 7,
            labels: HashMap::from([
                ("managed".to_string(), "true".to_string()),
                ("uid".to_string(), uid.to_string()),
            ]),
            ..Default::default()
        }
    }

    fn sandbox(id: &str, state: cri::PodSandboxState, uid: &str) -> cri::PodSandboxStatus {
        cri::PodSandboxStatus {
            id: id.into(),
            state: state as i32,
            labels: HashMap::from([
                ("managed".to_string(), "true".to_string()),
                ("uid".to_string(), uid.to_string()),
            ]),
            ..Default::default()
        }
    }

    fn sel(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Labels>(),
        )
    }

    fn ids(xs: &[&str]) -> HashSet<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    use cri::ContainerState::*;
    use cri::PodSandboxState::*;

    #[test]
    fn a_container_entry_serves_only_its_own_state() {
        let c = StatusCache::default();
        c.put_container(&container("c1", ContainerCreated, "a"), "s1");
        assert!(c.container("c1", ContainerCreated as i32).is_some());
        // Started: the list says RUNNING, the CREATED record must not be served.
        assert_eq!(c.container("c1", ContainerRunning as i32), None);
        c.put_container(&container("c1", ContainerRunning, "a"), "s1");
        assert_eq!(
            c.container("c1", ContainerRunning as i32).map(|s| s.state),
            Some(ContainerRunning as i32)
        );
        // Exited: the running record (no exit code) is not served for an EXITED listing.
        assert_eq!(c.container("c1", ContainerExited as i32), None);
        assert_eq!(c.container("other", ContainerRunning as i32), None);
        assert_eq!(c.container_sandbox("c1").as_deref(), Some("s1"));
    }

    #[test]
    fn unknown_states_are_never_cached() {
        let c = StatusCache::default();
        c.put_container(&container("c1", ContainerRunning, "a"), "s1");
        // A fresh status in an unknown state replaces (drops) the running one.
        c.put_container(&container("c1", ContainerUnknown, "a"), "s1");
        assert_eq!(c.container("c1", ContainerUnknown as i32), None);
        assert_eq!(c.container("c1", ContainerRunning as i32), None);
        let mut odd = sandbox("s1", SandboxReady, "a");
        odd.state = 42;
        c.put_sandbox(&odd);
        assert_eq!(c.sandbox("s1", 42), None);
        assert_eq!(c.len(), (0, 0));
    }

    #[test]
    fn lists_prune_only_what_their_selector_covers() {
        let c = StatusCache::default();
        c.put_container(&container("a1", ContainerRunning, "a"), "sa");
        c.put_container(&container("a2", ContainerExited, "a"), "sa");
        c.put_container(&container("b1", ContainerRunning, "b"), "sb");
        // Pod a's list returned only a1: a2 is gone; b1 is not covered by the selector.
        c.prune_containers(&sel(&[("managed", "true"), ("uid", "a")]), &ids(&["a1"]));
        assert!(c.container("a1", ContainerRunning as i32).is_some());
        assert!(c.container("a2", ContainerExited as i32).is_none());
        assert!(c.container("b1", ContainerRunning as i32).is_some());
        // The managed list covers everything.
        c.prune_containers(&sel(&[("managed", "true")]), &ids(&["b1"]));
        assert_eq!(c.len(), (1, 0));

        c.put_sandbox(&sandbox("sa", SandboxReady, "a"));
        c.put_sandbox(&sandbox("sb", SandboxNotready, "b"));
        c.prune_sandboxes(&sel(&[("uid", "b")]), &ids(&[]));
        assert!(c.sandbox("sa", SandboxReady as i32).is_some());
        assert!(c.sandbox("sb", SandboxNotready as i32).is_none());
        assert_eq!(c.sandbox("sa", SandboxNotready as i32), None);
    }

    #[test]
    fn created_started_and_stopped_containers_keep_their_sandbox_but_no_status() {
        let c = StatusCache::default();
        let labels = container("x", ContainerCreated, "a").labels;
        c.created_container("c1", "s1", labels);
        assert_eq!(c.container_sandbox("c1").as_deref(), Some("s1"));
        for state in [ContainerCreated, ContainerRunning, ContainerExited] {
            assert_eq!(c.container("c1", state as i32), None);
        }
        assert_eq!(c.len(), (0, 0));
        c.put_container(&container("c1", ContainerRunning, "a"), "s1");
        assert!(c.container("c1", ContainerRunning as i32).is_some());
        c.invalidate_container("c1");
        assert_eq!(c.container("c1", ContainerRunning as i32), None);
        assert_eq!(c.container_sandbox("c1").as_deref(), Some("s1"));
        // A list of its pod that no longer returns it drops the entry (labels are kept).
        c.prune_containers(&sel(&[("managed", "true"), ("uid", "a")]), &ids(&[]));
        assert_eq!(c.container_sandbox("c1"), None);
    }

    #[test]
    fn removing_a_sandbox_forgets_its_containers() {
        let c = StatusCache::default();
        c.put_container(&container("a1", ContainerExited, "a"), "sa");
        c.put_container(&container("b1", ContainerRunning, "b"), "sb");
        c.put_sandbox(&sandbox("sa", SandboxNotready, "a"));
        c.put_sandbox(&sandbox("sb", SandboxReady, "b"));
        c.forget_sandbox("sb", false);
        assert_eq!(c.len(), (2, 1));
        c.forget_sandbox("sa", true);
        assert_eq!(c.len(), (1, 0));
        assert!(c.container("b1", ContainerRunning as i32).is_some());
        c.forget_container("b1");
        assert_eq!(c.len(), (0, 0));
    }
}
