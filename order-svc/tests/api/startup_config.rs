//! The production binary's start-up configuration: it refuses to run without an API key (unless
//! open mode is asked for) or with the compose stack's published demo key (unless that is asked
//! for), and a key configured where its digest belongs is refused without being printed. Each case runs the binary in a clean environment and reads its exit.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn order_svc(env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_order-svc"))
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        // Unreachable on purpose: every case here must fail before connecting anywhere.
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .envs(env.iter().copied())
        .output()
        .expect("run order-svc")
}

#[test]
fn without_any_api_key_the_service_refuses_to_start() {
    let output = order_svc(&[]);

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no API key is configured"), "{stderr}");
}

#[test]
fn a_plain_key_where_a_digest_belongs_is_refused_and_not_printed() {
    let key = "sk_this_is_a_plain_key_not_a_digest";
    let keys = format!("admin:{key}");

    let output = order_svc(&[("ORDER_API_KEYS", &keys)]);

    assert!(!output.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(all.contains("SHA-256 digest"), "{all}");
    assert!(!all.contains(key), "the key was printed: {all}");
}

#[test]
fn an_unknown_auth_mode_is_refused() {
    let output = order_svc(&[("ORDER_API_AUTH", "none")]);

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ORDER_API_AUTH must be keys or open"));
}

/// The digest of the compose stack's published demo key, as docker/profiles/laptop.env sets it.
const DEMO_KEY_ENTRY: &str = "admin:73db19958eaeaa43fdce8438e1a8664ba539bcb15529ef1ff7d1d44d2e6e77b3";

#[test]
fn the_published_demo_key_is_refused_naming_the_variable_that_allows_it() {
    let output = order_svc(&[("ORDER_API_KEYS", &format!("customer:cust-1:{},{DEMO_KEY_ENTRY}", "0".repeat(64)))]);

    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("published demo key"), "{stderr}");
    assert!(stderr.contains("ORDER_API_ALLOW_DEMO_KEY=true"), "{stderr}");
}

#[test]
fn the_published_demo_key_is_accepted_when_allowed_explicitly() {
    // Past its configuration the service starts and retries the unreachable database until
    // stopped: wait for its "starting" line (or its exit), then stop it.
    let mut child = Command::new(env!("CARGO_BIN_EXE_order-svc"))
        .env_clear()
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("ORDER_API_KEYS", DEMO_KEY_ENTRY)
        .env("ORDER_API_ALLOW_DEMO_KEY", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run order-svc");
    let stdout = child.stdout.take().expect("stdout");
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut started = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match received.recv_timeout(left) {
            Ok(line) if line.contains("\"starting\"") => {
                started = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    child.kill().ok();
    let output = child.wait_with_output().expect("order-svc output");

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(started, "order-svc did not start: {stderr}");
    assert!(!stderr.contains("published demo key"), "{stderr}");
}

#[test]
fn a_malformed_allow_demo_key_setting_is_refused() {
    let output = order_svc(&[("ORDER_API_KEYS", DEMO_KEY_ENTRY), ("ORDER_API_ALLOW_DEMO_KEY", "yes")]);

    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("ORDER_API_ALLOW_DEMO_KEY must be true or false"));
}
