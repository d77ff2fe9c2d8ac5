//! btrfs ioctls. The only `unsafe` of this crate lives here: each call
//! passes a `#[repr(C)]` struct laid out exactly as the kernel's UAPI
//! (sizes checked by tests against `linux/btrfs.h`), owned by the caller for
//! the duration of the call, with NUL-terminated names that fit their
//! buffers (checked before the call).

#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const VOL_NAME_MAX: usize = 4087;
const VOL_V2_NAME_MAX: usize = 4039;

/// Flag of read-only subvolumes (`BTRFS_SUBVOL_RDONLY`).
pub const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_SEND_FLAG_NO_FILE_DATA`: only metadata, no file contents.
pub const SEND_FLAG_NO_FILE_DATA: u64 = 0x1;
/// Object id of a subvolume's root directory.
pub const FIRST_FREE_OBJECTID: u64 = 256;

const IOC_SUBVOL_CREATE: libc::c_ulong = 0x5000_940e;
const IOC_SNAP_DESTROY: libc::c_ulong = 0x5000_940f;
const IOC_TREE_SEARCH: libc::c_ulong = 0xd000_9411;
const IOC_INO_LOOKUP: libc::c_ulong = 0xd000_9412;
const IOC_SNAP_CREATE_V2: libc::c_ulong = 0x5000_9417;
const IOC_SUBVOL_GETFLAGS: libc::c_ulong = 0x8008_9419;
const IOC_SUBVOL_SETFLAGS: libc::c_ulong = 0x4008_941a;
const IOC_SEND: libc::c_ulong = 0x4048_9426;

const IOC_SYNC: libc::c_ulong = 0x9408;

#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; VOL_NAME_MAX + 1],
}

#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; VOL_V2_NAME_MAX + 1],
}

#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

#[repr(C)]
struct SendArgs {
    send_fd: i64,
    clone_sources_count: u64,
    clone_sources: *const u64,
    parent_root: u64,
    flags: u64,
    version: u32,
    reserved: [u8; 28],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; 4096 - std::mem::size_of::<SearchKey>()],
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn fill_name(dst: &mut [u8], name: &CStr) -> io::Result<()> {
    let b = name.to_bytes();
    if b.len() >= dst.len() || b.is_empty() || b.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad subvolume name",
        ));
    }
    dst[..b.len()].copy_from_slice(b);
    dst[b.len()] = 0;
    Ok(())
}

/// Create subvolume `name` in directory `dir`.
pub fn subvol_create(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut a = VolArgs {
        fd: 0,
        name: [0; VOL_NAME_MAX + 1],
    };
    fill_name(&mut a.name, name)?;
    // SAFETY: `a` is a valid, initialised btrfs_ioctl_vol_args that lives
    // across the call; `dir` is an open fd.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), IOC_SUBVOL_CREATE, &mut a as *mut VolArgs) })
}

/// Snapshot subvolume `src` as `name` in directory `dir`.
pub fn snapshot(
    src: BorrowedFd<'_>,
    dir: BorrowedFd<'_>,
    name: &CStr,
    read_only: bool,
) -> io::Result<()> {
    let mut a = VolArgsV2 {
        fd: src.as_raw_fd() as i64,
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: [0; VOL_V2_NAME_MAX + 1],
    };
    fill_name(&mut a.name, name)?;
    // SAFETY: as above; `src` stays open during the call.
    check(unsafe {
        libc::ioctl(
            dir.as_raw_fd(),
            IOC_SNAP_CREATE_V2,
            &mut a as *mut VolArgsV2,
        )
    })
}

/// Delete subvolume `name` of directory `dir` (also read-only ones).
pub fn subvol_destroy(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let mut a = VolArgs {
        fd: 0,
        name: [0; VOL_NAME_MAX + 1],
    };
    fill_name(&mut a.name, name)?;
    // SAFETY: as for subvol_create.
    check(unsafe { libc::ioctl(dir.as_raw_fd(), IOC_SNAP_DESTROY, &mut a as *mut VolArgs) })
}

pub fn get_flags(subvol: BorrowedFd<'_>) -> io::Result<u64> {
    let mut f: u64 = 0;
    // SAFETY: the kernel writes one u64 into `f`.
    check(unsafe { libc::ioctl(subvol.as_raw_fd(), IOC_SUBVOL_GETFLAGS, &mut f as *mut u64) })?;
    Ok(f)
}

pub fn set_flags(subvol: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    let f: u64 = flags;
    // SAFETY: the kernel reads one u64 from `f`.
    check(unsafe { libc::ioctl(subvol.as_raw_fd(), IOC_SUBVOL_SETFLAGS, &f as *const u64) })
}

/// The id of the subvolume (tree) `fd` is in; with `objectid`, the path of
/// that directory inside it.
pub fn ino_lookup(fd: BorrowedFd<'_>, treeid: u64, objectid: u64) -> io::Result<(u64, Vec<u8>)> {
    let mut a = InoLookupArgs {
        treeid,
        objectid,
        name: [0; 4080],
    };
    // SAFETY: `a` is a valid btrfs_ioctl_ino_lookup_args the kernel fills.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), IOC_INO_LOOKUP, &mut a as *mut InoLookupArgs) })?;
    let n = a.name.iter().position(|&b| b == 0).unwrap_or(a.name.len());
    Ok((a.treeid, a.name[..n].to_vec()))
}

/// The subvolume id of the subvolume whose root is `fd`.
pub fn subvol_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    Ok(ino_lookup(fd, 0, FIRST_FREE_OBJECTID)?.0)
}

/// Write a send stream of the read-only subvolume `fd` to `out`, as the
/// difference from `parent` (a read-only subvolume id) when given.
pub fn send(
    fd: BorrowedFd<'_>,
    out: BorrowedFd<'_>,
    parent: Option<u64>,
    flags: u64,
) -> io::Result<()> {
    let sources: [u64; 1] = [parent.unwrap_or(0)];
    let a = SendArgs {
        send_fd: out.as_raw_fd() as i64,
        clone_sources_count: if parent.is_some() { 1 } else { 0 },
        clone_sources: sources.as_ptr(),
        parent_root: parent.unwrap_or(0),
        flags,
        version: 0,
        reserved: [0; 28],
    };
    // SAFETY: `a` and the `sources` array it points to live across the call;
    // the kernel only reads them and writes the stream to `out`.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), IOC_SEND, &a as *const SendArgs) })
}

/// Commit the file system's transaction (which also wakes the cleaner of
/// deleted subvolumes).
pub fn sync(fs: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: BTRFS_IOC_SYNC takes no argument.
    check(unsafe { libc::ioctl(fs.as_raw_fd(), IOC_SYNC, 0) })
}

/// Subvolumes directly inside subvolume `id`: (child id, directory object
/// id inside the parent, name). Searches ROOT_REF items of the root tree.
pub fn child_subvolumes(fs: BorrowedFd<'_>, id: u64) -> io::Result<Vec<(u64, u64, Vec<u8>)>> {
    const ROOT_TREE_OBJECTID: u64 = 1;
    const ROOT_REF_KEY: u32 = 156;
    let mut out = Vec::new();
    let mut min_offset = 0u64;
    loop {
        let mut a = SearchArgs {
            key: SearchKey {
                tree_id: ROOT_TREE_OBJECTID,
                min_objectid: id,
                max_objectid: id,
                min_offset,
                max_offset: u64::MAX,
                min_transid: 0,
                max_transid: u64::MAX,
                min_type: ROOT_REF_KEY,
                max_type: ROOT_REF_KEY,
                nr_items: 4096,
                unused: 0,
                unused1: 0,
                unused2: 0,
                unused3: 0,
                unused4: 0,
            },
            buf: [0; 4096 - std::mem::size_of::<SearchKey>()],
        };
        // SAFETY: `a` is a valid btrfs_ioctl_search_args; the kernel fills
        // `buf` with at most `buf.len()` bytes and sets `nr_items`.
        check(unsafe { libc::ioctl(fs.as_raw_fd(), IOC_TREE_SEARCH, &mut a as *mut SearchArgs) })?;
        let n = a.key.nr_items;
        if n == 0 {
            break;
        }
        let mut pos = 0usize;
        let mut last_offset = min_offset;
        for _ in 0..n {
            // struct btrfs_ioctl_search_header: transid, objectid, offset
            // (u64), type, len (u32)
            let h = a
                .buf
                .get(pos..pos + 32)
                .ok_or_else(|| io::Error::other("short search result"))?;
            let u64at = |o: usize| u64::from_ne_bytes(h[o..o + 8].try_into().unwrap_or([0; 8]));
            let offset = u64at(16);
            let typ = u32::from_ne_bytes(h[24..28].try_into().unwrap_or([0; 4]));
            let len = u32::from_ne_bytes(h[28..32].try_into().unwrap_or([0; 4])) as usize;
            pos += 32;
            let item = a
                .buf
                .get(pos..pos + len)
                .ok_or_else(|| io::Error::other("short search item"))?;
            pos += len;
            last_offset = offset;
            if typ != ROOT_REF_KEY || item.len() < 18 {
                continue;
            }
            // struct btrfs_root_ref: dirid (u64), sequence (u64), name_len (u16), name
            let dirid = u64::from_le_bytes(item[0..8].try_into().unwrap_or([0; 8]));
            let name_len = u16::from_le_bytes(item[16..18].try_into().unwrap_or([0; 2])) as usize;
            let name = item.get(18..18 + name_len).unwrap_or_default().to_vec();
            out.push((offset, dirid, name));
        }
        if last_offset == u64::MAX {
            break;
        }
        min_offset = last_offset + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_uapi() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
        assert_eq!(std::mem::size_of::<SendArgs>(), 72);
        assert_eq!(std::mem::size_of::<SearchKey>(), 104);
        assert_eq!(std::mem::size_of::<SearchArgs>(), 4096);
    }
}
