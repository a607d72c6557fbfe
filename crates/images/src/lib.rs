//! The content-addressed OCI image store of staticlet's embedded runtime.
//!
//! What this crate owns: the image data under `<root-dir>/images` (blobs by sha256, the index of
//! references, layers unpacked once per chain ID), imports of docker archives and OCI layouts,
//! pulls from registries ([`pull`]: blobs streamed through [`BlobWriter`], the image finished
//! with [`ImageStore::commit_image`], exactly as imports do), the choice of a platform manifest
//! from an image index, removal with garbage collection, and the resolved image configuration
//! the runtime builds an OCI runtime spec from. What it does not own: mounting (the runtime
//! stacks the dirs of [`ImageStore::rootfs_layers`] with overlayfs or uses
//! [`ImageStore::flatten_rootfs`]), and
//! knowing which images containers use (callers pass an `in_use` predicate to
//! [`ImageStore::remove`]).
//!
//! The store API is blocking: call it from `tokio::task::spawn_blocking` ([`pull`] is async and
//! does so itself). An [`ImageStore`] is `Sync` and several stores (threads or processes) may
//! open the same root: index updates, unpacks and garbage collection are serialised with `flock`
//! locks under `images/locks/`.

pub mod blob;
pub mod digest;
pub mod error;
pub mod import;
mod lock;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod store;
pub mod unpack;

#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod parallel_tests;
#[cfg(test)]
mod tests;

pub use blob::{BlobInfo, BlobWriter};
pub use digest::{chain_ids, sha256_digest};
pub use error::{Error, Result};
pub use import::ImportOptions;
pub use platform::{select_manifest, Platform};
pub use pull::{
    load_docker_config, Credentials, DockerConfig, PullError, PullOptions, Puller,
    DEFAULT_STALL_TIMEOUT,
};
pub use reference::{normalize, Reference};
pub use store::{GcReport, ImageConfig, ImageListEntry, ImageRecord, ImageStore, Lease};
pub use unpack::UnpackLimits;
