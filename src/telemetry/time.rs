//! RFC 3339 UTC timestamps with milliseconds (`2024-02-29T13:05:09.042Z`)
//! from a `SystemTime`, without a date library: the civil-date conversion is
//! Howard Hinnant's `civil_from_days` (proleptic Gregorian calendar).
//!
//! RFC 3339 has four-digit years, so times outside 0000-01-01 ..
//! 9999-12-31T23:59:59.999Z are clamped to those ends.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// 0000-01-01T00:00:00.000Z in milliseconds since the epoch.
const MIN_MS: i128 = -62_167_219_200_000;
/// 9999-12-31T23:59:59.999Z in milliseconds since the epoch.
const MAX_MS: i128 = 253_402_300_799_999;

/// `(year, month 1..=12, day 1..=31)` of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of 400-year era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year, 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both come from small ranges (1..=31, 1..=12), so the casts cannot truncate.
    (year, month as u32, day as u32)
}

/// Milliseconds since the epoch, floored (also before 1970), clamped.
fn epoch_millis(t: SystemTime) -> i64 {
    let nanos: i128 = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    // The clamp keeps the value well inside i64.
    nanos.div_euclid(1_000_000).clamp(MIN_MS, MAX_MS) as i64
}

/// Append `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn write_rfc3339_millis(out: &mut Vec<u8>, t: SystemTime) {
    let ms = epoch_millis(t);
    let secs = ms.div_euclid(1_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, m, s) = (sod / 3_600, sod % 3_600 / 60, sod % 60);
    let milli = ms.rem_euclid(1_000);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn fmt(t: SystemTime) -> String {
        let mut out = Vec::new();
        write_rfc3339_millis(&mut out, t);
        String::from_utf8(out).expect("ascii")
    }

    fn at(secs: i64, millis: u64) -> SystemTime {
        let base = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        base + Duration::from_millis(millis)
    }

    #[test]
    fn known_instants() {
        let cases = [
            (0, 0, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 7, "2000-02-29T00:00:00.007Z"),
            (1_234_567_890, 123, "2009-02-13T23:31:30.123Z"),
            (1_709_164_800, 999, "2024-02-29T00:00:00.999Z"),
            (4_107_542_400, 0, "2100-03-01T00:00:00.000Z"),
            (-1, 0, "1969-12-31T23:59:59.000Z"),
            (253_402_300_799, 999, "9999-12-31T23:59:59.999Z"),
            (-62_167_219_200, 0, "0000-01-01T00:00:00.000Z"),
        ];
        for (secs, millis, want) in cases {
            assert_eq!(fmt(at(secs, millis)), want, "{secs}s + {millis}ms");
        }
    }

    #[test]
    fn sub_millisecond_before_the_epoch_floors() {
        assert_eq!(fmt(UNIX_EPOCH - Duration::from_nanos(1)), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            fmt(UNIX_EPOCH + Duration::from_micros(1_999)),
            "1970-01-01T00:00:00.001Z"
        );
    }

    #[test]
    fn out_of_range_clamps() {
        assert_eq!(
            fmt(UNIX_EPOCH + Duration::from_secs(1 << 40)),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(fmt(at(-70_000_000_000, 0)), "0000-01-01T00:00:00.000Z");
    }

    /// Every day from 0000-03-01 to 9999-12-31 against a calendar walked one
    /// day at a time with the textbook leap-year rule.
    #[test]
    fn civil_dates_match_a_day_by_day_calendar() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let length = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut y, mut m, mut d) = (0i64, 3u32, 1u32);
        let mut days = -719_468i64;
        while y < 10_000 {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            days += 1;
            d += 1;
            if d > length(y, m) {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
    }
}
