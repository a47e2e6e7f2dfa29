//! A writer (and a reader, for checking) of the `newc` cpio format the kernel unpacks as initramfs.
//!
//! Every header carries fixed metadata (uid/gid 0, mtime 0, inodes numbered in order), so the
//! same entries always give the same bytes.

use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with these contents.
    File(Vec<u8>),
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device node (major, minor).
    CharDev(u32, u32),
}

/// One archive entry as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the archive, without a leading `/`.
    pub name: String,
    /// Permission bits (without the file type).
    pub perm: u32,
    /// What it is.
    pub kind: EntryKind,
}

/// Writes newc entries to `W`; call [`CpioWriter::finish`] to add the trailer.
pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

fn check_name(name: &str) -> io::Result<()> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || name == TRAILER
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid cpio entry name {name:?}"),
        ));
    }
    Ok(())
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.out.write_all(&[0u8; 3][..n])?;
        self.written += n as u64;
        Ok(())
    }

    fn raw(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file larger than 4 GiB"))?;
        let nlink = if mode & 0o170000 == S_IFDIR { 2 } else { 1 };
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        let mut hdr = Vec::with_capacity(110 + name.len() + 1);
        hdr.extend_from_slice(MAGIC);
        for f in fields {
            hdr.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        hdr.extend_from_slice(name.as_bytes());
        hdr.push(0);
        self.out.write_all(&hdr)?;
        self.written += hdr.len() as u64;
        self.pad()?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()?;
        if name != TRAILER {
            self.next_ino += 1;
        }
        Ok(())
    }

    /// Adds a directory with permission bits `perm`.
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        check_name(name)?;
        self.raw(name, S_IFDIR | (perm & 0o7777), (0, 0), &[])
    }

    /// Adds a regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        check_name(name)?;
        self.raw(name, S_IFREG | (perm & 0o7777), (0, 0), data)
    }

    /// Adds a symbolic link `name` → `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        check_name(name)?;
        if target.is_empty() || target.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid symlink target {target:?}"),
            ));
        }
        self.raw(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        check_name(name)?;
        self.raw(name, S_IFCHR | (perm & 0o7777), (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.raw(TRAILER, 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn hex_field(h: &[u8], i: usize) -> io::Result<u32> {
    let s = h
        .get(6 + i * 8..6 + (i + 1) * 8)
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short cpio header"))?;
    u32::from_str_radix(s, 16)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad hex in cpio header"))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses a whole newc archive (up to its trailer).
pub fn read_archive(data: &[u8]) -> io::Result<Vec<Entry>> {
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
    let mut pos = 0usize;
    let mut out = Vec::new();
    loop {
        let h = data
            .get(pos..pos + 110)
            .ok_or_else(|| bad("truncated header"))?;
        if &h[..6] != MAGIC {
            return Err(bad("bad magic"));
        }
        let mode = hex_field(h, 1)?;
        let size = hex_field(h, 6)? as usize;
        let rdev = (hex_field(h, 9)?, hex_field(h, 10)?);
        let namesize = hex_field(h, 11)? as usize;
        let name_start = pos + 110;
        let name = data
            .get(name_start..name_start + namesize.saturating_sub(1))
            .ok_or_else(|| bad("truncated name"))?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| bad("name not UTF-8"))?;
        let data_start = align4(name_start + namesize);
        let body = data
            .get(data_start..data_start + size)
            .ok_or_else(|| bad("truncated data"))?;
        pos = align4(data_start + size);
        if name == TRAILER {
            return Ok(out);
        }
        let kind = match mode & 0o170000 {
            S_IFDIR => EntryKind::Dir,
            S_IFREG => EntryKind::File(body.to_vec()),
            S_IFLNK => EntryKind::Symlink(
                String::from_utf8(body.to_vec()).map_err(|_| bad("link not UTF-8"))?,
            ),
            S_IFCHR => EntryKind::CharDev(rdev.0, rdev.1),
            _ => return Err(bad("unsupported file type")),
        };
        out.push(Entry {
            name,
            perm: mode & 0o7777,
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_all_kinds() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.char_dev("dev-console", 0o600, 5, 1).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let e = read_archive(&bytes).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].kind, EntryKind::File(b"#!/bin/sh\n".to_vec()));
        assert_eq!(e[2].kind, EntryKind::Symlink("busybox".into()));
        assert_eq!(e[3].kind, EntryKind::CharDev(5, 1));
        assert_eq!(e[0].perm, 0o755);
    }

    #[test]
    fn rejects_bad_names() {
        let mut w = CpioWriter::new(Vec::new());
        for n in ["", "/abs", "a//b", "../x", "a/../b", TRAILER, "nul\0x"] {
            assert!(w.file(n, 0o644, b"").is_err(), "{n:?} accepted");
        }
    }

    #[test]
    fn system_cpio_lists_what_we_wrote() {
        let Ok(_) = std::process::Command::new("cpio").arg("--version").output() else {
            eprintln!("cpio not installed; skipping");
            return;
        };
        let mut w = CpioWriter::new(Vec::new());
        w.dir("etc", 0o755).unwrap();
        w.file("etc/a b", 0o644, b"xyz").unwrap();
        w.symlink("etc/l", "a b").unwrap();
        let bytes = w.finish().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-i", "-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "etc\netc/a b\netc/l\n"
        );
    }

    proptest! {
        #[test]
        fn names_and_contents_roundtrip(
            files in proptest::collection::vec(
                ("[a-zA-Z0-9._ -]{1,20}(/[a-zA-Z0-9._-]{1,12}){0,3}", proptest::collection::vec(any::<u8>(), 0..70)),
                0..12,
            )
        ) {
            let files: Vec<_> = files
                .into_iter()
                .filter(|(n, _)| n.split('/').all(|c| c != "." && c != ".." && c != TRAILER))
                .collect();
            let mut w = CpioWriter::new(Vec::new());
            for (n, d) in &files {
                w.file(n, 0o644, d).unwrap();
            }
            let bytes = w.finish().unwrap();
            let back = read_archive(&bytes).unwrap();
            prop_assert_eq!(back.len(), files.len());
            for ((n, d), e) in files.iter().zip(back) {
                prop_assert_eq!(&e.name, n);
                prop_assert_eq!(e.kind, EntryKind::File(d.clone()));
            }
        }
    }
}
