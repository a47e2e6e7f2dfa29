//! The sandbox's shared file systems (`Storage` entries of CreateContainer): mounted once,
//! where nothing is mounted yet, and kept (all containers of the sandbox share them).

use super::spec::parse_options;
use nix::mount::{mount, MsFlags};
use sandnet_agent_proto::agent::Storage;
use sandnet_agent_proto::ttrpc::Code;
use std::path::Path;

/// One line of `/proc/self/mountinfo`: the mount point and the file system type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: String,
    /// File system type.
    pub fstype: String,
}

/// Decodes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).filter(|d| {
            b[i] == b'\\'
                && d.iter()
                    .all(|c| (b'0'..=b'3').contains(&d[0]) && (b'0'..=b'7').contains(c))
        });
        if let Some(d) = oct {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(MountEntry {
                mount_point: unescape(f.get(4)?),
                fstype: f.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

/// The current mount table.
pub fn mounts() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Whether something is mounted at `path`.
pub fn is_mounted(path: &Path) -> std::io::Result<bool> {
    let p = path.to_string_lossy();
    let p = p.trim_end_matches('/');
    let p = if p.is_empty() { "/" } else { p };
    Ok(mounts()?.iter().any(|m| m.mount_point == p))
}

/// Mounts one storage unless something is mounted at its mount point already. The error
/// is a status code and one line without the container prefix.
pub fn mount_storage(s: &Storage) -> Result<bool, (Code, String)> {
    let invalid = |m: String| (Code::INVALID_ARGUMENT, m);
    let internal = |m: String| (Code::INTERNAL, m);
    let fstype = match (s.driver.as_str(), s.fstype.as_str()) {
        (_, t) if !t.is_empty() => t.to_string(),
        ("9p", _) => "9p".into(),
        ("virtio-fs" | "virtiofs", _) => "virtiofs".into(),
        (d, _) => {
            return Err(invalid(format!(
                "storage {}: driver {d:?} is not supported (9p, virtio-fs) and no fstype is given",
                s.mount_point
            )))
        }
    };
    if !s.mount_point.starts_with('/') || s.mount_point.contains('\0') {
        return Err(invalid(format!(
            "storage mount point {:?} is not an absolute path",
            s.mount_point
        )));
    }
    let mp = Path::new(&s.mount_point);
    match is_mounted(mp) {
        Ok(true) => return Ok(false),
        Ok(false) => {}
        Err(e) => return Err(internal(format!("reading /proc/self/mountinfo: {e}"))),
    }
    std::fs::create_dir_all(mp)
        .map_err(|e| internal(format!("storage {}: mkdir: {e}", s.mount_point)))?;
    let (flags, _, _, data) = parse_options(&s.options);
    let data = data.join(",");
    let src = if s.source.is_empty() {
        fstype.as_str()
    } else {
        s.source.as_str()
    };
    mount(
        Some(src),
        mp,
        Some(fstype.as_str()),
        MsFlags::from_bits_retain(flags as libc::c_ulong),
        Some(data.as_str()).filter(|d| !d.is_empty()),
    )
    .map_err(|e| {
        internal(format!(
            "storage {}: mount {src} type {fstype} ({data}): {e}",
            s.mount_point
        ))
    })?;
    tracing::info!(source = src, mount_point = %s.mount_point, fstype, "storage mounted");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse() {
        let t = "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 - ext3 /dev/root rw\n\
                 40 1 0:5 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m[0].mount_point, "/mnt x");
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].fstype, "cgroup2");
    }
}
