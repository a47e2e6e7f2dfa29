//! Reading `/proc/<pid>/mountinfo` (proc(5)): one parser for what sandnet looks at in it,
//! each line's mount point (unescaped) and its propagation (`shared:N`, `master:N`).

use std::path::PathBuf;

/// One line of a mountinfo table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `shared:N`: the peer group it belongs to.
    pub shared: Option<u64>,
    /// `master:N`: the peer group it receives mounts from.
    pub master: Option<u64>,
}

/// The mounts of a mountinfo text, in its order (a later line is mounted over an earlier
/// one at the same place). Lines too short to be mountinfo are skipped.
pub fn parse(text: &str) -> impl Iterator<Item = Mount> + '_ {
    text.lines().filter_map(|line| {
        let mut f = line.split(' ');
        let mount_point = unescape(f.nth(4)?);
        let mut m = Mount {
            mount_point,
            shared: None,
            master: None,
        };
        // Optional fields follow the mount options (field 6) until a lone `-`.
        for tag in f.skip(1).take_while(|t| *t != "-") {
            if let Some(n) = tag.strip_prefix("shared:") {
                m.shared = n.parse().ok();
            } else if let Some(n) = tag.strip_prefix("master:") {
                m.master = n.parse().ok();
            }
        }
        Some(m)
    })
}

/// Decodes mountinfo's octal escapes (`\040` for a space, …).
pub fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/run/a\\040b/c"), PathBuf::from("/run/a b/c"));
        assert_eq!(unescape("/x\\"), PathBuf::from("/x\\"));
        assert_eq!(unescape("tail\\04"), PathBuf::from("tail\\04"));
        assert_eq!(unescape("a\\134c"), PathBuf::from("a\\c"));
    }

    #[test]
    fn mount_points_and_propagation() {
        let mi = "45 27 254:0 /x /run/a\\040b rw,relatime shared:1 master:3 - ext4 /dev/vda rw\n\
                  short line\n\
                  46 45 0:4 net:[1] /run/netns/a rw - nsfs nsfs rw\n";
        let m: Vec<Mount> = parse(mi).collect();
        assert_eq!(
            m,
            [
                Mount {
                    mount_point: PathBuf::from("/run/a b"),
                    shared: Some(1),
                    master: Some(3)
                },
                Mount {
                    mount_point: PathBuf::from("/run/netns/a"),
                    shared: None,
                    master: None
                },
            ]
        );
    }
}
