//! The real Redis on 127.0.0.1:6379 for tests, and a proxy in front of it that a test can cut
//! (Redis "dies": every connection drops) and restore.

use countersign::config::{Config, Secret};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::common::{TestDb, test_config};

pub const REDIS: &str = "127.0.0.1:6379";

/// The test configuration with its shared state in the Redis at `url`, its keys under `prefix`.
pub fn redis_config(db: &TestDb, url: &str, prefix: &str) -> Config {
    let mut config = test_config(db);
    config.redis_url = Some(Secret::new(url.to_owned()));
    config.redis_key_prefix = prefix.to_owned();
    config
}

/// Whether the tests may run: Redis answering, or CI (where its absence is a failure).
pub async fn redis_available() -> bool {
    let up = TcpStream::connect(REDIS).await.is_ok();
    assert!(
        up || std::env::var("CI").as_deref() != Ok("true"),
        "Redis is not reachable on {REDIS} (CI=true: failing, not skipping)"
    );
    up
}

/// A TCP proxy to Redis that the test can cut and restore, on a fixed port.
pub struct Proxy {
    port: u16,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut proxy = Proxy {
            port,
            running: None,
        };
        proxy.serve(listener);
        proxy
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        self.running = Some(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    break;
                };
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(REDIS).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Redis "dies": the listener and every open connection are dropped.
    pub fn cut(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }

    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}
