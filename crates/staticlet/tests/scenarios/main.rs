//! End-to-end scenarios written once and run against both container runtimes. Each scenario is
//! a `fn(&mut Env)`; [`on_both_backends!`] instantiates it as `<module>::embedded::<name>`
//! (staticlet's own runtime: shims, overlayfs, namespaces, cgroups, CNI plugins run by the
//! agent) and `<module>::containerd::<name>` (a private containerd the test starts, reached
//! through `--container-runtime-endpoint`). What only one runtime has is tested in `e2e.rs`
//! (embedded) and `cri_e2e.rs` (containerd).
//!
//! Root is needed, and `busybox-static`, `containernetworking-plugins`, and for the containerd
//! variants `containerd`, `runc` and `gcc` (`scripts/test.sh` installs them all). Without root,
//! or without containerd for its variants, a test says why and passes.
//!
//! `cargo test --test scenarios containerd::` runs one backend's variants.
// Real processes in real time: std::time::Instant is right here.
#![allow(clippy::disallowed_types)]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod lifecycle;
mod probes;
mod rollout;
mod security;
