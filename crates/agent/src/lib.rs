//! The staticlet node agent, as a library: everything `staticlet run` does, with its I/O passed
//! in so tests can run it (a runtime, listeners, a shutdown token).
//!
//! # Layout
//! - [`config`]: pod sources (manifest directory, manifest URL) and the merger that owns the
//!   desired pod set (≈ kubelet `pkg/kubelet/config`).
//! - [`pod_workers`]: the pod manager, one worker per pod UID, its pure planning step and the
//!   back-off (≈ kubelet `pod_workers.go`, `kuberuntime_manager.go`).
//! - [`rollout`]: health-gated updates with automatic rollback (a pure machine per pod, its
//!   controller between the merger and the pod manager, and its on-disk store).
//! - [`prober`]: liveness, readiness and startup probes (≈ kubelet `pkg/kubelet/prober`).
//! - [`kuberuntime`]: Pod → runtime configurations, and pod volumes on the host.
//! - [`status`]: pod status computation; [`events`]: the per-pod event log; [`metrics`]:
//!   `/metrics` in the Prometheus text format.
//! - [`server`]: the local HTTP API (unix socket, optional TCP); [`cluster`]: what the
//!   cluster side (mirror pods, Node, Lease) reports back for it.
//! - [`startup`]: whether every pod found at start is adopted or started (systemd readiness).
//! - [`agent`]: wiring of the above.

pub mod agent;
pub mod cluster;
pub mod config;
pub mod control;
pub mod events;
pub mod image_gc;
pub mod kuberuntime;
pub mod metrics;
pub mod nodeshutdown;
pub mod ordering;
pub mod pod_workers;
pub mod prober;
pub mod rollout;
pub mod server;
pub mod startup;
pub mod status;
