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
    let valid_number = !number.is_empty()
        && number.bytes().filter(|b| *b == b'.').count() <= 1
        && number.bytes().any(|b| b.is_ascii_digit());
    let value: f64 = if valid_number {
        number.parse().map_err(|_| format!("{text:?} is not a number with a unit"))?
    } else {
        return Err(format!("{text:?} is not a number with a unit"));
    };
    let ms = value * unit_ms as f64;
    // 100 years: far beyond any sensible setting, and safely inside u64 and f64 precision.
    if !ms.is_finite() || ms > 3_153_600_000_000.0 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(ms as u64)
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
    }

    #[test]
    fn refusals() {
        for bad in ["", "5", "s", "5 s", "-1s", "5sec", "1.2.3s", ".s", "5S", "1e3s", "9999999999d"] {
            assert!(parse_duration_ms(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
