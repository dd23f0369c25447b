//! Scalar config values that parse themselves during deserialization, so that a
//! bad value is reported by the TOML decoder at its exact line and column.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration written with a unit: "250ms", "2s", "1m", "1h", "500us".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {text:?} needs a unit (ms, s, m, h, us)"))?;
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(format!("duration {text:?} must start with a whole number"));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("duration {text:?} is out of range"))?;
        let per_unit = match unit {
            "us" => Duration::from_micros(1),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => {
                return Err(format!(
                    "duration {text:?}: unknown unit {unit:?} (use us, ms, s, m or h)"
                ))
            }
        };
        u32::try_from(n)
            .ok()
            .and_then(|n| per_unit.checked_mul(n))
            .ok_or_else(|| format!("duration {text:?} is out of range"))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Dur::parse(&text).map(Dur).map_err(de::Error::custom)
    }
}

/// A timeout: a duration above zero (one of zero would fail everything
/// that is not instant, not turn the timeout off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        above_zero(d, "timeout").map(Timeout)
    }
}

/// A duration that must be above zero; `what` names it in the error.
fn above_zero<'de, D: Deserializer<'de>>(d: D, what: &str) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    match Dur::parse(&text).map_err(de::Error::custom)? {
        zero if zero.is_zero() => Err(de::Error::custom(format!(
            "{what} {:?} must be above zero",
            text.trim()
        ))),
        d => Ok(d),
    }
}

/// A span of time that must pass (an ejection, a breaker's window or open
/// time): above zero, as zero would turn the policy into one that never
/// holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        above_zero(d, "duration").map(Period)
    }
}

/// A byte size: an integer, or a string with a unit ("64KiB", "10MiB", "1GiB").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(text: &str) -> Result<u64, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        if digits.is_empty() {
            return Err(format!("size {text:?} must start with a whole number"));
        }
        let n: u64 = digits.parse().map_err(|_| format!("size {text:?} is out of range"))?;
        let mult = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" | "KB" => 1 << 10,
            "MiB" | "M" | "MB" => 1 << 20,
            "GiB" | "G" | "GB" => 1 << 30,
            other => {
                return Err(format!(
                    "size {text:?}: unknown unit {other:?} (use B, KiB, MiB or GiB)"
                ))
            }
        };
        n.checked_mul(mult)
            .ok_or_else(|| format!("size {text:?} is out of range"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte count or a size such as \"64KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(SizeVisitor)
    }
}

/// `workers = "auto"` or a positive number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    #[default]
    Auto,
    Count(usize),
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WorkersVisitor;
        impl Visitor<'_> for WorkersVisitor {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or a number of workers between 1 and 1024")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Workers, E> {
                match usize::try_from(v) {
                    Ok(n) if (1..=1024).contains(&n) => Ok(Workers::Count(n)),
                    _ => Err(E::custom("workers must be between 1 and 1024, or \"auto\"")),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Workers, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Workers, E> {
                if v == "auto" {
                    Ok(Workers::Auto)
                } else {
                    Err(E::custom(format!("workers must be \"auto\" or a number, not {v:?}")))
                }
            }
        }
        d.deserialize_any(WorkersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(Dur::parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(Dur::parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(Dur::parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(Dur::parse("0s"), Ok(Duration::ZERO));
        assert!(Dur::parse("5").is_err());
        assert!(Dur::parse("s").is_err());
        assert!(Dur::parse("1.5s").is_err());
        assert!(Dur::parse("3 days").is_err());
        assert!(Dur::parse("99999999999h").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(Size::parse("64KiB"), Ok(65536));
        assert_eq!(Size::parse("10MiB"), Ok(10 << 20));
        assert_eq!(Size::parse("512"), Ok(512));
        assert!(Size::parse("10 parsecs").is_err());
        assert!(Size::parse("KiB").is_err());
        assert_eq!(Size::parse("32KB"), Ok(32 << 10), "binary, as in NGINX");
        let huge = Size::parse("99999999999999999999KiB").unwrap_err();
        assert!(huge.contains("out of range"), "{huge}");
    }
}
