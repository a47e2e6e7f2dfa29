//! IPv6 settings of a NIC the agent configures, written through `/proc/sys` before the
//! link goes up and before addresses are added, so nothing races the kernel:
//!
//! - `addr_gen_mode` 0: the link-local address is EUI-64 from the MAC, which the host
//!   side can compute (it is the pod link's own, as the guest NIC has the pod link's MAC);
//! - `accept_dad` 0: no duplicate address detection, so addresses are usable at once (the
//!   addresses the agent adds also carry `IFA_F_NODAD`);
//! - `accept_ra` 0 and `autoconf` 0: router advertisements on the pod's network add no
//!   addresses or routes the host never gave the guest.
//!
//! A kernel without IPv6 (`ipv6.disable=1`) has no `/proc/sys/net/ipv6`: then nothing is
//! written and nothing fails.

use crate::error::{AgentError, Result};
use std::io::ErrorKind;
use std::path::Path;

/// The settings, in the order they are written (`addr_gen_mode` before anything that may
/// bring an address up).
const SETTINGS: &[(&str, &str)] = &[
    ("addr_gen_mode", "0"),
    ("accept_dad", "0"),
    ("accept_ra", "0"),
    ("autoconf", "0"),
];

/// Writes the IPv6 settings of `dev` under `proc_root` (normally `/proc`). A kernel or
/// device without the IPv6 entries is left alone; any other write failure is an error.
pub(super) fn prepare(proc_root: &Path, dev: &str) -> Result<()> {
    let conf = proc_root.join("sys/net/ipv6/conf").join(dev);
    if !conf.is_dir() {
        tracing::info!(
            dev,
            "no IPv6 settings for the device: IPv6 is off in this kernel"
        );
        return Ok(());
    }
    for (key, value) in SETTINGS {
        let path = conf.join(key);
        let current = std::fs::read_to_string(&path);
        if matches!(&current, Ok(s) if s.trim() == *value) {
            continue;
        }
        match std::fs::write(&path, value) {
            Ok(()) => {}
            // An entry this kernel does not have (an older one without addr_gen_mode).
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::info!(dev, key, "IPv6 setting not in this kernel: skipped");
            }
            Err(e) => {
                return Err(AgentError::io(
                    format!("set net.ipv6.conf.{dev}.{key}={value}"),
                    e,
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("snag-v6-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn writes_every_setting_of_the_device() {
        let root = tmp("all");
        let conf = root.join("sys/net/ipv6/conf/eth0");
        std::fs::create_dir_all(&conf).unwrap();
        for (k, _) in SETTINGS {
            std::fs::write(conf.join(k), "1\n").unwrap();
        }
        prepare(&root, "eth0").unwrap();
        for (k, v) in SETTINGS {
            assert_eq!(std::fs::read_to_string(conf.join(k)).unwrap(), *v, "{k}");
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_kernel_without_ipv6_is_not_an_error() {
        let root = tmp("none");
        std::fs::create_dir_all(root.join("sys/net")).unwrap();
        prepare(&root, "eth0").unwrap();
        assert!(!root.join("sys/net/ipv6").exists());
        let _ = std::fs::remove_dir_all(&root);
    }
}
