//! The server side of the streaming protocols kube-apiserver uses toward a kubelet for
//! `kubectl exec`, `kubectl attach` and `kubectl port-forward`: an HTTP/1.1 request upgraded to
//! SPDY/3.1, carrying several streams.
//!
//! kubelet does this with `k8s.io/apimachinery/pkg/util/httpstream/spdy` over
//! `github.com/moby/spdystream`, and the protocols on top in `pkg/kubelet/cri/streaming`
//! (`remotecommand`, `portforward`). This crate is an independent implementation of the same
//! wire behaviour, written from the SPDY/3.1 draft and from reading those packages:
//!
//! * [`frame`] — frame encoding/decoding and the zlib-compressed header blocks;
//! * [`session`] — a multiplexed session over any `AsyncRead + AsyncWrite` (the upgraded
//!   connection), server and client side, with SPDY/3.1 flow control;
//! * [`upgrade`] — the HTTP/1.1 upgrade and `X-Stream-Protocol-Version` negotiation, over
//!   `http::HeaderMap`, framework-neutral;
//! * [`remotecommand`] — exec/attach (`v4.channel.k8s.io` and older): the stdin/stdout/stderr/
//!   error/resize streams and the exit status on the error stream;
//! * [`portforward`] — `portforward.k8s.io`: data/error stream pairs per forwarded connection.
//!
//! Everything runs on tokio; [`session::Session`] spawns two tasks per connection.
//!
//! ```no_run
//! use std::time::Duration;
//! use staticlet_spdy::remotecommand::{self, ExitError, Protocol, StreamOptions};
//! use staticlet_spdy::{upgrade, Session};
//! use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
//!
//! // After answering 101 with `upgrade::upgrade(&headers, remotecommand::SUPPORTED_PROTOCOLS)`,
//! // `io` is the upgraded connection (with hyper: `TokioIo::new(hyper::upgrade::on(req).await?)`).
//! async fn exec<T>(io: T, negotiated: &str, query: &str) -> Result<(), Box<dyn std::error::Error>>
//! where
//!     T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
//! {
//!     let options = StreamOptions::from_query(query)?;
//!     let protocol = Protocol::from_name(negotiated).unwrap_or(Protocol::V4);
//!     let mut rc = remotecommand::accept(Session::server(io), protocol, options, Duration::from_secs(30)).await?;
//!     if let Some(mut stdout) = rc.stdout.take() {
//!         stdout.write_all(b"hello\n").await?;
//!         stdout.shutdown().await?;
//!     }
//!     rc.finish(Err(ExitError::exit_code(42, &["sh".into()]))).await?;
//!     Ok(())
//! }
//! ```
//!
//! `crates/spdy/interop/run.sh` checks all of this against client-go v0.34.1 (needs Go).
//!
//! What the peer actually is: kube-apiserver either relays kubectl's own SPDY connection
//! byte for byte, or (when kubectl speaks WebSocket to it) translates to SPDY with client-go's
//! executor. Either way the other end is spdystream, which implements SPDY/3 framing but no
//! flow control: it never sends WINDOW_UPDATE and ignores ours. [`session::FlowControl::Auto`]
//! (the default) therefore only holds back what it sends once the peer has shown it does flow
//! control.

pub mod frame;
pub mod portforward;
pub mod remotecommand;
pub mod session;
pub mod upgrade;

mod dictionary;

pub use frame::{Headers, RstStatus};
pub use session::{IncomingStream, Session, SessionConfig, SessionError, Stream};
