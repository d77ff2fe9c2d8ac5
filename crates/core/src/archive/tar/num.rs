//! Numeric header fields, parsed strictly.
//!
//! A field is octal text (NUL- or space-terminated), or, when its first
//! byte has the high bit set, a base-256 two's-complement number (GNU and
//! star). A value that does not fit in 64 bits is an error, never wrapped or
//! truncated (the `tar` crate keeps only the last 8 bytes of a 12-byte
//! base-256 field). This follows Go's `archive/tar` (`parseNumeric`).

/// The signed value of a numeric field; `None` when the field is malformed
/// or its value does not fit in an `i64`.
pub fn parse(field: &[u8]) -> Option<i64> {
    match field.first() {
        Some(b) if b & 0x80 != 0 => base256(field),
        _ => octal(field),
    }
}

/// Base-256: the high bit of the first byte marks the form, the bit after
/// it is the sign; the rest is big-endian two's complement.
fn base256(field: &[u8]) -> Option<i64> {
    // -a-1 == !a: invert a negative number's bytes and parse it as positive
    let inv = if field[0] & 0x40 != 0 { 0xff } else { 0 };
    let mut x: u64 = 0;
    for (i, &c) in field.iter().enumerate() {
        let mut c = c ^ inv;
        if i == 0 {
            c &= 0x7f;
        }
        if x >> 56 != 0 {
            return None; // another byte would overflow 64 bits
        }
        x = (x << 8) | u64::from(c);
    }
    if x >> 63 != 0 {
        return None;
    }
    let v = x as i64;
    Some(if inv == 0xff { !v } else { v })
}

/// Octal text, trimmed of spaces and NULs; empty means 0.
fn octal(field: &[u8]) -> Option<i64> {
    let start = field.iter().position(|&b| b != b' ' && b != 0);
    let Some(start) = start else { return Some(0) };
    let end = field[start..]
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .map_or(field.len(), |n| start + n);
    // after the number only spaces and NULs may follow
    if field[end..].iter().any(|&b| b != b' ' && b != 0) {
        return None;
    }
    let s = std::str::from_utf8(&field[start..end]).ok()?;
    let v = u64::from_str_radix(s, 8).ok()?;
    i64::try_from(v).ok()
}

/// A field that must be a non-negative value fitting `T`.
pub fn unsigned<T: TryFrom<i64>>(field: &[u8]) -> Option<T> {
    parse(field)
        .filter(|v| *v >= 0)
        .and_then(|v| T::try_from(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields() {
        assert_eq!(parse(b"0000644\0"), Some(0o644));
        assert_eq!(parse(b"     17 "), Some(0o17));
        assert_eq!(parse(b"\0\0\0\0\0\0\0\0"), Some(0));
        assert_eq!(parse(b"0000x44\0"), None);
        assert_eq!(parse(b"12 34\0\0\0"), None);
    }

    #[test]
    fn base256_fields() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 5;
        assert_eq!(parse(&f), Some(5));
        // the largest i64
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..].copy_from_slice(&i64::MAX.to_be_bytes());
        assert_eq!(parse(&f), Some(i64::MAX));
        // one bit more: the tar crate would drop it, we refuse
        f[3] = 1;
        assert_eq!(parse(&f), None);
        // 2^63 does not fit either
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4] = 0x80;
        assert_eq!(parse(&f), None);
        // negative: -1 and -2
        assert_eq!(parse(&[0xff; 12]), Some(-1));
        let mut f = [0xffu8; 8];
        f[7] = 0xfe;
        assert_eq!(parse(&f), Some(-2));
    }

    #[test]
    fn ranges_of_types() {
        assert_eq!(unsigned::<u32>(b"37777777777\0"), Some(u32::MAX));
        let mut f = [0u8; 8];
        f[0] = 0x80;
        f[3] = 1; // 2^32
        assert_eq!(unsigned::<u32>(&f), None);
        assert_eq!(unsigned::<u64>(&[0xff; 12]), None);
    }
}
