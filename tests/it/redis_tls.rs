//! `rediss://`: countersign talks to Redis over TLS, checking the server's certificate against
//! the system's authorities or, with `redis_ca_file`, a private CA only. The Redis here is the
//! test one behind a TLS-terminating proxy holding a certificate for `localhost` that the test
//! CA (tests/fixtures/redis-tls) signed.

use std::sync::Arc;

use countersign::cluster::RedisLink;
use countersign::config::RedisCa;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::common::{TestApp, TestDb, eventually};
use crate::redis_support::{REDIS, redis_available, redis_config};

const CA: &[u8] = include_bytes!("../fixtures/redis-tls/ca.pem");
const CERTIFICATE: &[u8] = include_bytes!("../fixtures/redis-tls/server.pem");
const KEY: &[u8] = include_bytes!("../fixtures/redis-tls/server.key");

/// Accepts TLS on a random port and relays the plaintext to the test Redis; answers its URL.
async fn tls_redis() -> String {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let certificates = CertificateDer::pem_slice_iter(CERTIFICATE)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(KEY).unwrap();
    let tls = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut client) = acceptor.accept(client).await else {
                    return;
                };
                if let Ok(mut redis) = TcpStream::connect(REDIS).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut redis).await;
                }
            });
        }
    });
    format!("rediss://localhost:{port}/")
}

fn prefix() -> String {
    format!("cs_test_tls_{}:", ulid::Ulid::new())
}

#[tokio::test]
async fn a_tls_redis_is_trusted_through_the_configured_ca_only() {
    if !redis_available().await {
        return;
    }
    let url = tls_redis().await;
    let ping = redis::Cmd::new().arg("PING").to_owned();

    let trusted = RedisLink::with_ca(&url, &prefix(), CA).unwrap();
    let answer: String = trusted.query(ping.clone()).await.unwrap();
    assert_eq!(answer, "PONG");
    assert!(!trusted.is_degraded());

    // The system's authorities do not know the test CA: the certificate is refused, and
    // countersign degrades to its local fallbacks instead of talking to an unchecked server.
    let untrusting = RedisLink::new(&url, &prefix()).unwrap();
    let refused = untrusting.query::<String>(ping).await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(untrusting.is_degraded());
}

#[tokio::test]
async fn the_app_shares_state_over_tls_with_redis_ca_file() {
    if !redis_available().await {
        return;
    }
    let db = TestDb::sqlite();
    let prefix = prefix();
    let mut config = redis_config(&db, &tls_redis().await, &prefix);
    config.redis_ca = Some(RedisCa {
        path: "tests/fixtures/redis-tls/ca.pem".into(),
        pem: CA.to_vec(),
    });
    let app = TestApp::start_with(config).await;
    // Readiness reports Redis once a call (and the wake-up subscription) got through TLS.
    eventually(std::time::Duration::from_secs(10), "redis: ok", || {
        let app = &app;
        async move { app.readyz().await.1.contains("redis: ok") }
    })
    .await;
    let degraded = format!("countersign_redis_degraded{{prefix=\"{prefix}\"}}");
    assert_eq!(app.metric(&degraded).await, Some(0.0));
    app.stop().await.unwrap();
}
