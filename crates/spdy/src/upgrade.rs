//! The HTTP/1.1 upgrade to SPDY/3.1 as kubelet performs it: the counterpart of
//! `httpstream.Handshake` (sub-protocol negotiation) and `spdy.responseUpgrader.UpgradeResponse`
//! (the `101 Switching Protocols`), over `http::HeaderMap`, so any server can use it.
//!
//! With hyper/axum: call [`upgrade`] on the request's headers; on `Err` send the
//! [`Rejection`] as the response; on `Ok` answer `101` with [`Upgrade::headers`], then take the
//! connection with `hyper::upgrade::on(request)` and start a
//! [`Session::server`](crate::Session::server) on it (wrapped in
//! `hyper_util::rt::TokioIo`).
//!
//! Behaviour kept from kubelet:
//!
//! * the client lists its protocols in `X-Stream-Protocol-Version` (one header per protocol, or
//!   comma-separated); the chosen one is the client's most preferred protocol the server
//!   supports — `negotiateProtocol` walks the client's list first (its doc comment says the
//!   server's list, the code does not); no header → 400
//!   `unable to upgrade: X-Stream-Protocol-Version is required`; no common protocol → 403
//!   with one `X-Accepted-Stream-Protocol-Versions` header per server protocol and kubelet's
//!   message (Go's `%v` formatting of both lists);
//! * negotiation comes first, then the upgrade headers: `Connection` must contain `upgrade` and
//!   `Upgrade` must contain `spdy/3.1` (first value of each, case-insensitive), else 400;
//! * the 101 carries `Connection: Upgrade`, `Upgrade: SPDY/3.1` and
//!   `X-Stream-Protocol-Version: <chosen>`.
//!
//! Not kept: kubelet 1.34's remotecommand handler writes a second `http.Error` (400) after a
//! failed negotiation, which only appends the message again to the 403's body.

use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_TYPE, UPGRADE};
use http::{HeaderMap, StatusCode};

/// The request header listing the client's protocols, and the response header naming the
/// chosen one.
pub const HEADER_PROTOCOL_VERSION: &str = "x-stream-protocol-version";
/// Response header listing the server's protocols when none matched.
pub const HEADER_ACCEPTED_PROTOCOL_VERSIONS: &str = "x-accepted-stream-protocol-versions";
/// The `Upgrade` token.
pub const SPDY_31: &str = "SPDY/3.1";

/// A successful handshake: answer `101 Switching Protocols` with these headers.
#[derive(Clone, Debug)]
pub struct Upgrade {
    /// The negotiated sub-protocol (e.g. `v4.channel.k8s.io`).
    pub protocol: String,
    pub headers: HeaderMap,
}

impl Upgrade {
    pub fn status(&self) -> StatusCode {
        StatusCode::SWITCHING_PROTOCOLS
    }
}

/// A refused handshake, to send as the response (`text/plain`, as Go's `http.Error`).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    pub status: StatusCode,
    pub message: String,
    /// Listed in `X-Accepted-Stream-Protocol-Versions` when negotiation failed.
    pub accepted_protocols: Vec<String>,
}

impl Rejection {
    fn new(status: StatusCode, message: String) -> Self {
        Rejection {
            status,
            message,
            accepted_protocols: Vec::new(),
        }
    }

    /// The response headers.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(
            HeaderName::from_static("x-content-type-options"),
            HeaderValue::from_static("nosniff"),
        );
        for p in &self.accepted_protocols {
            if let Ok(v) = HeaderValue::from_str(p) {
                headers.append(HEADER_ACCEPTED_PROTOCOL_VERSIONS, v);
            }
        }
        headers
    }

    /// The response body: the message and a newline.
    pub fn body(&self) -> String {
        format!("{}\n", self.message)
    }
}

/// The client's protocols, in its order: every `X-Stream-Protocol-Version` value, split on
/// commas, trimmed, empty ones dropped.
pub fn client_protocols(request: &HeaderMap) -> Vec<String> {
    request
        .get_all(HEADER_PROTOCOL_VERSION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim_matches(' '))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Sub-protocol negotiation (`httpstream.Handshake`).
pub fn negotiate(request: &HeaderMap, server_protocols: &[&str]) -> Result<String, Rejection> {
    let client = client_protocols(request);
    if client.is_empty() {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required".into(),
        ));
    }
    if let Some(chosen) = client
        .iter()
        .find(|c| server_protocols.contains(&c.as_str()))
    {
        return Ok(chosen.clone());
    }
    let mut rejection = Rejection::new(
        StatusCode::FORBIDDEN,
        format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
            client.join(" "),
            server_protocols.join(" ")
        ),
    );
    rejection.accepted_protocols = server_protocols.iter().map(|p| (*p).to_owned()).collect();
    Err(rejection)
}

fn first_lowered(request: &HeaderMap, name: HeaderName) -> String {
    request
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The whole handshake: negotiation, then the upgrade headers; on success the headers of the
/// `101` response.
pub fn upgrade(request: &HeaderMap, server_protocols: &[&str]) -> Result<Upgrade, Rejection> {
    let protocol = negotiate(request, server_protocols)?;
    let connection = first_lowered(request, CONNECTION);
    let upgrade = first_lowered(request, UPGRADE);
    if !connection.contains("upgrade") || !upgrade.contains("spdy/3.1") {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: missing upgrade headers in request: {request:?}"),
        ));
    }
    let mut headers = HeaderMap::new();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(SPDY_31));
    let value = HeaderValue::from_str(&protocol).map_err(|_| {
        Rejection::new(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: invalid protocol name".into(),
        )
    })?;
    headers.insert(HEADER_PROTOCOL_VERSION, value);
    Ok(Upgrade { protocol, headers })
}

/// The headers a client (client-go's SPDY round tripper) sends to ask for the upgrade: for
/// tests and in-process clients.
pub fn client_request_headers(protocols: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static(SPDY_31));
    for p in protocols {
        if let Ok(v) = HeaderValue::from_str(p) {
            headers.append(HEADER_PROTOCOL_VERSION, v);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &[&str] = &[
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    ];

    #[test]
    fn picks_the_clients_most_preferred_supported_protocol() {
        // client-go's SPDY executor offers v5 first; kubelet does not speak v5 over SPDY.
        let req = client_request_headers(&[
            "v5.channel.k8s.io",
            "v4.channel.k8s.io",
            "v3.channel.k8s.io",
            "v2.channel.k8s.io",
            "channel.k8s.io",
        ]);
        let up = upgrade(&req, SERVER).unwrap();
        assert_eq!(up.protocol, "v4.channel.k8s.io");
        assert_eq!(up.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(up.headers[CONNECTION], "Upgrade");
        assert_eq!(up.headers[UPGRADE], "SPDY/3.1");
        assert_eq!(up.headers[HEADER_PROTOCOL_VERSION], "v4.channel.k8s.io");

        // Client order wins over server order.
        let req = client_request_headers(&["v2.channel.k8s.io", "v4.channel.k8s.io"]);
        assert_eq!(negotiate(&req, SERVER).unwrap(), "v2.channel.k8s.io");
    }

    #[test]
    fn comma_separated_values_are_split() {
        let mut req = HeaderMap::new();
        req.insert(
            HEADER_PROTOCOL_VERSION,
            HeaderValue::from_static(" x.k8s.io , v3.channel.k8s.io,"),
        );
        assert_eq!(
            client_protocols(&req),
            vec!["x.k8s.io".to_owned(), "v3.channel.k8s.io".to_owned()]
        );
        assert_eq!(negotiate(&req, SERVER).unwrap(), "v3.channel.k8s.io");
    }

    #[test]
    fn missing_or_unknown_protocols_are_refused_as_kubelet_does() {
        let mut req = client_request_headers(&[]);
        let r = upgrade(&req, SERVER).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            r.body(),
            "unable to upgrade: X-Stream-Protocol-Version is required\n"
        );

        req.append(HEADER_PROTOCOL_VERSION, HeaderValue::from_static("a"));
        req.append(HEADER_PROTOCOL_VERSION, HeaderValue::from_static("b"));
        let r = upgrade(&req, &["portforward.k8s.io"]).unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            r.message,
            "unable to upgrade: unable to negotiate protocol: client supports [a b], server accepts [portforward.k8s.io]"
        );
        let headers = r.headers();
        let accepted: Vec<_> = headers
            .get_all(HEADER_ACCEPTED_PROTOCOL_VERSIONS)
            .iter()
            .collect();
        assert_eq!(accepted, vec!["portforward.k8s.io"]);
        assert_eq!(headers[CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn upgrade_headers_are_required_after_negotiation() {
        let mut req = client_request_headers(&["portforward.k8s.io"]);
        req.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        let r = upgrade(&req, &["portforward.k8s.io"]).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r
            .message
            .starts_with("unable to upgrade: missing upgrade headers in request: "));

        // Case and extra tokens do not matter.
        let mut req = client_request_headers(&["portforward.k8s.io"]);
        req.insert(CONNECTION, HeaderValue::from_static("keep-alive, UPGRADE"));
        req.insert(UPGRADE, HeaderValue::from_static("spdy/3.1"));
        assert!(upgrade(&req, &["portforward.k8s.io"]).is_ok());
    }
}
