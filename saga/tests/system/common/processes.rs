//! The production topology as OS processes: our mock-cluster broker binary and the five
//! service binaries, each configured only through its environment, as in production.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// A binary of this workspace. `cargo test` builds only the binaries of the package under
/// test, so the first call builds the service and broker binaries (a no-op when they are up
/// to date) into the same target directory and profile as this test.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let dir =
        BUILT.get_or_init(|| build_binaries().map_err(|e| format!("{e:#}"))).clone().map_err(anyhow::Error::msg)?;
    let path = dir.join(name);
    anyhow::ensure!(path.exists(), "{} was not built", path.display());
    Ok(path)
}

fn build_binaries() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/<test executable>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).context("unexpected test executable location")?;
    let target_dir = profile_dir.parent().context("unexpected target directory layout")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--bins", "--target-dir"]).arg(target_dir);
    for package in ["shared", "order-svc", "inventory-svc", "payment-svc", "shipping-svc", "notification-svc"] {
        command.args(["-p", package]);
    }
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        command.arg("--release");
    }
    let output = command.output().context("failed to run cargo build")?;
    anyhow::ensure!(
        output.status.success(),
        "building the service binaries failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(profile_dir.to_path_buf())
}

/// A child process whose log lines are collected.
pub struct Process {
    pub name: String,
    pub child: Child,
    /// order-svc's API; the ops listener of the other services.
    pub addr: Option<SocketAddr>,
    /// The ops listener: `/livez`, `/healthz`, `/readyz`, `/metrics`.
    pub ops_addr: Option<SocketAddr>,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Start `binary` with `env` and wait (up to `timeout`) for its "listening" log lines: the
    /// API and ops listeners of order-svc, the ops listener of the others.
    pub async fn service(
        name: &str,
        binary_name: &str,
        env: &[(&str, String)],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new(binary(binary_name)?);
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().with_context(|| format!("failed to start {name}"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = tokio::sync::mpsc::channel::<(String, SocketAddr)>(4);
        if let Some(stdout) = child.stdout.take() {
            pump(stdout, logs.clone(), addr_tx.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            pump(stderr, logs.clone(), addr_tx);
        }
        let last_lines = |logs: &Arc<Mutex<Vec<String>>>| {
            let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
            logs[logs.len().saturating_sub(5)..].join("\n")
        };
        let expected: &[&str] = if binary_name == "order-svc" { &["api", "ops"] } else { &["ops"] };
        let mut listening = HashMap::new();
        while !expected.iter().all(|role| listening.contains_key(*role)) {
            let (role, addr) = tokio::time::timeout(timeout, addr_rx.recv())
                .await
                .with_context(|| format!("{name} did not start listening within {timeout:?}:\n{}", last_lines(&logs)))?
                .with_context(|| format!("{name} exited before listening:\n{}", last_lines(&logs)))?;
            listening.insert(role, addr);
        }
        let ops_addr = listening.get("ops").copied();
        let addr = listening.get("api").copied().or(ops_addr);
        Ok(Self { name: name.to_owned(), child, addr, ops_addr, logs })
    }

    /// Send SIGTERM and wait for the exit; returns how long it took and whether it succeeded.
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<(Duration, bool)> {
        let started = Instant::now();
        signal(&self.child, "TERM")?;
        let exit = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(exit) => exit?,
            Err(_) => {
                let logs = self.log_lines();
                let tail = logs[logs.len().saturating_sub(40)..].join("\n");
                anyhow::bail!("{} did not exit within {timeout:?} of SIGTERM; its last lines:\n{tail}", self.name)
            }
        };
        Ok((started.elapsed(), exit.success()))
    }

    /// SIGKILL (kill -9): no chance to drain, flush or commit. Waits for the exit.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().with_context(|| format!("failed to kill -9 {}", self.name))?;
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .with_context(|| format!("{} did not die after SIGKILL", self.name))??;
        Ok(())
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// Send `signal` (a `kill` name such as `USR1`) to a child process by its id.
pub fn signal(child: &Child, signal: &str) -> anyhow::Result<()> {
    let pid = child.id().context("process already reaped")?;
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// Collect a child's output lines, and report its "listening" addresses by listener.
fn pump<R>(reader: R, logs: Arc<Mutex<Vec<String>>>, addr_tx: tokio::sync::mpsc::Sender<(String, SocketAddr)>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = listening_addr(&line) {
                let _ = addr_tx.send(addr).await;
            }
            if let Ok(mut logs) = logs.lock() {
                logs.push(line);
            }
        }
    });
}

/// `(listener, address)` of a "listening" line; the endpoint a service serves while it is still
/// connecting (`starting`) goes away, so it is not reported.
fn listening_addr(line: &str) -> Option<(String, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let role = v["listener"].as_str()?;
    (v["message"] == "listening" && role != "starting")
        .then(|| Some((role.to_owned(), v["addr"].as_str()?.parse().ok()?)))?
}

/// Our mock-cluster broker as its own process.
pub struct BrokerProcess {
    pub child: Child,
    pub bootstrap: String,
    _dir: super::TempDir,
}

impl BrokerProcess {
    pub async fn start(env: &HashMap<&str, String>) -> anyhow::Result<Self> {
        let dir = super::TempDir(std::env::temp_dir().join(format!("saga-broker-{}", uuid::Uuid::new_v4().simple())));
        std::fs::create_dir_all(&dir.0)?;
        let address_file = dir.0.join("address");
        let child = Command::new(binary("mock-broker")?)
            .arg("--address-file")
            .arg(&address_file)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start mock-broker")?;
        let bootstrap = shared::testing::eventually(Duration::from_secs(30), "the broker's address file", || async {
            std::fs::read_to_string(&address_file).ok()
        })
        .await?;
        Ok(Self { child, bootstrap, _dir: dir })
    }

    /// Take the broker down: connections are refused, data is kept (SIGUSR1).
    pub fn down(&self) -> anyhow::Result<()> {
        signal(&self.child, "USR1")
    }

    /// Bring the broker back up (SIGUSR2).
    pub fn up(&self) -> anyhow::Result<()> {
        signal(&self.child, "USR2")
    }
}
