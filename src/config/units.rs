//! The units a configuration file writes values in: durations (`"250ms"`, `"30s"`, `"5m"`,
//! `"1h"`, `"1d"`) and sizes (`"4096"`, `"64KiB"`, `"128MiB"`, `"50MB"`). Pure parsing, with the
//! serde glue so that a wrong value is reported at its place in the file; nothing else.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A duration written as a number and a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

/// A number of bytes, written as a plain integer or a number and a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

/// `memory_high_watermark`: a size (`"2GiB"`), or a fraction of the machine's memory written as
/// a float (`0.4`, as RabbitMQ's `vm_memory_high_watermark.relative`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    Fraction(f64),
    Absolute(u64),
}

const DURATION_UNITS: [(&str, u64); 5] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
];

/// Decimal (kB, MB, …) and binary (KiB, MiB, …) units, and B.
const SIZE_UNITS: [(&str, u64); 10] = [
    ("B", 1),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Splits `"30s"` into `(30, "s")`; the number is a non-negative integer.
fn split(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, text[digits..].trim_start()))
}

/// Parses a duration; the error says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let refuse = || {
        format!("invalid duration \"{text}\": expected a whole number and a unit (ms, s, m, h, d), e.g. \"30s\"")
    };
    let (number, unit) = split(text).ok_or_else(refuse)?;
    let (_, scale) = DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(refuse)?;
    let ms = number.checked_mul(*scale).ok_or_else(refuse)?;
    Ok(Duration::from_millis(ms))
}

/// Parses a size; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let refuse = || {
        format!("invalid size \"{text}\": expected a whole number of bytes, optionally with a unit (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. \"128MiB\"")
    };
    let (number, unit) = split(text).ok_or_else(refuse)?;
    if unit.is_empty() {
        return Ok(number);
    }
    let (_, scale) = SIZE_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .ok_or_else(refuse)?;
    number.checked_mul(*scale).ok_or_else(refuse)
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"5m\" or \"250ms\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDuration, E> {
                parse_duration(text).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"128MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigSize, E> {
                parse_size(text).map(ConfigSize).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ConfigSize, E> {
                u64::try_from(n)
                    .map(ConfigSize)
                    .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ConfigSize, E> {
                Ok(ConfigSize(n))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for MemoryLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MemoryLimit;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"2GiB\" or a fraction of the memory such as 0.4")
            }
            fn visit_f64<E: de::Error>(self, fraction: f64) -> Result<MemoryLimit, E> {
                if fraction > 0.0 && fraction <= 1.0 {
                    return Ok(MemoryLimit::Fraction(fraction));
                }
                Err(E::custom(format!(
                    "invalid fraction of the memory {fraction}: must be above 0 and at most 1"
                )))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<MemoryLimit, E> {
                parse_size(text)
                    .map(MemoryLimit::Absolute)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<MemoryLimit, E> {
                u64::try_from(n)
                    .map(MemoryLimit::Absolute)
                    .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["30", "s", "-1s", "1.5s", "30x", "", "99999999999999999999d"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.starts_with("invalid duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10B"), Ok(10));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        for bad in ["MiB", "-1", "1.5MiB", "12 parsecs", "99999999999TiB"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.starts_with("invalid size"), "{bad}: {err}");
        }
    }
}
