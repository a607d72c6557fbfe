//! Fuzz targets of the agent's inputs from outside:
//!
//! - the URL source's body handling (`--manifest-url`: a Pod or a PodList, YAML or JSON), seeded
//!   with `fuzz/seeds/url-body` and the manifest test data: no panic; a rejection has a message;
//!   accepted pods have distinct full names.
//! - the local API's request parsing (method, path, query through the axum router), seeded
//!   with `fuzz/seeds/local-api`: no panic and never a server error (503 is `/readyz`'s answer).

#[path = "../../../fuzz/mutate.rs"]
mod mutate;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use staticlet_agent::cluster::ClusterView;
use staticlet_agent::config::http::HttpSource;
use staticlet_agent::pod_workers::PodsView;
use staticlet_agent::server::{router, ApiState, Readiness};
use staticlet_runtime::fake::FakeRuntime;
use staticlet_runtime::Clock;
use tokio::sync::watch;
use tower::ServiceExt as _;

#[test]
fn url_source_body() {
    let seeds = mutate::seeds(&["fuzz/seeds/url-body", "crates/manifest/testdata/valid"]);
    let runs = mutate::Runs::new("url_source_body");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = HttpSource::new(
        "http://127.0.0.1:1/pods",
        Vec::new(),
        "node-1",
        Duration::from_secs(20),
        None,
        Clock::new(),
    );
    // Each input is independent: nothing is left half-updated by a panic.
    let source = std::panic::AssertUnwindSafe(source);
    bolero::check!()
        .with_iterations(mutate::iterations(20_000))
        .with_max_len(mutate::MAX_RECIPE)
        .for_each(|recipe: &[u8]| {
            let source = &source; // the wrapper, not its field
            runs.hit();
            let body = mutate::mutate(&seeds, recipe);
            match source.parse(&body) {
                Ok(pods) => {
                    runs.accept();
                    let names: HashSet<String> = pods.iter().map(|p| p.full_name()).collect();
                    assert_eq!(names.len(), pods.len(), "duplicate pods accepted");
                }
                Err(e) => assert!(!e.is_empty()),
            }
        });
}

#[test]
fn local_api_requests() {
    let seeds = mutate::seeds(&["fuzz/seeds/local-api"]);
    let runs = mutate::Runs::new("local_api_requests");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_pods_tx, pods) = watch::channel(Arc::new(PodsView::new()));
    let (_m_tx, manifests) = watch::channel(Arc::new(Vec::new()));
    let (_r_tx, readiness) = watch::channel(Readiness::default());
    let (_c_tx, cluster) = watch::channel(Arc::new(ClusterView::default()));
    let state = ApiState {
        pods,
        manifests,
        readiness,
        cluster,
        runtime: Arc::new(FakeRuntime::new(Clock::new())),
        counters: Default::default(),
    };
    let app = std::panic::AssertUnwindSafe(router(state));
    let rt = std::panic::AssertUnwindSafe(rt);
    bolero::check!()
        .with_iterations(mutate::iterations(20_000))
        .with_max_len(mutate::MAX_RECIPE)
        .for_each(|recipe: &[u8]| {
            let (app, rt) = (&app, &rt); // the wrappers, not their fields
            runs.hit();
            let line = mutate::mutate(&seeds, recipe);
            let (method, target) = match line.iter().position(|b| *b == b' ') {
                Some(i) => (&line[..i], &line[i + 1..]),
                None => (&b"GET"[..], &line[..]),
            };
            // What hyper itself refuses (a malformed method or URI) never reaches the router.
            let Ok(req) = axum::http::Request::builder()
                .method(method)
                .uri(target)
                .body(axum::body::Body::empty())
            else {
                return;
            };
            runs.accept();
            let res = rt.block_on(app.0.clone().oneshot(req)).unwrap();
            // 503 is /readyz saying the agent is not ready: an answer, not a failure.
            assert!(
                !res.status().is_server_error() || res.status() == 503,
                "{} for {:?}",
                res.status(),
                String::from_utf8_lossy(&line)
            );
        });
}
