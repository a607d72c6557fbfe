//! Registry credentials: docker's `config.json` (`~/.docker/config.json`, or the file kubelet's
//! `--image-credential-provider` users point at) and the OAuth2 refresh-token exchange that
//! docker's `identitytoken` entries need.
//!
//! Only `auths` is read. Each entry is keyed by a registry host (`registry.example:5000`) or URL
//! (`https://index.docker.io/v1/` is docker.io) and carries `auth` (base64 `user:password`),
//! `username`/`password`, or `identitytoken` (a refresh token exchanged for an access token at
//! the registry's token service). `credHelpers` and `credsStore` need external programs and are
//! ignored with a debug log.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{io_err, Error, Result};
use crate::reference::DEFAULT_DOMAIN;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic credentials (also sent to a bearer token service, which issues a token).
    Basic { username: String, password: String },
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged at the registry's token
    /// service for an access token.
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::IdentityToken(_) => f.debug_tuple("IdentityToken").field(&"<redacted>").finish(),
        }
    }
}

/// The registry credentials of a docker `config.json`, by normalised registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerConfig {
    auths: BTreeMap<String, Credentials>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// Reads a docker `config.json`. A missing `auths` is an empty config; a malformed entry is an
/// error naming its key.
pub fn load_docker_config(path: &Path) -> Result<DockerConfig> {
    let bytes = std::fs::read(path).map_err(io_err("read", path))?;
    DockerConfig::parse(&bytes).map_err(|message| Error::InvalidDocument {
        what: "docker config",
        location: path.display().to_string(),
        message,
    })
}

/// The registry host a docker config key or reference domain names: scheme and path dropped,
/// docker hub's aliases mapped to `docker.io`.
pub fn normalize_registry_host(key: &str) -> String {
    let s = key.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DEFAULT_DOMAIN.to_string()
        }
        _ => host,
    }
}

impl DockerConfig {
    /// Parses the contents of a `config.json`; the error is a message.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        for (host, helper) in &raw.cred_helpers {
            tracing::debug!(
                host,
                helper,
                "credential helpers are not supported; ignored"
            );
        }
        if let Some(store) = &raw.creds_store {
            tracing::debug!(store, "credsStore is not supported; ignored");
        }
        let mut auths = BTreeMap::new();
        for (key, entry) in raw.auths {
            let nonempty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
            let creds = if let Some(token) = nonempty(&entry.identitytoken) {
                Credentials::IdentityToken(token)
            } else if let Some(auth) = nonempty(&entry.auth) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| format!("auths[{key:?}].auth is not base64: {e}"))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| format!("auths[{key:?}].auth is not UTF-8"))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("auths[{key:?}].auth is not user:password"))?;
                Credentials::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                }
            } else if let Some(username) = nonempty(&entry.username) {
                Credentials::Basic {
                    username,
                    password: entry.password.unwrap_or_default(),
                }
            } else {
                tracing::debug!(key, "docker config entry without credentials; ignored");
                continue;
            };
            // An exact host key wins over a URL key naming the same host.
            let host = normalize_registry_host(&key);
            let exact = !key.contains('/');
            if exact || !auths.contains_key(&host) {
                auths.insert(host, creds);
            }
        }
        Ok(Self { auths })
    }

    /// The credentials for a registry host (`docker.io`, `registry.example:5000`; a URL or
    /// docker hub alias works too).
    pub fn auth_for(&self, registry_host: &str) -> Option<Credentials> {
        self.auths
            .get(&normalize_registry_host(registry_host))
            .cloned()
    }

    /// Whether the config holds no usable credentials.
    pub fn is_empty(&self) -> bool {
        self.auths.is_empty()
    }
}

/// A `WWW-Authenticate: Bearer realm=...,service=...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
}

/// Parses a bearer challenge; `None` for other schemes or without a realm.
pub(crate) fn parse_bearer_challenge(header: &str) -> Option<BearerChallenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value),
            "service" => service = Some(value),
            _ => {}
        }
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(BearerChallenge {
        realm: realm?,
        service,
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// Exchanges an identity (refresh) token for an access token to pull `repository`, as docker
/// does: `GET /v2/` for the challenge, then an OAuth2 `refresh_token` grant at its realm.
/// Returns `Ok(None)` when the registry asks for no bearer token (the identity token is then
/// sent as it is). The error is a message.
pub(crate) async fn exchange_identity_token(
    http: &reqwest::Client,
    base_url: &str,
    repository: &str,
    identity_token: &str,
) -> std::result::Result<Option<String>, (Option<u16>, String)> {
    let transport = |e: reqwest::Error| (None, super::error_chain(&e));
    let res = http
        .get(format!("{base_url}/v2/"))
        .send()
        .await
        .map_err(transport)?;
    let Some(challenge) = res
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_bearer_challenge)
    else {
        return Ok(None);
    };
    let mut form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", identity_token.to_string()),
        ("client_id", "staticlet".to_string()),
        ("scope", format!("repository:{repository}:pull")),
    ];
    if let Some(service) = &challenge.service {
        form.push(("service", service.clone()));
    }
    let res = http
        .post(&challenge.realm)
        .form(&form)
        .send()
        .await
        .map_err(transport)?;
    let status = res.status();
    let body = res.text().await.map_err(transport)?;
    if !status.is_success() {
        return Err((
            Some(status.as_u16()),
            format!(
                "token service {} answered {status}: {}",
                challenge.realm,
                body.trim()
            ),
        ));
    }
    let token: TokenResponse = serde_json::from_str(&body)
        .map_err(|e| (None, format!("token service {}: {e}", challenge.realm)))?;
    token
        .access_token
        .or(token.token)
        .filter(|t| !t.is_empty())
        .map(Some)
        .ok_or_else(|| {
            (
                None,
                format!("token service {} returned no token", challenge.realm),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn docker_config_auth_forms() {
        let json = serde_json::json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser:hub:pass")},
                "registry.example:5000": {"username": "u", "password": "p"},
                "https://quay.example/v2/": {"auth": b64("ignored:x")},
                "quay.example": {"auth": b64("exact:y")},
                "token.example": {"auth": b64("<token>:"), "identitytoken": "refresh-me"},
                "empty.example": {},
            },
            "credHelpers": {"gcr.io": "gcloud"},
            "credsStore": "desktop",
        });
        let cfg = DockerConfig::parse(json.to_string().as_bytes()).unwrap();
        let basic = |u: &str, p: &str| {
            Some(Credentials::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        assert_eq!(cfg.auth_for("docker.io"), basic("hubuser", "hub:pass"));
        assert_eq!(
            cfg.auth_for("index.docker.io"),
            basic("hubuser", "hub:pass")
        );
        assert_eq!(cfg.auth_for("registry.example:5000"), basic("u", "p"));
        assert_eq!(cfg.auth_for("registry.example"), None);
        assert_eq!(cfg.auth_for("quay.example"), basic("exact", "y"));
        assert_eq!(
            cfg.auth_for("token.example"),
            Some(Credentials::IdentityToken("refresh-me".into()))
        );
        assert_eq!(cfg.auth_for("empty.example"), None);
        assert_eq!(cfg.auth_for("gcr.io"), None);
        let dbg = format!("{:?}", cfg.auth_for("registry.example:5000").unwrap());
        assert!(!dbg.contains("\"p\""), "{dbg}");
    }

    #[test]
    fn docker_config_errors_and_files() {
        let err = DockerConfig::parse(br#"{"auths": {"r.example": {"auth": "%%%"}}}"#).unwrap_err();
        assert!(err.contains("r.example") && err.contains("base64"), "{err}");
        let no_colon = format!(
            r#"{{"auths": {{"r.example": {{"auth": "{}"}}}}}}"#,
            b64("x")
        );
        assert!(DockerConfig::parse(no_colon.as_bytes()).is_err());
        assert!(DockerConfig::parse(b"{}").unwrap().is_empty());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert!(matches!(load_docker_config(&path), Err(Error::Io { .. })));
        std::fs::write(&path, b"not json").unwrap();
        let err = load_docker_config(&path).unwrap_err().to_string();
        assert!(
            err.contains("docker config") && err.contains("config.json"),
            "{err}"
        );
        std::fs::write(
            &path,
            format!(r#"{{"auths":{{"h:1":{{"auth":"{}"}}}}}}"#, b64("a:b")),
        )
        .unwrap();
        assert!(load_docker_config(&path).unwrap().auth_for("h:1").is_some());
    }

    #[test]
    fn bearer_challenges() {
        assert_eq!(
            parse_bearer_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(BearerChallenge {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into())
            })
        );
        assert_eq!(
            parse_bearer_challenge(r#"bearer service=svc, realm="http://x/t\"q""#),
            Some(BearerChallenge {
                realm: "http://x/t\"q".into(),
                service: Some("svc".into())
            })
        );
        assert_eq!(
            parse_bearer_challenge(r#"Basic realm="Registry Realm""#),
            None
        );
        assert_eq!(parse_bearer_challenge(r#"Bearer service="x""#), None);
    }
}
