//! Sizes (`4K`, `1M`, `256MiB`), durations (`5s`, `200ms`) and rates with explicit units.
//!
//! Size suffixes follow iperf3, perftest and nccl-tests: `K`, `M`, `G` (and `KiB`, `MiB`,
//! `GiB`) are powers of 1024. Decimal `KB`, `MB`, `GB` are powers of 1000, spelled out so
//! nobody gets one when they meant the other.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    #[error("'{0}' is not a size: use a byte count with an optional suffix, e.g. 64, 4K, 1M, 256MiB, 1GB")]
    BadSize(String),
    #[error("'{0}' is not a duration: use a number with a unit, e.g. 5s, 200ms, 50us, 1m")]
    BadDuration(String),
    #[error("size '{0}' is too large (more than 2^64 bytes)")]
    SizeOverflow(String),
}

/// Parses a byte size: `64`, `4K`, `4KiB`, `1M`, `2G`, `1KB` (=1000), `1.5M`.
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(split);
    if number.is_empty() {
        return Err(UnitError::BadSize(text.to_string()));
    }
    let multiplier: u64 = match suffix.trim() {
        "" | "B" | "b" => 1,
        "K" | "k" | "Ki" | "KiB" | "kiB" => 1 << 10,
        "M" | "m" | "Mi" | "MiB" => 1 << 20,
        "G" | "g" | "Gi" | "GiB" => 1 << 30,
        "T" | "t" | "Ti" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(UnitError::BadSize(text.to_string())),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole
            .checked_mul(multiplier)
            .ok_or_else(|| UnitError::SizeOverflow(text.to_string()));
    }
    let fractional: f64 = number
        .parse()
        .map_err(|_| UnitError::BadSize(text.to_string()))?;
    let bytes = fractional * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(UnitError::SizeOverflow(text.to_string()));
    }
    if bytes.fract() != 0.0 {
        return Err(UnitError::BadSize(text.to_string()));
    }
    Ok(bytes as u64)
}

/// Parses a duration: `5s`, `200ms`, `50us`, `1m`, `1.5s`. A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| UnitError::BadDuration(text.to_string()))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(UnitError::BadDuration(text.to_string())),
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(UnitError::BadDuration(text.to_string()));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats bytes with a binary unit: `512 B`, `4 KiB`, `1.5 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Formats a duration the way a human reads it: `850 us`, `12.3 ms`, `5.00 s`.
pub fn format_duration(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.1} us")
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

/// Decimal gigabits per second (1 Gbit/s = 1e9 bit/s), the unit links are sold in.
/// A rate with three decimals, or three significant digits when it is smaller than
/// that shows (a stalled link reads 0.000460, never "0.000").
pub fn format_rate(value: f64) -> String {
    if !value.is_finite() || value == 0.0 || value.abs() >= 0.1 {
        return format!("{value:.3}");
    }
    let decimals = (2 - value.abs().log10().floor() as i32).clamp(3, 12) as usize;
    format!("{value:.decimals$}")
}

pub fn gbit_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    bytes as f64 * 8.0 / seconds / 1e9
}

/// Decimal gigabytes per second (1 GB/s = 1e9 B/s), the unit nccl-tests reports.
pub fn gbyte_per_s(bytes: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    bytes as f64 / seconds / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_rates_keep_three_significant_digits() {
        assert_eq!(format_rate(38.7481), "38.748");
        assert_eq!(format_rate(0.4603), "0.460");
        assert_eq!(format_rate(0.000_460_3), "0.000460");
        assert_eq!(format_rate(0.0), "0.000");
    }

    #[test]
    fn sizes_use_binary_suffixes_and_explicit_decimal_ones() {
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size("4K").unwrap(), 4096);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1KB").unwrap(), 1000);
        assert_eq!(parse_size("1.5M").unwrap(), 3 << 19);
    }

    #[test]
    fn bad_sizes_are_rejected_with_the_text() {
        for bad in ["", "K", "12X", "1.3", "-5", "1e3"] {
            assert!(parse_size(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(
            parse_size("99999999999T"),
            Err(UnitError::SizeOverflow("99999999999T".into()))
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("50us").unwrap(), Duration::from_micros(50));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn rates_are_decimal() {
        assert_eq!(gbit_per_s(125_000_000, 1.0), 1.0);
        assert_eq!(gbyte_per_s(2_000_000_000, 2.0), 1.0);
        assert_eq!(gbit_per_s(1, 0.0), 0.0);
    }

    #[test]
    fn bytes_format_with_binary_units() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(4096), "4 KiB");
        assert_eq!(format_bytes(3 << 19), "1.50 MiB");
    }
}
