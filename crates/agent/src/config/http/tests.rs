//! URL source tests against a local HTTP server on 127.0.0.1 (port 0).

use std::sync::{Arc as StdArc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::*;

const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: img:1\n";
const LIST: &str = "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n  spec: {containers: [{name: c, image: i}]}\n- metadata: {name: b}\n  spec: {containers: [{name: c, image: i}]}\n";

#[derive(Default)]
struct Script {
    status: u16,
    body: String,
    etag: Option<String>,
    seen_headers: Vec<HeaderMap>,
}

async fn serve(script: StdArc<Mutex<Script>>) -> String {
    let app = axum::Router::new().route(
        "/pods",
        axum::routing::get(move |headers: HeaderMap| {
            let script = script.clone();
            async move {
                let mut s = script.lock().unwrap();
                s.seen_headers.push(headers.clone());
                if let (Some(etag), Some(inm)) = (&s.etag, headers.get("if-none-match")) {
                    if inm.to_str().unwrap() == etag {
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                }
                let mut resp =
                    (StatusCode::from_u16(s.status).unwrap(), s.body.clone()).into_response();
                if let Some(e) = &s.etag {
                    resp.headers_mut().insert("etag", e.parse().unwrap());
                }
                resp
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}/pods")
}

fn source(url: &str, dir: &std::path::Path) -> HttpSource {
    let _ = rustls::crypto::ring::default_provider().install_default();
    HttpSource::new(
        url,
        vec![("X-A".into(), "1".into()), ("X-A".into(), "2".into())],
        "node",
        Duration::from_secs(20),
        Some(LastGood::new(dir)),
        Clock::new(),
    )
}

#[tokio::test]
async fn url_semantics() {
    let script = StdArc::new(Mutex::new(Script {
        status: 200,
        body: POD.into(),
        ..Default::default()
    }));
    let url = serve(script.clone()).await;
    let d = tempfile::tempdir().unwrap();
    let mut src = source(&url, d.path());
    assert_eq!(src.poll().await, Outcome::Changed);
    assert_eq!(src.pods.len(), 1);
    assert_eq!(src.pods[0].name, "web-node");
    // Repeated headers are all sent, in order.
    let h = script.lock().unwrap().seen_headers[0].clone();
    let xa: Vec<_> = h
        .get_all("x-a")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(xa, vec!["1", "2"]);
    // Identical body: no-op.
    assert_eq!(src.poll().await, Outcome::Unchanged);
    // Non-200 keeps the pods and reports the error.
    script.lock().unwrap().status = 500;
    assert_eq!(src.poll().await, Outcome::Changed);
    assert_eq!(src.pods.len(), 1);
    assert!(src
        .record
        .error
        .as_deref()
        .unwrap()
        .ends_with("500 Internal Server Error"));
    // A PodList replaces them; an invalid item rejects the whole list.
    {
        let mut s = script.lock().unwrap();
        s.status = 200;
        s.body = LIST.into();
    }
    src.poll().await;
    assert_eq!(
        src.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec!["a-node", "b-node"]
    );
    script.lock().unwrap().body = LIST.replace("image: i}]}\n- ", "image: ''}]}\n- ");
    src.poll().await;
    assert_eq!(src.pods.len(), 2, "previous pods kept");
    assert!(src
        .record
        .error
        .as_deref()
        .unwrap()
        .starts_with("items[0]: spec.containers[0].image"));
    // The same bad body again: nothing changes, the error stays (no re-parse needed).
    let err = src.record.error.clone();
    assert_eq!(src.poll().await, Outcome::Unchanged);
    assert_eq!(src.record.error, err);
    assert_eq!(src.pods.len(), 2);
    // Zero-length body removes everything.
    script.lock().unwrap().body = String::new();
    src.poll().await;
    assert!(src.pods.is_empty());
}

#[tokio::test]
async fn etag_and_offline_boot_from_cache() {
    let script = StdArc::new(Mutex::new(Script {
        status: 200,
        body: POD.into(),
        etag: Some("\"v1\"".into()),
        ..Default::default()
    }));
    let url = serve(script.clone()).await;
    let d = tempfile::tempdir().unwrap();
    let mut src = source(&url, d.path());
    src.poll().await;
    assert_eq!(src.poll().await, Outcome::Unchanged);
    let second = script.lock().unwrap().seen_headers[1].clone();
    assert_eq!(second.get("if-none-match").unwrap(), "\"v1\"");
    let uid = src.pods[0].uid.clone();

    // A new agent whose URL is down: the cached body runs, marked stale.
    let mut offline = source("http://127.0.0.1:9/pods", d.path());
    offline.url = url.clone(); // same origin as cached
    offline.record.origin = url.clone();
    script.lock().unwrap().status = 503;
    script.lock().unwrap().etag = None;
    assert!(offline.load_cache());
    assert_eq!(offline.pods[0].uid, uid);
    assert!(offline.record.stale);
    offline.poll().await;
    assert_eq!(
        offline.pods.len(),
        1,
        "an unreachable URL keeps the cached pods"
    );
    assert!(offline.record.stale && offline.record.error.is_some());
}

#[test]
fn header_flag_format() {
    let v = parse_headers(&["a:hello,b:again,c:world".into(), "a:x".into()]).unwrap();
    assert_eq!(v.len(), 4);
    assert_eq!(v[3], ("a".into(), "x".into()));
    assert!(parse_headers(&["nocolon".into()]).is_err());
}
