//! PAX extended headers: records (`LEN KEY=VALUE\n`), times with
//! nanoseconds, and the folding of global and per-entry records into the
//! fields of one entry.

use super::{MAX_SPARSE_ENTRIES, bad};
use crate::error::Result;

/// One `KEY=VALUE` record.
pub type Record = (Vec<u8>, Vec<u8>);

/// Split an extended header's data into records.
pub fn parse_records(data: &[u8]) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break; // trailing NULs some writers leave
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("PAX record without a length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("PAX record length is not a number"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("PAX record length does not match its content"));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Append one record; its length field counts itself.
pub fn push_record(out: &mut Vec<u8>, key: &[u8], val: &[u8]) {
    let body = key.len() + val.len() + 3; // ' ' '=' '\n'
    let mut len = body + 1;
    loop {
        let digits = len.to_string().len();
        if digits + body == len {
            break;
        }
        len = digits + body;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(val);
    out.push(b'\n');
}

/// Parse a PAX time `SECONDS[.FRACTION]` (may be negative).
pub fn parse_time(v: &[u8]) -> Result<(i64, u32)> {
    let s = std::str::from_utf8(v).map_err(|_| bad("PAX time is not text"))?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs
        .parse()
        .map_err(|_| bad(format!("PAX time {s:?} is not a number that fits")))?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("PAX time {s:?} is not a number")));
    }
    let mut ns: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        ns += u32::from(b - b'0') * 10u32.pow(8 - i as u32);
    }
    if !neg {
        return Ok((secs, ns));
    }
    if ns == 0 {
        Ok((-secs, 0))
    } else {
        Ok((-secs - 1, 1_000_000_000 - ns))
    }
}

/// A decimal number that fits `T`.
pub fn parse_num<T: std::str::FromStr>(v: &[u8], what: &str) -> Result<T> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            bad(format!(
                "{what} {} is not a number in range",
                crate::error::Name(v.iter().copied().take(40).collect())
            ))
        })
}

/// Decode `%XX` escapes (LIBARCHIVE.xattr names).
fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' && i + 2 < v.len() {
            let h = std::str::from_utf8(&v[i + 1..i + 3])
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok());
            if let Some(b) = h {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

// Written by hand: 20 lines for the one base64 field PAX has, instead of a
// dependency.
fn base64_decode(v: &[u8]) -> Result<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let mut out = Vec::with_capacity(v.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for &c in v {
        if c == b'=' || c == b'\n' {
            continue;
        }
        let d = val(c).ok_or_else(|| bad("LIBARCHIVE.xattr value is not base64"))?;
        acc = (acc << 6) | d;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// The sparse-file records of a PAX header (formats 0.0, 0.1 and 1.0).
#[derive(Debug, Default)]
pub struct SparseRecords {
    /// 1.0: `GNU.sparse.name`, the real path.
    pub name: Option<Vec<u8>>,
    /// `GNU.sparse.realsize` / `GNU.sparse.size`.
    pub real_size: Option<u64>,
    /// `GNU.sparse.major`: 1 for format 1.0.
    pub major: Option<u64>,
    /// 0.1: `GNU.sparse.map` as a flat list of numbers.
    pub map: Option<Vec<u64>>,
    /// 0.0: repeated `GNU.sparse.offset` / `GNU.sparse.numbytes`.
    pub pairs: Vec<u64>,
}

impl SparseRecords {
    /// Whether any sparse record was given.
    pub fn any(&self) -> bool {
        self.major.is_some() || self.map.is_some() || !self.pairs.is_empty()
    }
}

/// What the PAX records of one entry (globals first) set.
#[derive(Debug, Default)]
pub struct Fields {
    /// `path`.
    pub path: Option<Vec<u8>>,
    /// `linkpath`.
    pub link: Option<Vec<u8>>,
    /// `size`.
    pub size: Option<u64>,
    /// `uid`.
    pub uid: Option<u64>,
    /// `gid`.
    pub gid: Option<u64>,
    /// `mtime`.
    pub mtime: Option<(i64, u32)>,
    /// `atime`.
    pub atime: Option<(i64, u32)>,
    /// `SCHILY.devmajor`.
    pub dev_major: Option<u32>,
    /// `SCHILY.devminor`.
    pub dev_minor: Option<u32>,
    /// One value per name (later records win), sorted by name.
    pub xattrs: Vec<Record>,
    /// The `GNU.sparse.*` records.
    pub sparse: SparseRecords,
}

impl Fields {
    /// Fold records in order; later ones win.
    pub fn fold(records: impl Iterator<Item = Record>) -> Result<Fields> {
        let mut f = Fields::default();
        let mut xattrs = std::collections::BTreeMap::new();
        for (k, v) in records {
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                xattrs.insert(name.to_vec(), v);
            } else if let Some(name) = k.strip_prefix(b"LIBARCHIVE.xattr.") {
                xattrs.insert(percent_decode(name), base64_decode(&v)?);
            } else {
                f.set(&k, v)?;
            }
        }
        f.xattrs = xattrs.into_iter().collect();
        Ok(f)
    }

    fn set(&mut self, k: &[u8], v: Vec<u8>) -> Result<()> {
        match k {
            b"path" => self.path = Some(v),
            b"linkpath" => self.link = Some(v),
            b"size" => self.size = Some(parse_num(&v, "PAX size")?),
            b"uid" => self.uid = Some(parse_num(&v, "PAX uid")?),
            b"gid" => self.gid = Some(parse_num(&v, "PAX gid")?),
            b"mtime" => self.mtime = Some(parse_time(&v)?),
            b"atime" => self.atime = Some(parse_time(&v)?),
            b"SCHILY.devmajor" => self.dev_major = Some(parse_num(&v, "PAX devmajor")?),
            b"SCHILY.devminor" => self.dev_minor = Some(parse_num(&v, "PAX devminor")?),
            _ => self.set_sparse(k, v)?,
        }
        Ok(())
    }

    fn set_sparse(&mut self, k: &[u8], v: Vec<u8>) -> Result<()> {
        let s = &mut self.sparse;
        match k {
            b"GNU.sparse.name" => s.name = Some(v),
            b"GNU.sparse.size" | b"GNU.sparse.realsize" => {
                s.real_size = Some(parse_num(&v, "GNU.sparse.size")?)
            }
            b"GNU.sparse.major" => s.major = Some(parse_num(&v, "GNU.sparse.major")?),
            b"GNU.sparse.map" => {
                let mut m = Vec::new();
                for part in v.split(|&b| b == b',') {
                    if m.len() > 2 * MAX_SPARSE_ENTRIES {
                        return Err(bad("sparse map too long"));
                    }
                    m.push(parse_num(part, "GNU.sparse.map")?);
                }
                s.map = Some(m);
            }
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => {
                if s.pairs.len() > 2 * MAX_SPARSE_ENTRIES {
                    return Err(bad("sparse map too long"));
                }
                s.pairs.push(parse_num(&v, "GNU.sparse.offset")?);
            }
            _ => tracing::trace!(key = %crate::error::Name(k.to_vec()), "ignoring PAX record"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_parsing() {
        assert_eq!(
            parse_time(b"1704067200.5").unwrap(),
            (1704067200, 500_000_000)
        );
        assert_eq!(parse_time(b"1.000000001").unwrap(), (1, 1));
        assert_eq!(parse_time(b"-1.5").unwrap(), (-2, 500_000_000));
        assert_eq!(parse_time(b"12").unwrap(), (12, 0));
        assert!(parse_time(b"x").is_err());
        assert!(parse_time(b"99999999999999999999").is_err());
    }

    #[test]
    fn record_length_counts_itself() {
        let mut v = Vec::new();
        push_record(&mut v, b"path", &[b'a'; 93]);
        let recs = parse_records(&v).unwrap();
        assert_eq!(recs[0].1.len(), 93);
        let s = std::str::from_utf8(&v).unwrap();
        let (len, _) = s.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), v.len());
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        let recs = vec![(b"uid".to_vec(), b"18446744073709551616".to_vec())];
        assert!(Fields::fold(recs.into_iter()).is_err());
        let recs = vec![(b"SCHILY.devmajor".to_vec(), b"4294967296".to_vec())];
        assert!(Fields::fold(recs.into_iter()).is_err());
    }

    #[test]
    fn later_xattr_records_win() {
        let recs = vec![
            (b"SCHILY.xattr.user.b".to_vec(), b"1".to_vec()),
            (b"LIBARCHIVE.xattr.user.a".to_vec(), b"eA==".to_vec()),
            (b"SCHILY.xattr.user.b".to_vec(), b"2".to_vec()),
        ];
        let f = Fields::fold(recs.into_iter()).unwrap();
        assert_eq!(
            f.xattrs,
            vec![
                (b"user.a".to_vec(), b"x".to_vec()),
                (b"user.b".to_vec(), b"2".to_vec())
            ]
        );
    }
}
