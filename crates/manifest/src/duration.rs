//! Go's `time.ParseDuration` syntax (`20s`, `1m30s`, `500ms`, `1.5h`), as kubelet's flags and
//! KubeletConfiguration accept it.

use std::time::Duration;

/// Parses a Go duration. Negative durations are rejected: nothing in staticlet takes one.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let orig = s;
    let bad = || format!("invalid duration {orig:?} (expected e.g. 20s, 1m30s, 500ms)");
    let s = s.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if let Some(rest) = s.strip_prefix('-') {
        if rest.chars().all(|c| c == '0' || c == '.') {
            return Err(bad());
        }
        return Err(format!("invalid duration {orig:?}: must not be negative"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total_nanos: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("invalid duration {orig:?}: missing unit (ns, us, ms, s, m, h)")
            })?;
        if num_len == 0 {
            return Err(bad());
        }
        let num: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(format!(
                    "invalid duration {orig:?}: missing unit (ns, us, ms, s, m, h)"
                ))
            }
            u => return Err(format!("invalid duration {orig:?}: unknown unit {u:?}")),
        };
        total_nanos += num * scale;
    }
    if total_nanos > u64::MAX as f64 {
        return Err(format!("invalid duration {orig:?}: too large"));
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

/// Formats a duration the way Go's `Duration.String` does (`1m30s`, `500ms`, `0s`).
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let n = d.as_nanos();
        return if n.is_multiple_of(1_000_000) {
            format!("{}ms", n / 1_000_000)
        } else if n.is_multiple_of(1000) {
            format!("{}us", n / 1000)
        } else {
            format!("{n}ns")
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let frac = d.subsec_nanos();
    let sec = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{:09}", frac);
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => sec,
        (0, m) => format!("{m}m{sec}"),
        (h, m) => format!("{h}h{m}m{sec}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_syntax() {
        let ok = [
            ("20s", Duration::from_secs(20)),
            ("1m30s", Duration::from_secs(90)),
            ("500ms", Duration::from_millis(500)),
            ("1.5h", Duration::from_secs(5400)),
            ("2h45m", Duration::from_secs(9900)),
            ("0", Duration::ZERO),
            ("100us", Duration::from_micros(100)),
            ("3ns", Duration::from_nanos(3)),
            ("+5s", Duration::from_secs(5)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_duration(s), Ok(want), "{s}");
        }
        for bad in ["", "20", "s", "1x", "-5s", "1m3", "abc", "1..5s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn formats_like_go() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(20), "20s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1.5s"),
        ] {
            assert_eq!(format_go_duration(d), want);
        }
    }
}
