//! Authentication and authorization of node API requests, as kubelet does them
//! (`pkg/kubelet/server/auth.go`, `InstallAuthFilter`, and the delegating authenticator and
//! authorizer kubelet builds from its configuration):
//!
//! - **authentication**, in order: a client certificate verified against `clientCAFile` (the
//!   user is its CN, the groups its Os); a bearer token reviewed by the API server
//!   (`TokenReview`, when `authentication.webhook.enabled`; answers cached for
//!   `cacheTTL`, 2 min); else `system:anonymous` (group `system:unauthenticated`) when
//!   `authentication.anonymous.enabled`; else `401 Unauthorized`;
//! - **authorization**: `AlwaysAllow`, or `Webhook`: a `SubjectAccessReview` per question
//!   ([`crate::attributes`]), answers cached for `cacheAuthorizedTTL` (5 min) and
//!   `cacheUnauthorizedTTL` (30 s); no attribute allowed → `403` with kubelet's message
//!   `Forbidden (user=U, verb=V, resource=nodes, subresource(s)=[...])`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::attributes::Attributes;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// kubelet's anonymous user.
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
            extra: BTreeMap::new(),
        }
    }
}

/// What an authorizer answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied or no opinion, with the authorizer's reason.
    Deny(String),
}

/// The API server's reviews (`TokenReview`, `SubjectAccessReview`); a trait so tests can answer.
#[async_trait]
pub trait Reviewer: Send + Sync + 'static {
    /// Who holds `token`, or `None` when the API server does not know it.
    async fn review_token(&self, token: &str) -> Result<Option<User>, String>;
    /// Whether `user` may do what `attrs` describe.
    async fn review_access(&self, user: &User, attrs: &Attributes) -> Result<Decision, String>;
}

/// How requests are authenticated (kubelet's `authentication` configuration).
#[derive(Clone)]
pub struct AuthnConfig {
    /// `authentication.anonymous.enabled`.
    pub anonymous: bool,
    /// `authentication.webhook.enabled` (tokens reviewed by the API server), with its
    /// `cacheTTL`.
    pub webhook: Option<(Arc<dyn Reviewer>, Duration)>,
}

/// How requests are authorized (kubelet's `authorization` configuration).
#[derive(Clone)]
pub enum AuthzConfig {
    AlwaysAllow,
    /// `Webhook` mode with `cacheAuthorizedTTL` and `cacheUnauthorizedTTL`.
    Webhook {
        reviewer: Arc<dyn Reviewer>,
        authorized_ttl: Duration,
        unauthorized_ttl: Duration,
    },
}

/// The most answers each cache keeps; when full, expired ones are dropped, then all.
const CACHE_ENTRIES: usize = 4096;

struct Cache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Cache {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        let e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.get(k)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn put(&self, k: K, v: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() >= CACHE_ENTRIES {
            let now = Instant::now();
            e.retain(|_, (_, until)| *until > now);
            if e.len() >= CACHE_ENTRIES {
                e.clear();
            }
        }
        e.insert(k, (v, Instant::now() + ttl));
    }
}

/// Authenticates and authorizes requests (one per server, shared by its connections).
pub struct Auth {
    authn: AuthnConfig,
    authz: AuthzConfig,
    tokens: Cache<String, Option<User>>,
    decisions: Cache<(User, Attributes), Decision>,
}

/// Why a request was refused, with kubelet's status code and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401 `Unauthorized`.
    Unauthorized,
    /// 403 with kubelet's message.
    Forbidden(String),
    /// 500: the authorizer failed.
    Error(String),
}

impl Refusal {
    /// The HTTP status code and the body kubelet writes.
    pub fn status_and_body(&self) -> (u16, String) {
        match self {
            Refusal::Unauthorized => (401, "Unauthorized".into()),
            Refusal::Forbidden(m) => (403, m.clone()),
            Refusal::Error(m) => (500, m.clone()),
        }
    }
}

impl Auth {
    pub fn new(authn: AuthnConfig, authz: AuthzConfig) -> Self {
        Auth {
            authn,
            authz,
            tokens: Cache::new(),
            decisions: Cache::new(),
        }
    }

    /// Who is asking: the verified client certificate's user, else the bearer token's, else
    /// anonymous (when enabled).
    pub async fn authenticate(
        &self,
        cert_user: Option<&User>,
        bearer: Option<&str>,
    ) -> Result<User, Refusal> {
        if let Some(u) = cert_user {
            return Ok(u.clone());
        }
        if let (Some(token), Some((reviewer, ttl))) = (bearer, &self.authn.webhook) {
            let cached = self.tokens.get(&token.to_string());
            let user = match cached {
                Some(u) => u,
                None => match reviewer.review_token(token).await {
                    Ok(u) => {
                        self.tokens.put(token.to_string(), u.clone(), *ttl);
                        u
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "token review failed");
                        None
                    }
                },
            };
            if let Some(u) = user {
                return Ok(u);
            }
        }
        if self.authn.anonymous {
            return Ok(User::anonymous());
        }
        Err(Refusal::Unauthorized)
    }

    /// Whether `user` may make the request described by `attrs` (tried in order; the first
    /// allowed one admits it).
    pub async fn authorize(&self, user: &User, attrs: &[Attributes]) -> Result<(), Refusal> {
        let Some(first) = attrs.first() else {
            return Err(Refusal::Forbidden(
                "Authorization error: could not determine attributes for request".into(),
            ));
        };
        let (reviewer, allowed_ttl, denied_ttl) = match &self.authz {
            AuthzConfig::AlwaysAllow => return Ok(()),
            AuthzConfig::Webhook {
                reviewer,
                authorized_ttl,
                unauthorized_ttl,
            } => (reviewer, *authorized_ttl, *unauthorized_ttl),
        };
        for a in attrs {
            let key = (user.clone(), a.clone());
            let decision = match self.decisions.get(&key) {
                Some(d) => d,
                None => {
                    let d = reviewer.review_access(user, a).await.map_err(|e| {
                        tracing::warn!(error = %e, user = %user.name, subresource = a.subresource, "subject access review failed");
                        Refusal::Error(format!(
                            "Authorization error (user={}, verb={}, resource={}, subresource={})",
                            user.name, a.verb, a.resource, a.subresource
                        ))
                    })?;
                    let ttl = if d == Decision::Allow {
                        allowed_ttl
                    } else {
                        denied_ttl
                    };
                    self.decisions.put(key, d.clone(), ttl);
                    d
                }
            };
            if decision == Decision::Allow {
                return Ok(());
            }
        }
        let subs: Vec<&str> = attrs.iter().map(|a| a.subresource).collect();
        Err(Refusal::Forbidden(format!(
            "Forbidden (user={}, verb={}, resource={}, subresource(s)=[{}])\n",
            user.name,
            first.verb,
            first.resource,
            subs.join(" ")
        )))
    }
}

/// The user of a verified client certificate (DER): CN is the name, each O a group
/// (Kubernetes' `CommonNameUserConversion`). `None` without a CN.
pub fn user_of_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User {
        name,
        uid: String::new(),
        groups,
        extra: BTreeMap::new(),
    })
}

/// The API server's reviews through a client with the node's credentials.
pub struct KubeReviewer {
    client: tokio::sync::watch::Receiver<Option<kube::Client>>,
}

impl KubeReviewer {
    pub fn new(client: kube::Client) -> Self {
        KubeReviewer {
            client: tokio::sync::watch::channel(Some(client)).1,
        }
    }

    /// Reviews through whichever client `client` holds: none until TLS bootstrap has given the
    /// node its credentials (every review fails meanwhile), then the one with the current
    /// client certificate.
    pub fn following(client: tokio::sync::watch::Receiver<Option<kube::Client>>) -> Self {
        KubeReviewer { client }
    }

    fn client(&self) -> Result<kube::Client, String> {
        self.client
            .borrow()
            .clone()
            .ok_or_else(|| "the node has no cluster credentials yet (TLS bootstrap)".to_string())
    }
}

#[async_trait]
impl Reviewer for KubeReviewer {
    async fn review_token(&self, token: &str) -> Result<Option<User>, String> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let api: kube::Api<TokenReview> = kube::Api::all(self.client()?);
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            api.create(&kube::api::PostParams::default(), &review),
        )
        .await
        .map_err(|_| "TokenReview timed out".to_string())?
        .map_err(|e| format!("TokenReview: {e}"))?;
        let Some(status) = r.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let u = status.user.unwrap_or_default();
        Ok(Some(User {
            name: u.username.unwrap_or_default(),
            uid: u.uid.unwrap_or_default(),
            groups: u.groups.unwrap_or_default(),
            extra: u.extra.unwrap_or_default(),
        }))
    }

    async fn review_access(&self, user: &User, attrs: &Attributes) -> Result<Decision, String> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        };
        let api: kube::Api<SubjectAccessReview> = kube::Api::all(self.client()?);
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.clone()),
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some(attrs.resource.into()),
                    subresource: Some(attrs.subresource.into()),
                    name: Some(attrs.name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            api.create(&kube::api::PostParams::default(), &review),
        )
        .await
        .map_err(|_| "SubjectAccessReview timed out".to_string())?
        .map_err(|e| format!("SubjectAccessReview: {e}"))?;
        let status = r.status.unwrap_or_default();
        Ok(if status.allowed && status.denied != Some(true) {
            Decision::Allow
        } else {
            Decision::Deny(status.reason.unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::request_attributes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Knows one token and allows `admin` everything, `pods-reader` only `nodes/pods`.
    #[derive(Default)]
    struct FakeReviewer {
        token_calls: AtomicUsize,
        access_calls: AtomicUsize,
    }

    #[async_trait]
    impl Reviewer for FakeReviewer {
        async fn review_token(&self, token: &str) -> Result<Option<User>, String> {
            self.token_calls.fetch_add(1, Ordering::SeqCst);
            Ok((token == "good").then(|| User {
                name: "pods-reader".into(),
                ..User::anonymous()
            }))
        }
        async fn review_access(&self, user: &User, a: &Attributes) -> Result<Decision, String> {
            self.access_calls.fetch_add(1, Ordering::SeqCst);
            Ok(match (user.name.as_str(), a.subresource) {
                ("admin", _) | ("pods-reader", "pods") => Decision::Allow,
                _ => Decision::Deny("no RBAC rule".into()),
            })
        }
    }

    fn auth(anonymous: bool, r: &Arc<FakeReviewer>) -> Auth {
        let dynr: Arc<dyn Reviewer> = r.clone();
        Auth::new(
            AuthnConfig {
                anonymous,
                webhook: Some((dynr.clone(), Duration::from_secs(120))),
            },
            AuthzConfig::Webhook {
                reviewer: dynr,
                authorized_ttl: Duration::from_secs(300),
                unauthorized_ttl: Duration::from_secs(30),
            },
        )
    }

    #[tokio::test(start_paused = true)]
    async fn certificate_then_token_then_anonymous() {
        let r = Arc::new(FakeReviewer::default());
        let a = auth(false, &r);
        let admin = User {
            name: "admin".into(),
            ..User::anonymous()
        };
        assert_eq!(a.authenticate(Some(&admin), Some("good")).await, Ok(admin));
        assert_eq!(r.token_calls.load(Ordering::SeqCst), 0, "cert first");
        assert_eq!(
            a.authenticate(None, Some("good")).await.unwrap().name,
            "pods-reader"
        );
        assert_eq!(
            a.authenticate(None, Some("bad")).await,
            Err(Refusal::Unauthorized)
        );
        assert_eq!(a.authenticate(None, None).await, Err(Refusal::Unauthorized));
        // Cached for the TTL, reviewed again after it.
        a.authenticate(None, Some("good")).await.unwrap();
        assert_eq!(r.token_calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(121)).await;
        a.authenticate(None, Some("good")).await.unwrap();
        assert_eq!(r.token_calls.load(Ordering::SeqCst), 3);

        let anon = auth(true, &r);
        assert_eq!(
            anon.authenticate(None, Some("bad")).await,
            Ok(User::anonymous())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fine_grained_then_proxy_and_kubelets_forbidden_message() {
        let r = Arc::new(FakeReviewer::default());
        let a = auth(false, &r);
        let reader = User {
            name: "pods-reader".into(),
            ..User::anonymous()
        };
        let pods = request_attributes("GET", "/pods", "n1");
        assert_eq!(a.authorize(&reader, &pods).await, Ok(()));
        let exec = request_attributes("POST", "/exec/ns/p/c", "n1");
        assert_eq!(
            a.authorize(&reader, &exec).await,
            Err(Refusal::Forbidden(
                "Forbidden (user=pods-reader, verb=create, resource=nodes, subresource(s)=[proxy])\n"
                    .into()
            ))
        );
        let healthz = request_attributes("GET", "/healthz", "n1");
        assert_eq!(
            a.authorize(&reader, &healthz).await,
            Err(Refusal::Forbidden(
                "Forbidden (user=pods-reader, verb=get, resource=nodes, subresource(s)=[healthz proxy])\n"
                    .into()
            ))
        );
        // Denials are cached for 30 s, allowals for 5 min.
        let calls = r.access_calls.load(Ordering::SeqCst);
        let _ = a.authorize(&reader, &exec).await;
        assert_eq!(r.access_calls.load(Ordering::SeqCst), calls);
        tokio::time::advance(Duration::from_secs(31)).await;
        let _ = a.authorize(&reader, &exec).await;
        assert_eq!(r.access_calls.load(Ordering::SeqCst), calls + 1);
        assert_eq!(a.authorize(&reader, &pods).await, Ok(()));
        assert_eq!(r.access_calls.load(Ordering::SeqCst), calls + 1);
    }

    #[tokio::test]
    async fn always_allow_asks_nobody() {
        let a = Auth::new(
            AuthnConfig {
                anonymous: true,
                webhook: None,
            },
            AuthzConfig::AlwaysAllow,
        );
        let exec = request_attributes("POST", "/exec/ns/p/c", "n1");
        assert_eq!(a.authorize(&User::anonymous(), &exec).await, Ok(()));
    }

    #[test]
    fn certificate_user_is_cn_and_groups_are_os() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "kubeadm:cluster-admins");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let u = user_of_certificate(cert.der()).unwrap();
        assert_eq!(u.name, "kube-apiserver-kubelet-client");
        assert_eq!(u.groups, vec!["kubeadm:cluster-admins".to_string()]);
        assert!(user_of_certificate(b"not a certificate").is_none());
    }
}
