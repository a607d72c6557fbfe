//! The server side of the streaming protocols kube-apiserver uses toward a kubelet for
//! `kubectl exec`, `kubectl attach` and `kubectl port-forward` (SPDY/3.1 over an upgraded
//! HTTP/1.1 connection). This first part is the framing layer: [`frame`].

pub mod frame;

mod dictionary;
