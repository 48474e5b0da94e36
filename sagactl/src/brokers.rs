//! Which Kafka sagactl talks to: `--brokers`, else `KAFKA_BROKERS`, else the address the
//! embedded system publishes in its data directory while it runs (`broker.addr` in
//! `$SAGA_DATA_DIR`, or `./data` as `cargo run` uses), else `127.0.0.1:9092`. Where the address
//! came from, and what was looked at, goes into the error when the broker cannot be reached.

use std::fmt;
use std::path::{Path, PathBuf};

/// Kafka's usual address, for a broker nobody named.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";

/// The bootstrap servers and how they were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brokers {
    pub servers: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `--brokers` or `KAFKA_BROKERS` (which one clap cannot say; the name says both).
    Given,
    /// The embedded system's address file.
    File(PathBuf),
    /// Nothing given and no address file at these paths.
    Default { looked_at: Vec<PathBuf> },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Given => f.write_str("from --brokers/KAFKA_BROKERS"),
            Origin::File(path) => write!(
                f,
                "from {}, which the embedded system writes while it runs; a file left by a killed system is \
                 stale: delete it or pass --brokers",
                path.display()
            ),
            Origin::Default { looked_at } => {
                let paths: Vec<String> = looked_at.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "the default: no --brokers, no KAFKA_BROKERS, and no embedded system's address file at {}",
                    paths.join(" or ")
                )
            }
        }
    }
}

/// Where to look for the address file: `$SAGA_DATA_DIR` when set, else `./data`.
pub fn address_file_candidates(data_dir: Option<&Path>) -> Vec<PathBuf> {
    let dir = data_dir.map_or_else(|| PathBuf::from("data"), Path::to_path_buf);
    vec![dir.join(shared::broker::ADDRESS_FILE)]
}

/// Resolve the brokers from what was given (flag or environment), else the address file.
pub fn resolve(given: Option<&str>, data_dir: Option<&Path>) -> Brokers {
    if let Some(servers) = given.map(str::trim).filter(|s| !s.is_empty()) {
        return Brokers { servers: servers.to_owned(), origin: Origin::Given };
    }
    let candidates = address_file_candidates(data_dir);
    for path in &candidates {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Some(servers) = text.lines().map(str::trim).find(|l| !l.is_empty())
        {
            return Brokers { servers: servers.to_owned(), origin: Origin::File(path.clone()) };
        }
    }
    Brokers { servers: DEFAULT_BROKERS.to_owned(), origin: Origin::Default { looked_at: candidates } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sagactl-brokers-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn given_brokers_win_over_the_address_file() {
        let dir = temp_dir();
        std::fs::write(dir.join("broker.addr"), "127.0.0.1:1111").expect("write");
        let brokers = resolve(Some("kafka:9092"), Some(&dir));
        assert_eq!(brokers, Brokers { servers: "kafka:9092".into(), origin: Origin::Given });
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn without_brokers_the_embedded_systems_address_file_is_read() {
        let dir = temp_dir();
        std::fs::write(dir.join("broker.addr"), "127.0.0.1:43563\n").expect("write");
        let brokers = resolve(None, Some(&dir));
        assert_eq!(brokers.servers, "127.0.0.1:43563");
        assert_eq!(brokers.origin, Origin::File(dir.join("broker.addr")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn with_nothing_found_the_default_names_what_was_looked_at() {
        let dir = temp_dir();
        let brokers = resolve(Some("  "), Some(&dir));
        assert_eq!(brokers.servers, DEFAULT_BROKERS);
        let said = brokers.origin.to_string();
        assert!(said.contains(&dir.join("broker.addr").display().to_string()), "{said}");
        assert!(said.contains("KAFKA_BROKERS"), "{said}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
