//! Checks a service adds to `/readyz` beside the database and the broker (notification-svc:
//! its webhook's circuit breaker), registered once at start-up.

use std::sync::{Arc, Mutex};

/// One more line in `/readyz`'s `checks`.
pub trait ReadinessCheck: Send + Sync {
    /// The key in `checks` (stable, snake_case).
    fn name(&self) -> &'static str;

    /// The value shown under [`Self::name`], and whether the service is ready as far as this
    /// check goes (a check may be informational and always say true).
    fn report(&self) -> (serde_json::Value, bool);
}

/// The extra checks of one service; clones share the list, so a check registered after the
/// ops router was built is still reported.
#[derive(Clone, Default)]
pub struct ReadinessChecks(Arc<Mutex<Vec<Arc<dyn ReadinessCheck>>>>);

impl ReadinessChecks {
    pub fn add(&self, check: Arc<dyn ReadinessCheck>) {
        if let Ok(mut checks) = self.0.lock() {
            checks.push(check);
        }
    }

    /// Each check's `(name, value)`, and whether all of them are ready.
    pub fn report(&self) -> (Vec<(&'static str, serde_json::Value)>, bool) {
        let checks: Vec<Arc<dyn ReadinessCheck>> = self.0.lock().map(|c| c.clone()).unwrap_or_default();
        let mut ready = true;
        let lines = checks
            .iter()
            .map(|check| {
                let (value, ok) = check.report();
                ready &= ok;
                (check.name(), value)
            })
            .collect();
        (lines, ready)
    }

    /// Adds the checks to a `/readyz` body's `checks` and returns whether they are all ready.
    pub(crate) fn add_to(&self, body: &mut serde_json::Value) -> bool {
        let (lines, ready) = self.report();
        if let Some(checks) = body.get_mut("checks").and_then(serde_json::Value::as_object_mut) {
            checks.extend(lines.into_iter().map(|(name, value)| (name.to_owned(), value)));
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Fixed(&'static str, bool);

    impl ReadinessCheck for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }

        fn report(&self) -> (serde_json::Value, bool) {
            (json!(self.1), self.1)
        }
    }

    #[test]
    fn extra_checks_are_added_to_the_body_and_any_not_ready_one_says_so() {
        let checks = ReadinessChecks::default();
        let shared = checks.clone();
        shared.add(Arc::new(Fixed("informational", true)));
        let mut body = json!({"checks": {"database": true}});

        assert!(checks.add_to(&mut body));
        assert_eq!(body, json!({"checks": {"database": true, "informational": true}}));

        shared.add(Arc::new(Fixed("failing", false)));
        assert!(!checks.add_to(&mut body));
        assert_eq!(body["checks"]["failing"], json!(false));
    }
}
