//! Durations in the configuration are strings with a unit: `ms`, `s`, `m`, `h`, `d`
//! (`"250ms"`, `"5s"`, `"1.5m"`, `"1d"`). A bare number is refused: `"5"` could mean
//! seconds or milliseconds, and a wrong guess silently changes a limit by 1000x.

/// Parses a duration string into whole milliseconds (fractions are rounded down to the ms).
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{text:?} has no unit (use ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!("{text:?} is not a number with a unit"));
    }
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!("{text:?} has an unknown unit {unit:?} (use ms, s, m, h or d)"));
        }
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits_only(whole) || !digits_only(fraction) {
        return Err(format!("{text:?} is not a number with a unit"));
    }
    // Decimal arithmetic on integers, not `f64`: exact, and the float parser's tables would
    // add ~12 KB to the .wasm for this one cold use.
    let too_long = || format!("{text:?} is too long");
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_long())? };
    let mut ms = whole.checked_mul(unit_ms).ok_or_else(too_long)?;
    // Fraction digits past the millisecond cannot change the result (rounded down).
    let mut scale = unit_ms;
    for digit in fraction.bytes() {
        if scale < 10 {
            break;
        }
        scale /= 10;
        ms = ms.checked_add(u64::from(digit - b'0') * scale).ok_or_else(too_long)?;
    }
    // 100 years: far beyond any sensible setting.
    if ms > 3_153_600_000_000 {
        return Err(too_long());
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn units() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("5s"), Ok(5_000));
        assert_eq!(parse_duration_ms("1.5m"), Ok(90_000));
        assert_eq!(parse_duration_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
        assert_eq!(parse_duration_ms(" 10s "), Ok(10_000));
        assert_eq!(parse_duration_ms("0.5s"), Ok(500));
        assert_eq!(parse_duration_ms(".5s"), Ok(500));
        assert_eq!(parse_duration_ms("5.s"), Ok(5_000));
        assert_eq!(parse_duration_ms("1.0015s"), Ok(1_001));
        assert_eq!(parse_duration_ms("1.999999ms"), Ok(1));
        assert_eq!(parse_duration_ms("0.0001d"), Ok(8_640));
        assert_eq!(parse_duration_ms("36500d"), Ok(3_153_600_000_000));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "-1s",
            "5sec",
            "1.2.3s",
            ".s",
            "5S",
            "1e3s",
            "9999999999d",
            "36500.1d",
            "99999999999999999999999s",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
