//! Memory sizes as users write them: `8G`, `8096M`, `512MiB`, or a bare number.

/// Parses a size into MiB. A bare number means GiB, as in KIWI's boxbuild plugin
/// (`--box-memory 8` is 8 GiB). Errors: no number, an unknown unit, less than 64 MiB, or
/// more bytes than a u64 holds.
pub fn parse_mib(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("invalid size '{text}': use a number with a unit, e.g. 512M or 8G");
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "g" | "gb" | "gib" => 1024,
        "m" | "mb" | "mib" => 1,
        "t" | "tb" | "tib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    let mib = value
        .checked_mul(factor)
        .filter(|mib| mib.checked_mul(1024 * 1024).is_some())
        .ok_or_else(|| format!("size '{text}' is too large"))?;
    if mib < 64 {
        return Err(format!(
            "size '{text}' is too small: a box needs at least 64M"
        ));
    }
    Ok(mib)
}

#[cfg(test)]
mod tests {
    use super::parse_mib;

    #[test]
    fn accepts_the_plugins_forms() {
        assert_eq!(parse_mib("8G"), Ok(8192));
        assert_eq!(parse_mib("8096M"), Ok(8096));
        assert_eq!(parse_mib("8"), Ok(8192));
        assert_eq!(parse_mib("512MiB"), Ok(512));
        assert_eq!(parse_mib("2gb"), Ok(2048));
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        for bad in [
            "",
            "G",
            "8X",
            "-1",
            "1.5G",
            "10M",
            "17592186044416M",
            "99999999999999T",
        ] {
            assert!(parse_mib(bad).is_err(), "{bad}");
        }
        assert!(parse_mib("8X").unwrap_err().contains("512M or 8G"));
    }
}
