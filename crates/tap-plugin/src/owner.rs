//! Giving the tap to a non-root VMM: `TUNSETOWNER`/`TUNSETGROUP` on a tap (tcfilter), or
//! the owner of the macvtap's character device (macvtap).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// `_IOW('T', 204, int)`.
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
/// `_IOW('T', 206, int)`.
const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;

/// Sets the owner and/or group of the (persistent) tap behind `fd`: that user or group may
/// then open it by name without `CAP_NET_ADMIN`.
pub fn set_tap_owner(fd: &OwnedFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    for (req, v) in [(TUNSETOWNER, uid), (TUNSETGROUP, gid)] {
        if let Some(v) = v {
            // SAFETY: both ioctls take an integer argument by value.
            if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, v as libc::c_ulong) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Sets the owner and/or group of a macvtap's device node.
pub fn set_device_owner(path: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    if uid.is_none() && gid.is_none() {
        return Ok(());
    }
    std::os::unix::fs::chown(path, uid, gid)
}
