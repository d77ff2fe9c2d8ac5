//! Sparse files: GNU's old format (type `S`, segments in the header and in
//! extension blocks) and the PAX formats 0.0, 0.1 and 1.0 (a map in
//! records, or at the start of the data). The data in the archive is the
//! segments back to back; holes are never stored.

use std::io::Read;

use tar::{EntryType, Header};

use super::pax::SparseRecords;
use super::read::read_exact_or_eof;
use super::{
    BLOCK, Kind, MAX_SPARSE_ENTRIES, RawSink, Segment, TarReader, bad, bad_io, num, to_sink,
};
use crate::error::Result;

/// How an entry's data is laid out.
#[derive(Debug)]
pub(super) struct Layout {
    /// The file's real size.
    pub size: u64,
    /// Bytes of data in the archive after the header (and any map).
    pub data_size: u64,
    pub segments: Option<Vec<Segment>>,
    /// The real name of a PAX sparse file (its header holds a made-up one).
    pub name: Option<Vec<u8>>,
}

/// Check that segments are in order, inside the file, and sum them.
fn validate(map: &[Segment], real_size: u64) -> Result<u64> {
    let mut end = 0u64;
    let mut total = 0u64;
    for s in map {
        if s.offset < end {
            return Err(bad("sparse map segments overlap or are out of order"));
        }
        end = s
            .offset
            .checked_add(s.len)
            .ok_or_else(|| bad("sparse map offset overflows"))?;
        if end > real_size {
            return Err(bad("sparse map reaches past the file's size"));
        }
        total = total
            .checked_add(s.len)
            .ok_or_else(|| bad("sparse map size overflows"))?;
    }
    Ok(total)
}

/// The map must describe exactly the data the entry holds.
fn checked(segs: Vec<Segment>, real: u64, data_size: u64) -> Result<Vec<Segment>> {
    let total = validate(&segs, real)?;
    if total != data_size {
        return Err(bad(format!(
            "sparse map describes {total} bytes but the entry holds {data_size}"
        )));
    }
    Ok(segs)
}

fn push(segs: &mut Vec<Segment>, s: &tar::GnuSparseHeader) -> Result<()> {
    if s.is_empty() {
        return Ok(());
    }
    let offset = num::unsigned(&s.offset).ok_or_else(|| bad("bad sparse offset"))?;
    let len = num::unsigned(&s.numbytes).ok_or_else(|| bad("bad sparse length"))?;
    if segs.len() >= MAX_SPARSE_ENTRIES {
        return Err(bad("sparse map too long"));
    }
    segs.push(Segment { offset, len });
    Ok(())
}

impl<R: Read> TarReader<R> {
    /// The layout of an entry of kind `kind` whose header declares
    /// `data_size` bytes, reading any sparse map from the stream.
    pub(super) fn sparse_layout(
        &mut self,
        h: &Header,
        kind: Kind,
        data_size: u64,
        recs: SparseRecords,
        at: u64,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<Layout> {
        let plain = Layout {
            size: data_size,
            data_size,
            segments: None,
            name: None,
        };
        if h.entry_type() == EntryType::GNUSparse {
            let (segs, real) = self.gnu_old(h, at, raw)?;
            return Ok(Layout {
                size: real,
                segments: Some(checked(segs, real, data_size)?),
                ..plain
            });
        }
        if kind != Kind::File || !recs.any() {
            return Ok(plain);
        }
        self.pax_sparse(recs, data_size, raw)
    }

    /// GNU's old sparse format: four segments in the header, more in
    /// extension blocks after it.
    fn gnu_old(
        &mut self,
        h: &Header,
        at: u64,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<(Vec<Segment>, u64)> {
        let gnu = h
            .as_gnu()
            .ok_or_else(|| bad(format!("sparse entry without a GNU header at offset {at}")))?;
        let mut segs = Vec::new();
        for s in gnu.sparse.iter() {
            push(&mut segs, s)?;
        }
        let mut ext = gnu.is_extended();
        while ext {
            let mut b = [0u8; 512];
            if !self.read_block(&mut b, raw)? {
                return Err(bad("truncated archive inside a sparse header"));
            }
            let mut eh = tar::GnuExtSparseHeader::new();
            eh.as_mut_bytes().copy_from_slice(&b);
            for s in eh.sparse.iter() {
                push(&mut segs, s)?;
            }
            ext = eh.is_extended();
        }
        let real = num::unsigned(&gnu.realsize).ok_or_else(|| bad("bad sparse real size"))?;
        Ok((segs, real))
    }

    /// PAX sparse formats: 0.0 (offset/numbytes records), 0.1 (one map
    /// record), 1.0 (the map at the start of the data).
    fn pax_sparse(
        &mut self,
        recs: SparseRecords,
        mut data_size: u64,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<Layout> {
        let real = recs
            .real_size
            .ok_or_else(|| bad("PAX sparse file without GNU.sparse.size"))?;
        let nums = if recs.major == Some(1) {
            let (nums, used) = self.read_map_10(data_size, raw)?;
            data_size -= used;
            nums
        } else if let Some(m) = recs.map {
            m
        } else {
            recs.pairs
        };
        if nums.len() % 2 != 0 {
            return Err(bad("sparse map has an odd number of values"));
        }
        let segs = nums
            .chunks(2)
            .map(|c| Segment {
                offset: c[0],
                len: c[1],
            })
            .collect();
        Ok(Layout {
            size: real,
            data_size,
            segments: Some(checked(segs, real, data_size)?),
            name: recs.name,
        })
    }

    /// Format 1.0's map: decimal numbers, one per line (a count, then
    /// offset/size pairs), padded to a block boundary. Returns the numbers
    /// and the bytes the map took.
    fn read_map_10(
        &mut self,
        data_size: u64,
        raw: &mut Option<&mut dyn RawSink>,
    ) -> Result<(Vec<u64>, u64)> {
        let mut nums: Vec<u64> = Vec::new();
        let mut want: Option<u64> = None;
        let mut used = 0u64;
        let mut cur: Vec<u8> = Vec::new();
        loop {
            if used + BLOCK > data_size {
                return Err(bad("sparse map runs past the entry's data"));
            }
            let mut b = [0u8; 512];
            let n = read_exact_or_eof(&mut self.r, &mut b).map_err(bad_io)?;
            self.pos += n as u64;
            to_sink(raw, &b[..n])?;
            if n < 512 {
                return Err(bad("truncated archive inside a sparse map"));
            }
            used += BLOCK;
            for &c in b.iter() {
                if c != b'\n' {
                    if cur.len() > 20 {
                        return Err(bad("sparse map value too long"));
                    }
                    cur.push(c);
                    continue;
                }
                let v: u64 = super::pax::parse_num(&cur, "sparse map value")?;
                cur.clear();
                match want {
                    None if v as usize > MAX_SPARSE_ENTRIES => {
                        return Err(bad("sparse map too long"));
                    }
                    None => want = Some(v * 2),
                    Some(_) => nums.push(v),
                }
                if want == Some(nums.len() as u64) {
                    return Ok((nums, used));
                }
            }
        }
    }
}
