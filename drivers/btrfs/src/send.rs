//! Reading a btrfs send stream (v1) for the paths it touches.
//!
//! The stream is a header (`btrfs-stream\0`, version) followed by commands
//! (`len: u32, cmd: u16, crc: u32`, then `len` bytes of TLV attributes
//! `type: u16, len: u16, data`). We only need the paths each command names:
//! the walk that turns them into changes compares both trees at those
//! paths, so temporary ("orphan") names and the order of renames do not
//! matter: a name that exists in neither tree yields nothing.

use std::io::{self, Read};

use strata_core::changes::Filter;

const MAGIC: &[u8] = b"btrfs-stream\0";

const C_RENAME: u16 = 9;
const A_PATH: u16 = 15;
const A_PATH_TO: u16 = 16;
const A_PATH_LINK: u16 = 17;

/// Candidate paths of a send stream.
#[derive(Debug, Default)]
pub struct Touched {
    pub filter: Filter,
    pub commands: u64,
}

fn read_exact_or_eof(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 if n == 0 => return Ok(false),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "send stream ends inside a command",
                ));
            }
            k => n += k,
        }
    }
    Ok(true)
}

/// Read a whole send stream and collect the paths it names.
pub fn parse(r: &mut dyn Read) -> io::Result<Touched> {
    let mut head = [0u8; 17];
    if !read_exact_or_eof(r, &mut head)? || &head[..13] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a btrfs send stream",
        ));
    }
    let mut t = Touched::default();
    let mut buf = Vec::new();
    loop {
        let mut ch = [0u8; 10];
        if !read_exact_or_eof(r, &mut ch)? {
            break;
        }
        let len = u32::from_le_bytes([ch[0], ch[1], ch[2], ch[3]]) as usize;
        let cmd = u16::from_le_bytes([ch[4], ch[5]]);
        if len > 1 << 26 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "send command too large",
            ));
        }
        buf.resize(len, 0);
        if !read_exact_or_eof(r, &mut buf)? && len > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "send stream ends inside a command",
            ));
        }
        t.commands += 1;
        let mut pos = 0;
        while pos + 4 <= buf.len() {
            let typ = u16::from_le_bytes([buf[pos], buf[pos + 1]]);
            let l = u16::from_le_bytes([buf[pos + 2], buf[pos + 3]]) as usize;
            let data = buf.get(pos + 4..pos + 4 + l).unwrap_or_default();
            pos += 4 + l;
            match typ {
                A_PATH | A_PATH_LINK => {
                    t.filter.insert(data);
                }
                A_PATH_TO if cmd == C_RENAME => {
                    // whatever was moved here is new at this path, with
                    // everything below it
                    t.filter.insert_all(data);
                }
                A_PATH_TO => {
                    t.filter.insert(data);
                }
                _ => {}
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(c: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, d) in attrs {
            body.extend_from_slice(&t.to_le_bytes());
            body.extend_from_slice(&(d.len() as u16).to_le_bytes());
            body.extend_from_slice(d);
        }
        let mut v = (body.len() as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&c.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend(body);
        v
    }

    #[test]
    fn collects_paths_and_rename_targets() {
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&1u32.to_le_bytes());
        s.extend(cmd(2, &[(A_PATH, b"snap")]));
        s.extend(cmd(3, &[(A_PATH, b"o257-5-0")]));
        s.extend(cmd(
            C_RENAME,
            &[(A_PATH, b"o257-5-0"), (A_PATH_TO, b"etc/new")],
        ));
        s.extend(cmd(11, &[(A_PATH, b"etc/old")]));
        s.extend(cmd(21, &[]));
        let t = parse(&mut &s[..]).unwrap();
        assert_eq!(t.commands, 5);
        let dbg = format!("{:?}", t.filter);
        assert!(dbg.contains("all: true"), "{dbg}");
    }

    #[test]
    fn refuses_garbage() {
        assert!(parse(&mut &b"not a stream at all"[..]).is_err());
    }
}
