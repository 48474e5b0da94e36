//! Rebuild when a migration is added: `sqlx::migrate!` embeds the files it saw at compile time.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
