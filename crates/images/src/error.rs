//! The error type of the image store: one enum whose variants name the file, digest or
//! reference they are about, so a failure can be reported without further context.

use std::io;
use std::path::PathBuf;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `write`, `rename`, ...).
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A digest string is malformed or uses an algorithm other than sha256.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// Content does not hash to the digest it was announced with; nothing was kept.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    /// Content does not have the size it was announced with; nothing was kept.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    /// The uncompressed content of a layer does not hash to the config's diff ID.
    #[error("diff id mismatch for layer {layer}: config says {expected}, content is {actual}")]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    /// A blob the operation needs is not in the store.
    #[error("blob {digest} not found")]
    BlobNotFound { digest: String },
    /// An image reference cannot be parsed.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// No image with this reference (or id) is in the store.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// The caller's predicate says the image is in use, so it was not removed.
    #[error("image {reference:?} is in use")]
    InUse { reference: String },
    /// A JSON document (manifest, config, index, archive manifest) cannot be decoded.
    #[error("invalid {what} {location}: {message}")]
    InvalidDocument {
        /// `manifest`, `config`, `index`, `manifest.json`, ...
        what: &'static str,
        /// The digest or path of the document.
        location: String,
        message: String,
    },
    /// A descriptor or blob has a media type the store cannot use in that place.
    #[error("unsupported media type {media_type:?} for {digest}")]
    UnsupportedMediaType { media_type: String, digest: String },
    /// An image index has no manifest for the store's platform.
    #[error("no manifest for platform {platform} in index {digest}")]
    NoMatchingPlatform { platform: String, digest: String },
    /// A layer tar holds an entry that would land outside the rootfs.
    #[error("unsafe path {path:?} in layer {layer}: {reason}")]
    UnsafePath {
        layer: String,
        path: String,
        reason: &'static str,
    },
    /// A layer exceeds one of the [`UnpackLimits`](crate::unpack::UnpackLimits).
    #[error("layer {layer} exceeds the {limit} limit of {value} at {path:?}")]
    LimitExceeded {
        layer: String,
        /// The entry being read when the limit was hit.
        path: String,
        /// `layer size`, `entry count` or `header size`.
        limit: &'static str,
        value: u64,
    },
    /// An operation on one image failed: `source` says why. Imports wrap their errors in this
    /// so that the message names the image.
    #[error("image {image}: {source}")]
    Image {
        image: String,
        #[source]
        source: Box<Error>,
    },
    /// A layer tar is malformed or an entry cannot be applied.
    #[error("cannot unpack layer {layer} at {path:?}: {message}")]
    Unpack {
        layer: String,
        path: String,
        message: String,
    },
    /// An archive or layout to import is malformed.
    #[error("invalid archive {path}: {message}")]
    InvalidArchive { path: PathBuf, message: String },
}

impl Error {
    /// The error without [`Error::Image`] wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Self::Image { source, .. } => source.root(),
            other => other,
        }
    }

    /// The error without [`Error::Image`] wrappers, by value.
    pub fn into_root(self) -> Error {
        match self {
            Self::Image { source, .. } => source.into_root(),
            other => other,
        }
    }

    /// Wraps the error as being about `image` (once).
    pub fn for_image(self, image: &str) -> Self {
        match self {
            e @ Self::Image { .. } => e,
            other => Self::Image {
                image: image.to_string(),
                source: Box::new(other),
            },
        }
    }
}

/// Result alias of the image store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an `io::Error` to [`Error::Io`] with the operation and path.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { op, path, source }
}
