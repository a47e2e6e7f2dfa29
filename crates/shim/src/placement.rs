//! Where a new shim daemon goes, as containerd's runc shim v2 places its own (`StartShim`
//! in containerd 1.6): into the `ShimCgroup` of runc-type runtime options when containerd
//! hands such options to `start` on its stdin, and to containerd's OOM score + 1 (its
//! `AdjustOOMScore`), so the kernel's OOM killer takes a shim before containerd. The
//! sandbox supervisors and QEMUs the daemon starts later inherit both.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options as RuncOptions;

/// The type of runc's runtime options (`io.containerd.runc.v2`), the only ones with a
/// `ShimCgroup`; CRI gives other runtime types `runtimeoptions.v1.Options` (`ConfigPath`).
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// Why a shim daemon could not be placed.
#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    /// containerd's runtime options on stdin could not be decoded.
    #[error("runtime options on stdin: {0}")]
    Options(#[source] containerd_shim_protos::protobuf::Error),
    /// Moving the daemon into its cgroup, or setting its OOM score, failed.
    #[error("{what}: {source}")]
    Place {
        /// Which step.
        what: String,
        /// The library's error.
        #[source]
        source: containerd_shim::Error,
    },
}

/// The `ShimCgroup` of containerd's runtime options (`stdin` of `start`: a protobuf `Any`),
/// `None` when there are no options, they are not runc's, or the field is empty.
pub fn shim_cgroup(stdin: &[u8]) -> Result<Option<String>, PlacementError> {
    if stdin.is_empty() {
        return Ok(None);
    }
    let any = Any::parse_from_bytes(stdin).map_err(PlacementError::Options)?;
    if !any.type_url.ends_with(RUNC_OPTIONS) {
        return Ok(None);
    }
    let opts = RuncOptions::parse_from_bytes(&any.value).map_err(PlacementError::Options)?;
    Ok(Some(opts.shim_cgroup).filter(|c| !c.is_empty()))
}

/// Places daemon `pid` (a child of this `start` process, whose parent is containerd):
/// into the options' `ShimCgroup` if any, and at containerd's OOM score + 1 (unless that
/// is already the maximum).
pub fn place_daemon(pid: u32, stdin: &[u8]) -> Result<(), PlacementError> {
    if let Some(cgroup) = shim_cgroup(stdin)? {
        containerd_shim::cgroup::add_task_to_cgroup(&cgroup, pid).map_err(|source| {
            PlacementError::Place {
                what: format!("move shim {pid} into cgroup {cgroup}"),
                source,
            }
        })?;
    }
    containerd_shim::cgroup::adjust_oom_score(pid).map_err(|source| PlacementError::Place {
        what: format!("set the OOM score of shim {pid} to containerd's + 1"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Vec<u8> {
        Any {
            type_url: type_url.into(),
            value,
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap()
    }

    #[test]
    fn runc_options_give_the_shim_cgroup() {
        let opts = RuncOptions {
            shim_cgroup: "/pods/shims".into(),
            binary_name: "runc".into(),
            ..Default::default()
        };
        let b = any(RUNC_OPTIONS, opts.write_to_bytes().unwrap());
        assert_eq!(shim_cgroup(&b).unwrap().as_deref(), Some("/pods/shims"));
        let empty = any(
            RUNC_OPTIONS,
            RuncOptions::default().write_to_bytes().unwrap(),
        );
        assert_eq!(shim_cgroup(&empty).unwrap(), None);
    }

    #[test]
    fn other_options_or_none_give_no_cgroup() {
        assert_eq!(shim_cgroup(&[]).unwrap(), None);
        // CRI's runtimeoptions.v1.Options: type_url = 1, config_path = 2.
        let value = [b"\x12\x05/a/b/".as_slice(), b"c"].concat();
        let b = any("runtimeoptions.v1.Options", value);
        assert_eq!(shim_cgroup(&b).unwrap(), None);
    }

    #[test]
    fn garbage_on_stdin_is_an_error() {
        assert!(shim_cgroup(b"\xff\xff\xff").is_err());
        let b = any(RUNC_OPTIONS, b"\x0a\xff".to_vec());
        assert!(shim_cgroup(&b).is_err());
    }
}
