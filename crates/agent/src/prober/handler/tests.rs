//! Handler tests: exec against the fake runtime (paused time), httpGet / tcpSocket / grpc
//! against local servers on 127.0.0.1 (port 0, real time, short timeouts).

use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, GRPCAction, HTTPGetAction, SleepAction, TCPSocketAction,
};
use staticlet_runtime::fake::{container_labels, ExecReply, FakeRuntime};
use staticlet_runtime::{
    Clock, ContainerConfig, ContainerRuntime, ImageSpec, RuntimeError, SandboxConfig,
};

use super::*;

async fn running_container(rt: &FakeRuntime, uid: &str, name: &str) -> ContainerId {
    let sb_cfg = SandboxConfig {
        uid: uid.into(),
        labels: staticlet_runtime::LabelSelector::pod(uid).0,
        ..Default::default()
    };
    let sb = rt.run_pod_sandbox(&sb_cfg).await.unwrap();
    let image = ImageSpec {
        image: "img:1".into(),
    };
    rt.pull_image(&image, None).await.unwrap();
    let cfg = ContainerConfig {
        name: name.into(),
        image,
        labels: container_labels(uid, name, 0),
        ..Default::default()
    };
    let id = rt.create_container(&sb, &cfg, &sb_cfg).await.unwrap();
    rt.start_container(&id).await.unwrap();
    id
}

fn exec_handler() -> ProbeHandler {
    ProbeHandler::Exec {
        command: vec!["cat".into(), "/tmp/ready".into()],
    }
}

fn target(rt: &FakeRuntime, id: &ContainerId, ip: &str) -> Target {
    Target {
        runtime: Arc::new(rt.clone()),
        container_id: id.clone(),
        pod_ip: ip.into(),
    }
}

fn container_with_port(name: &str, port: i32) -> Container {
    Container {
        name: "c".into(),
        ports: Some(vec![ContainerPort {
            name: Some(name.into()),
            container_port: port,
            ..Default::default()
        }]),
        ..Default::default()
    }
}

#[test]
fn from_probe_resolves_ports_and_defaults() {
    let c = container_with_port("http", 8080);
    let p = Probe {
        http_get: Some(HTTPGetAction {
            port: IntOrString::String("http".into()),
            path: Some("/healthz".into()),
            scheme: Some("HTTPS".into()),
            http_headers: Some(vec![HTTPHeader {
                name: "Host".into(),
                value: "example.test".into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        ProbeHandler::from_probe(&p, &c),
        Ok(ProbeHandler::HttpGet {
            scheme: Scheme::Https,
            host: None,
            port: 8080,
            path: "/healthz".into(),
            headers: vec![("Host".into(), "example.test".into())],
        })
    );
    let tcp = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("nope".into()),
            host: None,
        }),
        ..Default::default()
    };
    let err = ProbeHandler::from_probe(&tcp, &c).unwrap_err();
    assert!(err.contains("couldn't find port: nope"), "{err}");
    let grpc = Probe {
        grpc: Some(GRPCAction {
            port: 70000,
            service: None,
        }),
        ..Default::default()
    };
    assert_eq!(
        ProbeHandler::from_probe(&grpc, &c),
        Err("invalid port number: 70000".into())
    );
    let none = Probe::default();
    assert!(ProbeHandler::from_probe(&none, &c).is_err());
    let two = Probe {
        exec: Some(ExecAction {
            command: Some(vec!["true".into()]),
        }),
        grpc: Some(GRPCAction {
            port: 1,
            service: None,
        }),
        ..Default::default()
    };
    assert!(ProbeHandler::from_probe(&two, &c).is_err());
}

#[test]
fn from_lifecycle_supports_exec_http_sleep_only() {
    let c = container_with_port("http", 80);
    let sleep = LifecycleHandler {
        sleep: Some(SleepAction { seconds: 5 }),
        ..Default::default()
    };
    assert_eq!(
        ProbeHandler::from_lifecycle(&sleep, &c),
        Ok(ProbeHandler::Sleep {
            duration: Duration::from_secs(5)
        })
    );
    let tcp = LifecycleHandler {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(80),
            host: None,
        }),
        ..Default::default()
    };
    assert!(ProbeHandler::from_lifecycle(&tcp, &c).is_err());
}

#[tokio::test(start_paused = true)]
async fn exec_outcomes() {
    let rt = FakeRuntime::new(Clock::new());
    let id = running_container(&rt, "u", "app").await;
    let t = target(&rt, &id, "10.0.0.1");
    let h = exec_handler();
    let second = Duration::from_secs(1);
    // The unscripted fake exits 0.
    assert_eq!(run(&h, &t, second).await, ProbeOutcome::Success);

    let big = "x".repeat(20_000);
    rt.exec_script(
        "app",
        [
            ExecReply::Exit {
                code: 1,
                stdout: "boom\n".into(),
            },
            ExecReply::code(2),
            ExecReply::Exit {
                code: 1,
                stdout: big,
            },
            ExecReply::Error(RuntimeError::Unavailable("down".into())),
            ExecReply::code(0),
        ],
        ExecReply::Hang,
    );
    assert_eq!(
        run(&h, &t, second).await,
        ProbeOutcome::Failure("boom\n".into())
    );
    assert_eq!(
        run(&h, &t, second).await,
        ProbeOutcome::Failure("command \"cat /tmp/ready\" exited with code 2".into())
    );
    match run(&h, &t, second).await {
        ProbeOutcome::Failure(m) => assert_eq!(m.len(), MAX_OUTPUT),
        other => panic!("{other:?}"),
    }
    assert!(matches!(run(&h, &t, second).await, ProbeOutcome::Error(_)));
    assert_eq!(run(&h, &t, second).await, ProbeOutcome::Success);
    // A hanging command fails with kubelet's timeout message once the timeout has passed.
    let start = tokio::time::Instant::now();
    assert_eq!(
        run(&h, &t, Duration::from_secs(3)).await,
        ProbeOutcome::Failure("command \"cat /tmp/ready\" timed out".into())
    );
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn exec_in_a_runtime_that_ignores_the_timeout_is_abandoned() {
    let rt = FakeRuntime::new(Clock::new());
    let id = running_container(&rt, "u", "app").await;
    // A runtime whose exec does not return in time, whatever the timeout it was given.
    rt.delay(staticlet_runtime::fake::Op::Exec, Duration::from_secs(3600));
    let t = Target {
        runtime: Arc::new(rt),
        container_id: id,
        pod_ip: String::new(),
    };
    let start = tokio::time::Instant::now();
    assert_eq!(
        run(&exec_handler(), &t, Duration::from_secs(2)).await,
        ProbeOutcome::Failure("command \"cat /tmp/ready\" timed out".into())
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2) + EXEC_SLACK);
}

#[tokio::test(start_paused = true)]
async fn sleep_hook() {
    let rt = FakeRuntime::new(Clock::new());
    let t = target(&rt, &ContainerId("x".into()), "");
    let h = ProbeHandler::Sleep {
        duration: Duration::from_secs(5),
    };
    let start = tokio::time::Instant::now();
    assert_eq!(
        run(&h, &t, Duration::from_secs(30)).await,
        ProbeOutcome::Success
    );
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(matches!(
        run(&h, &t, Duration::from_secs(2)).await,
        ProbeOutcome::Failure(_)
    ));
}

#[derive(Default)]
struct Seen {
    headers: Vec<HeaderMap>,
}

/// An HTTP server with the routes the tests use; returns its port.
async fn http_server(seen: Arc<Mutex<Seen>>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let redirect = |to: String| {
        move || {
            let to = to.clone();
            async move { (StatusCode::FOUND, [("location", to)]).into_response() }
        }
    };
    let app = axum::Router::new()
        .route(
            "/ok",
            axum::routing::get(move |h: HeaderMap| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().headers.push(h);
                    "ok"
                }
            }),
        )
        .route(
            "/fail",
            axum::routing::get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "nope") }),
        )
        .route("/big", axum::routing::get(|| async { "y".repeat(1 << 20) }))
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/to-ok", axum::routing::get(redirect("/ok".into())))
        .route("/loop", axum::routing::get(redirect("/loop".into())))
        .route(
            "/away",
            axum::routing::get(redirect(format!("http://other.invalid:{port}/fail"))),
        );
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    port
}

fn get(port: u16, path: &str, headers: Vec<(String, String)>) -> ProbeHandler {
    ProbeHandler::HttpGet {
        scheme: Scheme::Http,
        host: None,
        port,
        path: path.into(),
        headers,
    }
}

#[tokio::test]
async fn http_get_outcomes() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = http_server(seen.clone()).await;
    let rt = FakeRuntime::new(Clock::new());
    let t = target(&rt, &ContainerId("x".into()), "127.0.0.1");
    let second = Duration::from_secs(1);

    assert_eq!(
        run(&get(port, "/ok", vec![]), &t, second).await,
        ProbeOutcome::Success
    );
    {
        let s = seen.lock().unwrap();
        let h = &s.headers[0];
        assert_eq!(h["user-agent"], USER_AGENT);
        assert_eq!(h["accept"], "*/*");
        assert_eq!(h["host"], format!("127.0.0.1:{port}"));
    }
    // Headers from the spec: Host and User-Agent overrides, extra headers.
    let custom = vec![
        ("Host".into(), "svc.example".into()),
        ("User-Agent".into(), "mine".into()),
        ("X-Probe".into(), "1".into()),
    ];
    assert_eq!(
        run(&get(port, "ok", custom), &t, second).await,
        ProbeOutcome::Success
    );
    {
        let s = seen.lock().unwrap();
        let h = &s.headers[1];
        assert_eq!(h["host"], "svc.example");
        assert_eq!(h["user-agent"], "mine");
        assert_eq!(h["x-probe"], "1");
    }
    assert_eq!(
        run(&get(port, "/fail", vec![]), &t, second).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 503".into())
    );
    assert_eq!(
        run(&get(port, "/missing", vec![]), &t, second).await,
        ProbeOutcome::Failure("HTTP probe failed with statuscode: 404".into())
    );
    // A large body is not a problem (read at most 10 KiB).
    assert_eq!(
        run(&get(port, "/big", vec![]), &t, second).await,
        ProbeOutcome::Success
    );
    // Redirects: followed on the same host; to another host, the redirect itself counts
    // (success with a warning); more than 10 fail.
    assert_eq!(
        run(&get(port, "/to-ok", vec![]), &t, second).await,
        ProbeOutcome::Success
    );
    assert_eq!(
        run(&get(port, "/away", vec![]), &t, second).await,
        ProbeOutcome::Success
    );
    match run(&get(port, "/loop", vec![]), &t, second).await {
        ProbeOutcome::Failure(m) => assert!(m.contains("stopped after 10 redirects"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Timeout.
    match run(&get(port, "/slow", vec![]), &t, Duration::from_millis(200)).await {
        ProbeOutcome::Failure(m) => assert!(m.starts_with("Get \"http://127.0.0.1:"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The host field wins over the pod IP.
    let elsewhere = target(&rt, &ContainerId("x".into()), "192.0.2.1");
    let h = ProbeHandler::HttpGet {
        scheme: Scheme::Http,
        host: Some("127.0.0.1".into()),
        port,
        path: "/ok".into(),
        headers: vec![],
    };
    assert_eq!(run(&h, &elsewhere, second).await, ProbeOutcome::Success);
}

#[tokio::test]
async fn http_get_connection_refused_fails() {
    // A port that was just free.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let rt = FakeRuntime::new(Clock::new());
    let t = target(&rt, &ContainerId("x".into()), "127.0.0.1");
    match run(&get(port, "/", vec![]), &t, Duration::from_secs(1)).await {
        ProbeOutcome::Failure(m) => assert!(m.starts_with("Get \"http://127.0.0.1:"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn https_get_skips_certificate_verification() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = CertificateDer::from_pem_slice(include_bytes!("test-cert.pem")).unwrap();
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("test-key.pem")).unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (sock, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let rt = FakeRuntime::new(Clock::new());
    let t = target(&rt, &ContainerId("x".into()), "127.0.0.1");
    let h = ProbeHandler::HttpGet {
        scheme: Scheme::Https,
        host: None,
        port,
        path: "/".into(),
        headers: vec![],
    };
    assert_eq!(
        run(&h, &t, Duration::from_secs(2)).await,
        ProbeOutcome::Success
    );
}

#[tokio::test]
async fn tcp_socket_outcomes() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let rt = FakeRuntime::new(Clock::new());
    let t = target(&rt, &ContainerId("x".into()), "127.0.0.1");
    let h = ProbeHandler::TcpSocket { host: None, port };
    assert_eq!(
        run(&h, &t, Duration::from_secs(1)).await,
        ProbeOutcome::Success
    );
    drop(l);
    match run(&h, &t, Duration::from_secs(1)).await {
        ProbeOutcome::Failure(m) => {
            assert!(
                m.starts_with(&format!("dial tcp 127.0.0.1:{port}: connect:")),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// A grpc.health.v1 server; `""` serves, `"down"` does not.
async fn grpc_server() -> (u16, tonic_health::server::HealthReporter) {
    let (reporter, svc) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("down", tonic_health::ServingStatus::NotServing)
        .await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await
            .unwrap()
    });
    (port, reporter)
}

#[tokio::test]
async fn grpc_outcomes() {
    let (port, reporter) = grpc_server().await;
    let rt = FakeRuntime::new(Clock::new());
    let t = target(&rt, &ContainerId("x".into()), "127.0.0.1");
    let second = Duration::from_secs(1);
    let h = |service: &str| ProbeHandler::Grpc {
        port,
        service: service.into(),
    };
    assert_eq!(run(&h(""), &t, second).await, ProbeOutcome::Success);
    assert_eq!(
        run(&h("down"), &t, second).await,
        ProbeOutcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    match run(&h("unknown"), &t, second).await {
        ProbeOutcome::Failure(m) => assert!(
            m.starts_with("error: health rpc probe failed: rpc error: code = NotFound"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    reporter
        .set_service_status("down", tonic_health::ServingStatus::Serving)
        .await;
    assert_eq!(run(&h("down"), &t, second).await, ProbeOutcome::Success);

    // Nothing listening.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = l.local_addr().unwrap().port();
    drop(l);
    let h = ProbeHandler::Grpc {
        port: closed,
        service: String::new(),
    };
    match run(&h, &t, second).await {
        ProbeOutcome::Failure(m) => assert!(
            m.starts_with(&format!(
                "error: failed to connect service at \"127.0.0.1:{closed}\""
            )),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn grpc_against_a_non_grpc_server_fails() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = http_server(seen).await;
    let rt = FakeRuntime::new(Clock::new());
    let t = target(&rt, &ContainerId("x".into()), "127.0.0.1");
    let h = ProbeHandler::Grpc {
        port,
        service: String::new(),
    };
    assert!(matches!(
        run(&h, &t, Duration::from_secs(1)).await,
        ProbeOutcome::Failure(_)
    ));
}
