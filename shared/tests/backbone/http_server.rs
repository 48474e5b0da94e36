//! The server every service runs cuts slow clients off at their deadlines while it goes on
//! serving everyone else: a connection that sends nothing, one that sends a single byte, one that
//! trickles headers, one that withholds its body and an idle keep-alive are each closed within
//! their timeout; connections over the cap are closed at once; an oversized head is a 431.
//! Raw TCP clients, so that the test controls every byte.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::routing::{get, post};
use shared::CancellationToken;
use shared::http_server::{BodyReadTimeout, Endpoint, ServerLimits, serve};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long past its deadline a connection may take to be closed (timer and scheduling slack
/// on a loaded 2-core machine).
const SLACK: Duration = Duration::from_millis(1500);

/// How long any wait in these tests may take before it counts as a failure.
const WAIT: Duration = Duration::from_secs(20);

fn limits() -> ServerLimits {
    ServerLimits {
        header_read_timeout: Duration::from_millis(1000),
        body_read_timeout: Duration::from_millis(1000),
        keep_alive_timeout: Duration::from_millis(1500),
        max_connections: 64,
        max_header_bytes: ServerLimits::MIN_HEADER_BYTES,
    }
}

struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(limits: ServerLimits) -> anyhow::Result<Self> {
        let router = Router::new().route("/ping", get(|| async { "pong" })).route(
            "/echo",
            post(|body: Result<Bytes, BytesRejection>| async move {
                match body {
                    Ok(bytes) => (StatusCode::OK, bytes),
                    Err(err) if BodyReadTimeout::in_chain(&err) => (StatusCode::REQUEST_TIMEOUT, Bytes::new()),
                    Err(_) => (StatusCode::BAD_REQUEST, Bytes::new()),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let endpoint = Endpoint { service: "test-svc", role: "api", limits };
        let task = tokio::spawn(serve(listener, router, endpoint, stop.clone()));
        Ok(Self { addr, stop, task })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await???;
        Ok(())
    }
}

/// Read until the server closes the connection; returns what was read and when it closed.
async fn until_closed(stream: &mut TcpStream) -> anyhow::Result<(Vec<u8>, Instant)> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the connection was still open after {WAIT:?}"))?;
    Ok((received, closed))
}

/// Read one response (head and a `Content-Length` body) from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&received[..end]).to_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()))
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    return Ok(String::from_utf8_lossy(&received).into_owned());
                }
            }
            let n = stream.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "closed before a whole response: {:?}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await?
}

/// Asserts the connection stayed open for its timeout, and not much longer.
fn assert_closed_at(what: &str, open_for: Duration, timeout: Duration) {
    println!("{what}: closed after {:.2} s (timeout {:.2} s)", open_for.as_secs_f64(), timeout.as_secs_f64());
    assert!(open_for + Duration::from_millis(50) >= timeout, "{what} was closed early, after {open_for:?}");
    assert!(open_for <= timeout + SLACK, "{what} stayed open {open_for:?}, timeout {timeout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_at_their_deadlines_while_others_are_served() -> anyhow::Result<()> {
    // Arrange
    let limits = limits();
    let server = Server::start(limits.clone()).await?;
    let addr = server.addr;

    // Act: five slow clients at once, and a well-behaved one asking all along.
    let silent = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await?;
        let opened = Instant::now();
        let (received, closed) = until_closed(&mut stream).await?;
        anyhow::Ok((received, closed - opened))
    });
    let one_byte = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await?;
        let opened = Instant::now();
        stream.write_all(b"G").await?;
        let (received, closed) = until_closed(&mut stream).await?;
        anyhow::Ok((received, closed - opened))
    });
    let trickle = tokio::spawn(async move {
        let stream = TcpStream::connect(addr).await?;
        let opened = Instant::now();
        let (mut read, mut write) = stream.into_split();
        let writer = tokio::spawn(async move {
            write.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n").await?;
            for i in 0.. {
                tokio::time::sleep(Duration::from_millis(200)).await;
                write.write_all(format!("X-Trickle-{i}: 1\r\n").as_bytes()).await?;
            }
            anyhow::Ok(())
        });
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => return Instant::now(),
                    Ok(_) => {}
                }
            }
        })
        .await?;
        writer.abort();
        anyhow::Ok((Vec::new(), closed - opened))
    });
    let withheld_body = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n").await?;
        let sent = Instant::now();
        let (received, closed) = until_closed(&mut stream).await?;
        anyhow::Ok((received, closed - sent))
    });
    let idle = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let response = read_response(&mut stream).await?;
        let answered = Instant::now();
        let (received, closed) = until_closed(&mut stream).await?;
        anyhow::ensure!(received.is_empty(), "nothing after the response");
        anyhow::Ok((response.into_bytes(), closed - answered))
    });
    let client = reqwest::Client::builder().timeout(WAIT).build()?;
    let mut served = 0;
    while [&silent, &one_byte, &trickle, &withheld_body, &idle].iter().any(|t| !t.is_finished()) {
        let pong = client.get(format!("http://{addr}/ping")).send().await?;
        assert_eq!(pong.status(), 200, "the server answers others while slow clients hold connections");
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert: each was closed at its deadline, the withheld body with a 408 first.
    let (received, open_for) = silent.await??;
    assert!(received.is_empty());
    assert_closed_at("a connection that sent nothing", open_for, limits.header_read_timeout);
    let (received, open_for) = one_byte.await??;
    assert!(received.is_empty(), "{:?}", String::from_utf8_lossy(&received));
    assert_closed_at("a connection that sent only G", open_for, limits.header_read_timeout);
    let (_, open_for) = trickle.await??;
    assert_closed_at("a connection trickling a header every 200 ms", open_for, limits.header_read_timeout);
    let (received, open_for) = withheld_body.await??;
    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert_closed_at("a request whose body was withheld", open_for, limits.body_read_timeout);
    let (response, open_for) = idle.await??;
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
    assert_closed_at("an idle keep-alive connection", open_for, limits.keep_alive_timeout);
    println!("meanwhile, {served} other requests were answered");
    assert!(served > 0);
    server.stop().await
}

#[tokio::test]
async fn a_body_that_arrives_in_time_is_read_whole() -> anyhow::Result<()> {
    let server = Server::start(limits()).await?;
    let mut stream = TcpStream::connect(server.addr).await?;

    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel").await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"lo").await?;
    let response = read_response(&mut stream).await?;

    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("hello"), "{response}");
    server.stop().await
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_a_freed_slot_is_reused() -> anyhow::Result<()> {
    // Arrange: two slots, both held by kept-alive connections that were served once.
    let limits = ServerLimits { max_connections: 2, keep_alive_timeout: Duration::from_secs(60), ..limits() };
    let server = Server::start(limits).await?;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.addr).await?;
        stream.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        read_response(&mut stream).await?;
        held.push(stream);
    }

    // Act: a third connection.
    let mut third = TcpStream::connect(server.addr).await?;
    let started = Instant::now();
    let _ = third.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (received, closed) = until_closed(&mut third).await?;

    // Assert: closed unanswered at once; once a slot is freed, a new connection is served.
    assert!(received.is_empty(), "{:?}", String::from_utf8_lossy(&received));
    assert!(closed - started < Duration::from_secs(2), "closed after {:?}", closed - started);
    drop(held.pop());
    let client = reqwest::Client::builder().timeout(WAIT).build()?;
    let url = format!("http://{}/ping", server.addr);
    shared::testing::eventually(WAIT, "a freed slot to take a new connection", || async {
        client.get(&url).send().await.ok().filter(|r| r.status() == 200).map(|_| ())
    })
    .await?;
    server.stop().await
}

#[tokio::test]
async fn a_request_head_over_the_header_cap_is_a_431() -> anyhow::Result<()> {
    let server = Server::start(limits()).await?;
    let mut stream = TcpStream::connect(server.addr).await?;

    let big = "a".repeat(ServerLimits::MIN_HEADER_BYTES + 1);
    stream.write_all(format!("GET /ping HTTP/1.1\r\nHost: x\r\nTracestate: k={big}\r\n\r\n").as_bytes()).await?;
    let (received, _) = until_closed(&mut stream).await?;

    let response = String::from_utf8_lossy(&received);
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    server.stop().await
}
