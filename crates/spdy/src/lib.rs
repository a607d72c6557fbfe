//! The server side of the streaming protocols kube-apiserver uses toward a kubelet for
//! `kubectl exec`, `kubectl attach` and `kubectl port-forward` (SPDY/3.1 over an upgraded
//! HTTP/1.1 connection): [`frame`] (the framing layer) and [`session`] (streams over one
//! connection, with flow control).

pub mod frame;
pub mod session;

mod dictionary;

pub use frame::{Headers, RstStatus};
pub use session::{IncomingStream, Session, SessionConfig, SessionError, Stream};
