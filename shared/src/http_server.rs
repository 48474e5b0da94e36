//! The HTTP/1.1 server every listener of every service runs (order-svc's API and each ops
//! endpoint): hyper driven directly, because `axum::serve` runs hyper without a timer and
//! offers none of the limits below. A client that opens a connection and then sends nothing,
//! trickles its headers, withholds its body or never sends another request on a kept-alive
//! connection would otherwise hold that connection, and its memory, for as long as it likes.
//!
//! Each connection is in one of three phases, and two of them have a deadline:
//!
//! - **reading a request head**: from accept, or from the first byte of the next request on a
//!   kept-alive connection, the head (request line and headers) must be complete within
//!   [`ServerLimits::header_read_timeout`];
//! - **serving a request**: from a complete head until its response is ready; the body must
//!   arrive within [`ServerLimits::body_read_timeout`] of the head ([`BodyReadTimeout`] is the
//!   error a handler sees), and the handler's own time is the service's business (order-svc's
//!   request timeout);
//! - **idle**: once a response is ready, the connection may wait
//!   [`ServerLimits::keep_alive_timeout`] for the first byte of its next request. Writing the
//!   response counts as idle time, so a client that does not read its response is cut off too.
//!
//! A connection past its deadline is closed. At most [`ServerLimits::max_connections`] are open
//! per listener: one more is closed at once (a fast refusal rather than a queue), and counted.
//! A request head over [`ServerLimits::max_header_bytes`] is answered 431 by hyper. On shutdown,
//! idle connections close at once and in-flight requests get [`SHUTDOWN_GRACE`] to finish.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::config::{env_millis, env_or};

/// How long in-flight requests may take to finish once shutdown began; connections still open
/// then are closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The limits of one listener. Every service reads them from the environment
/// ([`ServerLimits::from_env`]); the defaults are below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// `HTTP_HEADER_READ_TIMEOUT_MS` (10 s): a request head must be complete this long after the
    /// connection was accepted, or after the first byte of a later request.
    pub header_read_timeout: Duration,
    /// `HTTP_BODY_READ_TIMEOUT_MS` (10 s): a request body must be complete this long after its
    /// head.
    pub body_read_timeout: Duration,
    /// `HTTP_KEEP_ALIVE_TIMEOUT_MS` (30 s): how long a connection may wait, idle, for its next
    /// request. Behind a load balancer, make it longer than the balancer's own idle timeout.
    pub keep_alive_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS` (1024): open connections per listener.
    pub max_connections: usize,
    /// `HTTP_MAX_HEADER_BYTES` (16 KiB): the request line and headers of one request.
    pub max_header_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_header_bytes: 16 * 1024,
        }
    }
}

impl ServerLimits {
    /// The smallest header limit hyper accepts.
    pub const MIN_HEADER_BYTES: usize = 8 * 1024;

    /// The defaults, overridden by `HTTP_HEADER_READ_TIMEOUT_MS`, `HTTP_BODY_READ_TIMEOUT_MS`,
    /// `HTTP_KEEP_ALIVE_TIMEOUT_MS`, `HTTP_MAX_CONNECTIONS` and `HTTP_MAX_HEADER_BYTES`.
    pub fn from_env() -> anyhow::Result<Self> {
        let d = Self::default();
        let limits = Self {
            header_read_timeout: env_millis("HTTP_HEADER_READ_TIMEOUT_MS", d.header_read_timeout)?,
            body_read_timeout: env_millis("HTTP_BODY_READ_TIMEOUT_MS", d.body_read_timeout)?,
            keep_alive_timeout: env_millis("HTTP_KEEP_ALIVE_TIMEOUT_MS", d.keep_alive_timeout)?,
            max_connections: env_or("HTTP_MAX_CONNECTIONS", d.max_connections)?,
            max_header_bytes: env_or("HTTP_MAX_HEADER_BYTES", d.max_header_bytes)?,
        };
        limits.validate()?;
        Ok(limits)
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (name, value) in [
            ("HTTP_HEADER_READ_TIMEOUT_MS", self.header_read_timeout),
            ("HTTP_BODY_READ_TIMEOUT_MS", self.body_read_timeout),
            ("HTTP_KEEP_ALIVE_TIMEOUT_MS", self.keep_alive_timeout),
        ] {
            anyhow::ensure!(!value.is_zero(), "{name} must be positive");
        }
        anyhow::ensure!(self.max_connections >= 1, "HTTP_MAX_CONNECTIONS must be at least 1");
        anyhow::ensure!(
            self.max_header_bytes >= Self::MIN_HEADER_BYTES,
            "HTTP_MAX_HEADER_BYTES must be at least {}",
            Self::MIN_HEADER_BYTES
        );
        Ok(())
    }
}

/// One listener: whose it is and what it serves (for logs and metrics), and its limits.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub service: &'static str,
    /// `api`, `ops` or `starting`: the `listener` field of the "listening" log line.
    pub role: &'static str,
    pub limits: ServerLimits,
}

/// Serve `router` on `listener` until `shutdown`, then drain (see the module docs). Every
/// request carries the client's address as [`ConnectInfo<SocketAddr>`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    endpoint: Endpoint,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    endpoint.limits.validate()?;
    // Tests and supervisors that start a service on port 0 read the address from this line.
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(addr = %addr, listener = endpoint.role, service = endpoint.service, "listening");
    }
    let endpoint = Arc::new(endpoint);
    let slots = Arc::new(Semaphore::new(endpoint.limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // keep serving the connections already open, and try again shortly.
                    tracing::warn!(error = %err, listener = endpoint.role, "accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::metrics::http_connection_closed(endpoint.service, "over_capacity");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, endpoint, shutdown) = (router.clone(), endpoint.clone(), shutdown.clone());
        connections.spawn(async move {
            serve_connection(stream, remote, router, &endpoint, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    let drained =
        tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            listener = endpoint.role,
            open = connections.len(),
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the shutdown grace period, closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// What a connection is doing, for its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a complete request head, since this instant.
    Head(Instant),
    /// Serving this many requests (HTTP/1.1 serves one at a time).
    Busy(usize),
    /// Its last response is ready, since this instant.
    Idle(Instant),
}

impl Phase {
    fn deadline(self, limits: &ServerLimits) -> Option<(Instant, &'static str)> {
        match self {
            Phase::Head(since) => Some((since + limits.header_read_timeout, "header_timeout")),
            Phase::Busy(_) => None,
            Phase::Idle(since) => Some((since + limits.keep_alive_timeout, "keep_alive_timeout")),
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    endpoint: &Endpoint,
    shutdown: CancellationToken,
) {
    let limits = &endpoint.limits;
    let (phase, mut watch_phase) = watch::channel(Phase::Head(Instant::now()));
    let phase = Arc::new(phase);
    let io = TokioIo::new(Watched { stream, phase: phase.clone() });
    let body_timeout = limits.body_read_timeout;
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let busy = BusyGuard::enter(phase.clone());
        let mut request = request.map(|body| axum::body::Body::new(DeadlineBody::new(body, body_timeout)));
        request.extensions_mut().insert(ConnectInfo(remote));
        let router = router.clone();
        async move {
            let response = router.oneshot(request).await;
            drop(busy);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A backstop only: hyper starts this timer whenever it waits for a head, including
        // while idle, so it cannot tell the two deadlines apart; the phase deadlines come first.
        .header_read_timeout(limits.keep_alive_timeout + limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, client.address = %remote, "connection ended with an error");
                }
                return;
            }
            reason = expired(&mut watch_phase, limits) => {
                crate::metrics::http_connection_closed(endpoint.service, reason);
                tracing::debug!(reason, client.address = %remote, "closing a connection past its deadline");
                return;
            }
            () = shutdown.cancelled(), if !draining => {
                // Closes an idle connection at once, and a busy one after its response.
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// Resolves once the connection's current phase passes its deadline, with the reason.
async fn expired(phase: &mut watch::Receiver<Phase>, limits: &ServerLimits) -> &'static str {
    loop {
        let deadline = phase.borrow_and_update().deadline(limits);
        match deadline {
            None => {
                if phase.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Some((at, reason)) => tokio::select! {
                changed = phase.changed() => if changed.is_err() { std::future::pending::<()>().await },
                () = tokio::time::sleep_until(at) => return reason,
            },
        }
    }
}

/// Marks a connection busy while a request is served (also when its future is dropped).
struct BusyGuard(Arc<watch::Sender<Phase>>);

impl BusyGuard {
    fn enter(phase: Arc<watch::Sender<Phase>>) -> Self {
        phase.send_modify(|p| {
            *p = match *p {
                Phase::Busy(n) => Phase::Busy(n + 1),
                Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
            }
        });
        Self(phase)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.send_modify(|p| {
            *p = match *p {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            }
        });
    }
}

/// The connection's socket, noticing the first byte of a request that arrives while idle.
struct Watched {
    stream: TcpStream,
    phase: Arc<watch::Sender<Phase>>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before && matches!(*this.phase.borrow(), Phase::Idle(_)) {
            this.phase.send_if_modified(|p| match p {
                Phase::Idle(_) => {
                    *p = Phase::Head(Instant::now());
                    true
                }
                _ => false,
            });
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The error a handler reading a request body sees when the body did not arrive within
/// [`ServerLimits::body_read_timeout`] of the request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyReadTimeout(pub Duration);

impl BodyReadTimeout {
    /// Whether `error` or any error in its source chain is a body read timeout.
    pub fn in_chain(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(error) = next {
            if error.is::<BodyReadTimeout>() {
                return true;
            }
            next = error.source();
        }
        false
    }
}

/// A request body that fails with [`BodyReadTimeout`] once its deadline passes.
struct DeadlineBody {
    inner: Incoming,
    /// Armed at the request head; registered with the timer only if the body is ever polled.
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    timed_out: bool,
}

impl DeadlineBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        Self { inner, deadline: Box::pin(tokio::time::sleep(timeout)), timeout, timed_out: false }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.timed_out = true;
                Poll::Ready(Some(Err(Box::new(BodyReadTimeout(this.timeout)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_phase_but_serving_has_its_deadline() {
        let limits = ServerLimits::default();
        let now = Instant::now();
        assert_eq!(Phase::Head(now).deadline(&limits), Some((now + limits.header_read_timeout, "header_timeout")));
        assert_eq!(Phase::Idle(now).deadline(&limits), Some((now + limits.keep_alive_timeout, "keep_alive_timeout")));
        assert_eq!(Phase::Busy(1).deadline(&limits), None);
    }

    #[test]
    fn limits_refuse_zero_timeouts_and_tiny_header_caps() {
        assert!(ServerLimits::default().validate().is_ok());
        assert!(ServerLimits { body_read_timeout: Duration::ZERO, ..ServerLimits::default() }.validate().is_err());
        assert!(ServerLimits { max_connections: 0, ..ServerLimits::default() }.validate().is_err());
        assert!(ServerLimits { max_header_bytes: 1024, ..ServerLimits::default() }.validate().is_err());
    }

    #[test]
    fn a_body_timeout_is_found_anywhere_in_an_error_chain() {
        let wrapped = axum::Error::new(BodyReadTimeout(Duration::from_secs(1)));
        assert!(BodyReadTimeout::in_chain(&wrapped));
        assert!(!BodyReadTimeout::in_chain(&std::io::Error::other("reset")));
    }
}
