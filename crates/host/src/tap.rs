//! tap devices through the `TUNSETIFF` ioctl (rtnetlink cannot create them), and macvtap
//! character devices.

use crate::error::{HostError, Result};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;

/// Size of the `virtio_net_hdr` that prefixes every frame on a tap opened with
/// `IFF_VNET_HDR` (the kernel's default header size).
pub const VNET_HDR_LEN: usize = 10;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// How to open a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapOptions {
    /// Number of queues; more than one opens the tap with `IFF_MULTI_QUEUE`, one fd each.
    pub queues: u16,
    /// Open with `IFF_VNET_HDR` (what a virtio-net backend wants).
    pub vnet_hdr: bool,
}

impl Default for TapOptions {
    fn default() -> Self {
        TapOptions {
            queues: 1,
            vnet_hdr: true,
        }
    }
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(HostError::InvalidArgument(format!(
            "invalid interface name {name:?} (1 to 15 bytes, no '/', space or NUL)"
        )));
    }
    Ok(())
}

/// Creates (or attaches to) the tap `name` in the calling thread's network namespace and
/// returns one fd per queue. A newly created tap vanishes with its last fd unless
/// [`set_persist`] is called.
pub fn open_tap(name: &str, opts: TapOptions) -> Result<Vec<OwnedFd>> {
    check_ifname(name)?;
    if opts.queues == 0 {
        return Err(HostError::InvalidArgument(
            "queues must be at least 1".into(),
        ));
    }
    let mut flags = IFF_TAP | IFF_NO_PI;
    if opts.vnet_hdr {
        flags |= IFF_VNET_HDR;
    }
    if opts.queues > 1 {
        flags |= IFF_MULTI_QUEUE;
    }
    let mut fds = Vec::with_capacity(opts.queues as usize);
    for _ in 0..opts.queues {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| HostError::Tap {
                name: name.to_string(),
                op: "open /dev/net/tun",
                source: e,
            })?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(HostError::Tap {
                name: name.to_string(),
                op: "TUNSETIFF",
                source: io::Error::last_os_error(),
            });
        }
        fds.push(OwnedFd::from(f));
    }
    Ok(fds)
}

/// `struct ifreq` as `SIOCGIFINDEX` fills it: the name, then the index.
#[repr(C)]
struct IfReqIndex {
    name: [u8; libc::IFNAMSIZ],
    index: libc::c_int,
    _pad: [u8; 20],
}

/// The interface index of the link `name` in the namespace of `sock` (any socket opened
/// there, a netlink one too), by the `SIOCGIFINDEX` ioctl: no netlink round trip.
pub fn ifindex(sock: BorrowedFd<'_>, name: &str) -> Result<u32> {
    check_ifname(name)?;
    let mut req = IfReqIndex {
        name: [0; libc::IFNAMSIZ],
        index: 0,
        _pad: [0; 20],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFINDEX reads the name and writes the index of a struct ifreq, which
    // IfReqIndex lays out.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFINDEX as _, &mut req) };
    if rc < 0 || req.index <= 0 {
        return Err(HostError::Tap {
            name: name.to_string(),
            op: "SIOCGIFINDEX",
            source: io::Error::last_os_error(),
        });
    }
    Ok(req.index as u32)
}

/// Makes a tap persistent (it survives its fds) or not.
pub fn set_persist(fd: &OwnedFd, name: &str, persist: bool) -> Result<()> {
    // SAFETY: TUNSETPERSIST takes an integer argument by value.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST as _, persist as libc::c_ulong) };
    if rc < 0 {
        return Err(HostError::Tap {
            name: name.to_string(),
            op: "TUNSETPERSIST",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Reads a macvtap's character device number (`major:minor`) from sysfs as seen from the
/// calling thread's network namespace. sysfs shows the devices of the namespace it was
/// mounted from, so this mounts a private sysfs in a private mount namespace of this thread:
/// call it on a throw-away thread inside the target namespace (see `NetNs::run`).
pub fn macvtap_devt_in_current_netns(name: &str, index: u32) -> Result<(u32, u32)> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let err = |op, source| HostError::Tap {
        name: name.to_string(),
        op,
        source,
    };
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
        .map_err(|e| err("unshare mount namespace", e.into()))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| err("make mounts private", e.into()))?;
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| err("mount sysfs", e.into()))?;
    let p = format!("/sys/class/net/{name}/macvtap/tap{index}/dev");
    let s = std::fs::read_to_string(&p).map_err(|e| err("read device number", e))?;
    let (maj, min) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| err("parse device number", io::Error::other(s.clone())))?;
    let parse = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| err("parse device number", io::Error::other(s.clone())))
    };
    Ok((parse(maj)?, parse(min)?))
}

/// Returns a character-device path for a macvtap: `/dev/tap<index>` when devtmpfs made it
/// and it is this very device, otherwise a node sandnet makes under `private_dir`
/// (`/dev/tapN` names collide between namespaces, since ifindexes are per namespace).
pub fn macvtap_device_path(index: u32, devt: (u32, u32), private_dir: &Path) -> Result<PathBuf> {
    let want = nix::sys::stat::makedev(devt.0 as u64, devt.1 as u64);
    let dev = PathBuf::from(format!("/dev/tap{index}"));
    if let Ok(m) = std::fs::metadata(&dev) {
        if m.file_type().is_char_device() && m.rdev() == want {
            return Ok(dev);
        }
    }
    std::fs::create_dir_all(private_dir).map_err(|e| HostError::Tap {
        name: private_dir.display().to_string(),
        op: "create device directory",
        source: e,
    })?;
    let node = private_dir.join(format!("tap{index}"));
    let _ = std::fs::remove_file(&node);
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        want,
    )
    .map_err(|e| HostError::Tap {
        name: node.display().to_string(),
        op: "mknod",
        source: e.into(),
    })?;
    Ok(node)
}

/// Opens a macvtap character device once per queue.
pub fn open_macvtap(path: &Path, queues: u16) -> Result<Vec<OwnedFd>> {
    (0..queues.max(1))
        .map(|_| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map(OwnedFd::from)
                .map_err(|e| HostError::Tap {
                    name: path.display().to_string(),
                    op: "open",
                    source: e,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(std::mem::size_of::<IfReqIndex>(), 40);
    }

    #[test]
    fn bad_names_are_rejected_before_any_syscall() {
        for n in ["", "0123456789abcdef", "a/b", "a b"] {
            assert!(matches!(
                open_tap(n, TapOptions::default()),
                Err(HostError::InvalidArgument(_))
            ));
        }
    }
}
