//! A TCP proxy between the services and PostgreSQL, so a test can take "the database" away from
//! them without stopping the shared server: [`DbProxy::down`] closes every connection it carries
//! and stops listening (new connections are refused), [`DbProxy::up`] listens again on the same
//! port.

use std::net::SocketAddr;

use anyhow::Context as _;
use shared::CancellationToken;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

enum Command {
    Down(oneshot::Sender<()>),
    Up(oneshot::Sender<anyhow::Result<()>>),
}

/// The proxy, running until dropped.
pub struct DbProxy {
    pub addr: SocketAddr,
    commands: mpsc::Sender<Command>,
    stop: CancellationToken,
}

impl DbProxy {
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (commands, rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        tokio::spawn(control(listener, addr, upstream.to_owned(), rx, stop.clone()));
        Ok(Self { addr, commands, stop })
    }

    /// Close every proxied connection and refuse new ones.
    pub async fn down(&self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Down(tx)).await.map_err(|_| anyhow::anyhow!("proxy stopped"))?;
        rx.await.context("proxy stopped")
    }

    /// Accept connections again.
    pub async fn up(&self) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Up(tx)).await.map_err(|_| anyhow::anyhow!("proxy stopped"))?;
        rx.await.context("proxy stopped")?
    }

    /// `url` (a `postgres://` URL of the real server) rewritten to go through the proxy.
    pub fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
        let (userinfo, host_and_path) = match rest.split_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), rest),
        };
        let path = host_and_path.find('/').map(|i| &host_and_path[i..]).unwrap_or("");
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `host:port` of the server a `postgres://` URL names (port 5432 when absent).
pub fn upstream_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host_and_path = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let host = host_and_path.split(['/', '?']).next().unwrap_or("127.0.0.1:5432");
    if host.contains(':') { host.to_owned() } else { format!("{host}:5432") }
}

async fn control(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: String,
    mut commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut listener = Some(listener);
    let mut connections = stop.child_token();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            command = commands.recv() => match command {
                None => return,
                Some(Command::Down(reply)) => {
                    listener = None;
                    connections.cancel();
                    connections = stop.child_token();
                    let _ = reply.send(());
                }
                Some(Command::Up(reply)) => {
                    if listener.is_none() {
                        match TcpListener::bind(addr).await {
                            Ok(l) => listener = Some(l),
                            Err(err) => {
                                let _ = reply.send(Err(anyhow::Error::new(err).context(format!("failed to listen on {addr} again"))));
                                continue;
                            }
                        }
                    }
                    let _ = reply.send(Ok(()));
                }
            },
            accepted = accept(listener.as_ref()) => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(pipe(client, upstream.clone(), connections.clone()));
                }
            }
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Carry one connection until either side closes it or the proxy goes down (then both sockets
/// are dropped, which closes them).
async fn pipe(mut client: TcpStream, upstream: String, cut: CancellationToken) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    tokio::select! {
        () = cut.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
    }
}
