//! Durations (`250ms`, `10s`, `5m`, `2h`, `1d`) and points in time (RFC 3339, `now`, or an age
//! such as `15m`, meaning that long ago) as operators type them.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Parse `250ms`, `1.5s`, `10s`, `5m`, `2h`, `1d`; a bare number is seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let text = raw.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("invalid duration {raw:?} (expected e.g. 500ms, 10s, 5m, 2h, 1d)"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" | "sec" | "secs" => value,
        "m" | "min" | "mins" => value * 60.0,
        "h" | "hour" | "hours" => value * 3600.0,
        "d" | "day" | "days" => value * 86_400.0,
        other => return Err(format!("invalid duration unit {other:?} in {raw:?} (use ms, s, m, h or d)")),
    };
    if !seconds.is_finite() || !(0.0..=365.0 * 86_400.0).contains(&seconds) {
        return Err(format!("duration {raw:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parse an RFC 3339 time, `now`, or an age (`15m`, `15m ago`): that long before now.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let text = raw.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(Utc::now());
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let age = text.trim_end_matches("ago").trim().trim_start_matches('-');
    match parse_duration(age) {
        Ok(age) => {
            let age = chrono::TimeDelta::from_std(age).map_err(|_| format!("age {raw:?} is out of range"))?;
            Ok(Utc::now() - age)
        }
        Err(_) => Err(format!(
            "invalid time {raw:?} (expected RFC 3339 such as 2026-01-31T12:00:00Z, `now`, or an age such as 15m)"
        )),
    }
}

/// A duration as people read it: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub fn human(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis < 60_000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else if millis < 3_600_000 {
        let secs = duration.as_secs();
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        let mins = duration.as_secs() / 60;
        format!("{}h{:02}m", mins / 60, mins % 60)
    }
}

/// A time as the tables show it: UTC, millisecond precision.
pub fn show(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
    }

    #[test]
    fn bad_durations_are_errors_not_panics() {
        for raw in ["", "s", "ten", "5 parsecs", "-3s", "1e400s", "99999d"] {
            assert!(parse_duration(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn times_are_rfc3339_or_an_age() {
        let t = parse_time("2026-01-31T12:00:00Z").expect("rfc3339");
        assert_eq!(t.to_rfc3339(), "2026-01-31T12:00:00+00:00");
        let age = Utc::now() - parse_time("15m").expect("age");
        assert!((age.num_seconds() - 900).abs() <= 1);
        let age = Utc::now() - parse_time("2h ago").expect("age");
        assert!((age.num_seconds() - 7200).abs() <= 1);
        assert!(parse_time("yesterday-ish").is_err());
    }

    #[test]
    fn human_durations_read_naturally() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(human(Duration::from_secs(245)), "4m05s");
        assert_eq!(human(Duration::from_secs(7380)), "2h03m");
    }
}
