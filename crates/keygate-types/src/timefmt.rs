//! Timestamps: stored as Unix milliseconds, shown as RFC 3339 with milliseconds and `Z`.

use time::format_description::well_known::Rfc3339;
use time::{Date, OffsetDateTime, Time};

/// Current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats Unix milliseconds as `2030-01-01T00:00:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) else {
        return String::new();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parses an RFC 3339 date-time or a plain `YYYY-MM-DD` date (midnight UTC) into Unix ms.
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let t = if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        t
    } else {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(s, &fmt).ok()?.with_time(Time::MIDNIGHT).assume_utc()
    };
    // Only instants `format_ms` can show again (years 0000 to 9999 in UTC): an offset may push
    // 9999-12-31 past it.
    const FIRST_MS: i128 = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    const END_MS: i128 = 253_402_300_800_000; // 10000-01-01T00:00:00Z
    let ms = t.unix_timestamp_nanos().div_euclid(1_000_000);
    if !(FIRST_MS..END_MS).contains(&ms) {
        return None;
    }
    i64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_ms("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(format_ms(ms), "2030-01-01T00:00:00.000Z");
        assert_eq!(parse_ms("2030-01-01"), Some(ms));
        assert_eq!(parse_ms("2030-01-01T01:00:00+01:00"), Some(ms));
        assert_eq!(parse_ms("yesterday"), None);
        assert_eq!(parse_ms(""), None);
    }

    #[test]
    fn only_instants_that_can_be_shown_again() {
        assert_eq!(parse_ms("9999-12-31T23:59:59-23:59"), None, "year 10000 in UTC");
        let last = parse_ms("9999-12-31T23:59:59Z").unwrap();
        assert_eq!(format_ms(last), "9999-12-31T23:59:59.000Z");
        assert!(parse_ms("0000-01-01T00:30:00+01:00").is_none(), "year -1 in UTC");
    }
}
