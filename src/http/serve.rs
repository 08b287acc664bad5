//! The accept loop, in place of `axum::serve`, which exposes none of hyper's limits: without
//! them a thousand clients that connect and send nothing (or a header byte at a time) hold a
//! thousand sockets and tasks for ever, and a handler stuck on a dependency holds its client as
//! long. Here every connection takes a slot of a semaphore (`max_connections`), must send its
//! first request's headers within `header_read_timeout` (later requests on a kept-alive
//! connection too: hyper's own timer), and every request is answered within
//! [`REQUEST_TIMEOUT`].
//!
//! Shutdown is what axum's was: stop accepting, let each connection finish the request it is
//! serving (idle ones close at once), and return once every connection has ended.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt;

use super::problem::ApiError;

/// The longest any request may take to be answered. A long-poll waits up to
/// [`super::proposals::MAX_WAIT`] by design, so this leaves it room to answer after its wait.
pub const REQUEST_TIMEOUT: Duration =
    Duration::from_secs(super::proposals::MAX_WAIT.as_secs() + 30);

// A long-poll must never be cut off by the general limit.
const _: () = assert!(REQUEST_TIMEOUT.as_secs() > super::proposals::MAX_WAIT.as_secs());

/// What bounds the server's clients (`max_connections`, `header_read_timeout`).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl From<&crate::config::Config> for ServeLimits {
    fn from(config: &crate::config::Config) -> Self {
        Self {
            max_connections: config.max_connections,
            header_read_timeout: config.header_read_timeout,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then drains (see
/// the module's documentation).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = Builder::new(TokioExecutor::new());
    // Without a timer hyper ignores the header timeout.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // As axum::serve did: WebSockets over HTTP/2 need the CONNECT protocol.
    builder.http2().enable_connect_protocol();
    let builder = Arc::new(builder);
    let (closing, closing_seen) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: at the limit, new clients wait in the kernel's listen queue (and are
        // served when one frees) instead of costing a task each.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            builder.clone(),
            limits.header_read_timeout,
            slot,
            closing_seen.clone(),
        ));
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds a slot until it ends: all slots back means all connections done.
    let all = u32::try_from(limits.max_connections).expect("max_connections is validated");
    let _ = slots.acquire_many(all).await;
}

/// One client connection, holding its slot until it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    builder: Arc<Builder<TokioExecutor>>,
    header_read_timeout: Duration,
    _slot: OwnedSemaphorePermit,
    mut closing: watch::Receiver<bool>,
) {
    // Responses go out at once rather than waiting on Nagle for the client's delayed ACK.
    let _ = stream.set_nodelay(true);
    let requested = Arc::new(AtomicBool::new(false));
    let service = {
        let requested = requested.clone();
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            requested.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move { router.oneshot(request.map(Body::new)).await }
        })
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    // hyper times the headers only once it knows the protocol, which it learns from the first
    // bytes: a client sending nothing (or HTTP/2's preface a byte at a time) would never be
    // timed. So the first request must have started within the timeout, whatever the protocol.
    let first_request = tokio::time::sleep(header_read_timeout);
    let mut first_request = std::pin::pin!(first_request);
    let (mut timed, mut draining) = (false, false);
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = &mut first_request, if !timed => {
                timed = true;
                if !requested.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request headers within header_read_timeout: closing");
                    return;
                }
            }
            _ = closing.wait_for(|closing| *closing), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A failed accept: a client that gave up in the queue is nothing; anything else (out of file
/// descriptors, say) would fail again at once, so it is logged and retried a second later.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Middleware: a request not answered within [`REQUEST_TIMEOUT`] gets a 503 and its handler
/// is dropped. Handlers already expect that (hyper drops them when a client disconnects), and a
/// write the engine has taken still commits; the agent retries with its Idempotency-Key.
pub(super) async fn time_limit(request: Request, next: Next) -> Response {
    answer_within(REQUEST_TIMEOUT, request, next).await
}

async fn answer_within(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?limit, "request not answered in time: 503");
            ApiError::RequestTimeout.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    fn slow_router(limit: Duration) -> Router {
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "late"
                }),
            )
            .route("/quick", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(
                move |request: Request, next: Next| answer_within(limit, request, next),
            ))
    }

    #[tokio::test]
    async fn a_handler_past_the_limit_is_answered_503_problem() {
        // The handler sleeps an hour: the short limit ends it whatever the machine's speed.
        let router = slow_router(Duration::from_millis(50));
        let request = Request::get("/slow").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }

    #[tokio::test]
    async fn a_quick_handler_is_untouched() {
        let router = slow_router(Duration::from_secs(90));
        let request = Request::get("/quick").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
    }
}
