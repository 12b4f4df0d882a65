//! Money as integer nano-USD. Never a float inside keygate; JSON shows USD as decimals.

use serde::{Deserialize, Serialize};

/// An amount of US dollars in units of 10^-9 USD.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NanoUsd(pub i64);

/// Nano-USD in one dollar.
pub const NANOS_PER_USD: i64 = 1_000_000_000;

impl NanoUsd {
    pub const ZERO: NanoUsd = NanoUsd(0);

    pub fn checked_add(self, other: NanoUsd) -> Option<NanoUsd> {
        self.0.checked_add(other.0).map(NanoUsd)
    }

    pub fn checked_sub(self, other: NanoUsd) -> Option<NanoUsd> {
        self.0.checked_sub(other.0).map(NanoUsd)
    }

    pub fn saturating_add(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_add(other.0))
    }

    /// Converts a decimal USD figure from JSON. Rejects negatives, non-finite values and
    /// amounts beyond what an `i64` of nano-USD holds; rounds half up to the nearest
    /// nano-dollar. Goes through the shortest decimal form of the double, so `0.1` is
    /// exactly 100,000,000 nano-USD.
    pub fn from_usd_f64(usd: f64) -> Option<NanoUsd> {
        if !usd.is_finite() || usd < 0.0 {
            return None;
        }
        NanoUsd::parse_usd(&format!("{usd}"))
    }

    /// Parses a non-negative decimal USD string such as `"12.5"`, `"0.000000001"` or `"1e-3"`.
    pub fn parse_usd(s: &str) -> Option<NanoUsd> {
        let s = s.trim();
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (int_part, frac_part) = match mantissa.find('.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // digits * 10^(exp - frac_len) USD = digits * 10^(exp - frac_len + 9) nano-USD
        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let scale = exp.checked_sub(frac_part.len() as i32)?.checked_add(9)?;
        if digits.is_empty() {
            return Some(NanoUsd::ZERO);
        }
        if scale >= 0 {
            if digits.len() as i32 + scale > 19 {
                return None;
            }
            let base: i64 = digits.parse().ok()?;
            let nanos = base.checked_mul(10i64.checked_pow(scale as u32)?)?;
            Some(NanoUsd(nanos))
        } else {
            let cut = (-scale) as usize;
            if cut > digits.len() {
                // Below one nano-dollar: round half up.
                let first_dropped = if cut == digits.len() {
                    digits.as_bytes()[0]
                } else {
                    b'0'
                };
                return Some(NanoUsd(i64::from(first_dropped >= b'5')));
            }
            let (keep, dropped) = digits.split_at(digits.len() - cut);
            if keep.len() > 19 {
                return None;
            }
            let mut nanos: i64 = if keep.is_empty() { 0 } else { keep.parse().ok()? };
            if dropped.as_bytes()[0] >= b'5' {
                nanos = nanos.checked_add(1)?;
            }
            Some(NanoUsd(nanos))
        }
    }

    /// The amount in USD for display in JSON: the double nearest to the exact decimal.
    pub fn to_usd_f64(self) -> f64 {
        self.to_decimal_string().parse().unwrap_or(0.0)
    }

    /// Exact decimal string, e.g. `"10.2424"` (trailing zeros trimmed, at least one decimal).
    pub fn to_decimal_string(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / NANOS_PER_USD as u64;
        let frac = abs % NANOS_PER_USD as u64;
        let mut frac_s = format!("{frac:09}");
        while frac_s.len() > 1 && frac_s.ends_with('0') {
            frac_s.pop();
        }
        format!("{sign}{whole}.{frac_s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimal_strings() {
        assert_eq!(NanoUsd(0).to_decimal_string(), "0.0");
        assert_eq!(NanoUsd(10_242_400_000).to_decimal_string(), "10.2424");
        assert_eq!(NanoUsd(1).to_decimal_string(), "0.000000001");
        assert_eq!(NanoUsd(-1_500_000_000).to_decimal_string(), "-1.5");
    }

    #[test]
    fn from_usd_rejects_bad_values() {
        assert_eq!(NanoUsd::from_usd_f64(-1.0), None);
        assert_eq!(NanoUsd::from_usd_f64(f64::NAN), None);
        assert_eq!(NanoUsd::from_usd_f64(f64::INFINITY), None);
        assert_eq!(NanoUsd::from_usd_f64(1e300), None);
        assert_eq!(NanoUsd::from_usd_f64(50.0), Some(NanoUsd(50 * NANOS_PER_USD)));
        assert_eq!(NanoUsd::from_usd_f64(0.1), Some(NanoUsd(100_000_000)));
        assert_eq!(NanoUsd::parse_usd("1e-3"), Some(NanoUsd(1_000_000)));
        assert_eq!(NanoUsd::parse_usd("0.0000000015"), Some(NanoUsd(2)));
        assert_eq!(NanoUsd::parse_usd("0.0000000004"), Some(NanoUsd(0)));
        assert_eq!(NanoUsd::parse_usd("0.0000000005"), Some(NanoUsd(1)));
        assert_eq!(NanoUsd::parse_usd("9223372036.854775807"), Some(NanoUsd(i64::MAX)));
        assert_eq!(NanoUsd::parse_usd("9223372036.854775808"), None);
        assert_eq!(NanoUsd::parse_usd("-1"), None);
        assert_eq!(NanoUsd::parse_usd("."), None);
        assert_eq!(NanoUsd::parse_usd("1e400"), None);
    }

    proptest! {
        #[test]
        // Doubles hold 15 significant digits exactly: amounts below one million dollars
        // survive the trip through JSON numbers to the nano-dollar.
        fn usd_round_trip_within_double_precision(n in 0i64..1_000_000_000_000_000) {
            let usd = NanoUsd(n).to_usd_f64();
            prop_assert_eq!(NanoUsd::from_usd_f64(usd), Some(NanoUsd(n)));
        }

        #[test]
        fn decimal_string_parses_back(n in 0i64..i64::MAX) {
            prop_assert_eq!(NanoUsd::parse_usd(&NanoUsd(n).to_decimal_string()), Some(NanoUsd(n)));
        }

        #[test]
        fn parse_usd_never_panics(s in "[0-9.eE+-]{0,30}") {
            let _ = NanoUsd::parse_usd(&s);
        }

        #[test]
        fn checked_math_never_wraps(a in any::<i64>(), b in any::<i64>()) {
            let sum = NanoUsd(a).checked_add(NanoUsd(b));
            prop_assert_eq!(sum.map(|s| s.0), a.checked_add(b));
        }
    }
}
