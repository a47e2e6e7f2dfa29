//! Linux capabilities by name, and applying a process's sets (bounding, effective,
//! permitted, inheritable, ambient) with raw `capset(2)`/`prctl(2)`.

use serde::{Deserialize, Serialize};
use std::io;

/// Capability sets as bit masks (bit N = capability number N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

/// Capability names, index = capability number.
const NAMES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The number of a capability name like `CAP_NET_RAW` (case-insensitive; the `CAP_`
/// prefix may be left out).
pub fn number(name: &str) -> Option<u32> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// A set of names as a bit mask; an unknown name is an error naming it.
pub fn mask(names: &[String]) -> Result<u64, String> {
    let mut m = 0u64;
    for n in names {
        let c = number(n).ok_or_else(|| format!("unknown capability {n:?}"))?;
        m |= 1 << c;
    }
    Ok(m)
}

/// The highest capability the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Drops every capability outside `bounding` from the bounding set (needs `CAP_SETPCAP`,
/// so before the user switch). Capabilities above `last` are left alone.
pub fn drop_bounding(bounding: u64, last: u32) -> io::Result<()> {
    for c in 0..=last.min(63) {
        if bounding & (1 << c) == 0 {
            // SAFETY: prctl with integer arguments only.
            check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0, 0, 0) })?;
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective, permitted and inheritable sets, then raises the ambient ones
/// (after the user switch). Capabilities above `last` are left out.
pub fn apply(sets: &CapSets, last: u32) -> io::Result<()> {
    let known = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    let (e, p, i) = (
        sets.effective & known,
        sets.permitted & known,
        sets.inheritable & known,
    );
    let mut hdr = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: e as u32,
            permitted: p as u32,
            inheritable: i as u32,
        },
        CapData {
            effective: (e >> 32) as u32,
            permitted: (p >> 32) as u32,
            inheritable: (i >> 32) as u32,
        },
    ];
    // SAFETY: capset with a v3 header and the two data words it reads.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })?;
    for c in 0..=last.min(63) {
        if sets.ambient & (1 << c) != 0 {
            // SAFETY: prctl with integer arguments only.
            check(unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    c as libc::c_ulong,
                    0,
                    0,
                )
            })
            .map_err(|e| {
                let name = NAMES.get(c as usize).copied().unwrap_or("?");
                io::Error::new(e.kind(), format!("ambient {name}: {e}"))
            })?;
        }
    }
    Ok(())
}

/// `PR_SET_KEEPCAPS`: whether the permitted set survives a switch away from uid 0.
pub fn keep_caps(on: bool) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0, 0, 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_numbers() {
        assert_eq!(number("CAP_NET_RAW"), Some(13));
        assert_eq!(number("cap_sys_admin"), Some(21));
        assert_eq!(number("CHOWN"), Some(0));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("CAP_NOPE"), None);
        assert_eq!(
            mask(&["CAP_CHOWN".into(), "CAP_KILL".into()]),
            Ok(0b10_0001)
        );
        assert!(mask(&["CAP_NOPE".into()]).unwrap_err().contains("CAP_NOPE"));
    }
}
