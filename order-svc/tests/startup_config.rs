//! The production binary's start-up configuration: it refuses to run without an API key (unless
//! open mode is asked for), and a key configured where its digest belongs is refused without
//! being printed. Each case runs the binary in a clean environment and reads its exit.

use std::process::{Command, Output};

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
