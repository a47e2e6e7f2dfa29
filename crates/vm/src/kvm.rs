//! The raw KVM probe and the [`Accel`] type.
//!
//! The probe creates a VM with one vCPU that runs a few bytes of real-mode code (`out` then
//! `hlt`) at the reset vector, on a thread, and gives up after a timeout. `/dev/kvm` existing
//! is not enough for KVM to work, and neither is this probe passing: [`crate::accel`] decides
//! by what QEMU really does.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A QEMU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

impl Accel {
    /// The value for QEMU's `-accel`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The test code run by [`probe`]: `mov al,0x2a; out 0xf1,al; hlt`.
const PROBE_CODE: [u8; 5] = [0xb0, 0x2a, 0xe6, 0xf1, 0xf4];

/// Whether a bare KVM vCPU runs here: `Ok(what ran)` or `Err(why not)`. Waits at most
/// `timeout` for the test vCPU. Passing is necessary, not sufficient, for QEMU to run a guest
/// under KVM (see [`crate::accel`] for the real decision).
pub fn probe(timeout: Duration) -> Result<String, String> {
    probe_code(&PROBE_CODE, timeout)
}

fn probe_code(code: &'static [u8], timeout: Duration) -> Result<String, String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Err("/dev/kvm does not exist".into());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kvm-probe".into())
        .spawn(move || {
            let _ = tx.send(run_probe_vm(code));
        })
        .map_err(|e| format!("could not start the KVM probe thread: {e}"))?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => Ok("a KVM test vCPU ran to hlt".into()),
        Ok(Err(e)) => Err(format!("KVM probe failed: {e}")),
        // The probe thread stays blocked in KVM_RUN; it is left behind on purpose.
        Err(_) => Err(format!(
            "a KVM test vCPU did not reach hlt within {timeout:?} (guests hang under KVM here)"
        )),
    }
}

const KVMIO: libc::c_ulong = 0xAE;
const fn io(nr: libc::c_ulong) -> libc::c_ulong {
    (KVMIO << 8) | nr
}
const fn iow(nr: libc::c_ulong, size: libc::c_ulong) -> libc::c_ulong {
    (1 << 30) | (size << 16) | (KVMIO << 8) | nr
}
const KVM_GET_API_VERSION: libc::c_ulong = io(0x00);
const KVM_CREATE_VM: libc::c_ulong = io(0x01);
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = io(0x04);
const KVM_CREATE_VCPU: libc::c_ulong = io(0x41);
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = iow(0x46, 32);
const KVM_RUN: libc::c_ulong = io(0x80);
const KVM_EXIT_IO: u32 = 2;
const KVM_EXIT_HLT: u32 = 5;

#[repr(C)]
struct UserspaceMemoryRegion {
    slot: u32,
    flags: u32,
    guest_phys_addr: u64,
    memory_size: u64,
    userspace_addr: u64,
}

fn ioctl(
    fd: &impl AsRawFd,
    req: libc::c_ulong,
    arg: libc::c_ulong,
    what: &str,
) -> Result<i32, String> {
    // SAFETY: plain KVM ioctls whose argument is either an integer or a pointer to a live,
    // correctly sized struct (checked by the callers).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        Err(format!("{what}: {}", std::io::Error::last_os_error()))
    } else {
        Ok(r)
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful ioctl that creates a new descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Guest memory and the vCPU's run area, unmapped on drop.
struct Mapping(*mut libc::c_void, usize);
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the pointer/length pair came from a successful mmap.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

fn map(len: usize, fd: Option<&OwnedFd>) -> Result<Mapping, String> {
    let (flags, raw) = match fd {
        Some(f) => (libc::MAP_SHARED, f.as_raw_fd()),
        None => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
    };
    // SAFETY: a fresh mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            raw,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    Ok(Mapping(p, len))
}

/// Runs `mov al,0x2a; out 0xf1,al; hlt` at the reset vector (CS base 0xffff0000, IP 0xfff0).
fn run_probe_vm(code: &[u8]) -> Result<(), String> {
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("open /dev/kvm: {e}"))?;
    let api = ioctl(&kvm, KVM_GET_API_VERSION, 0, "KVM_GET_API_VERSION")?;
    if api != 12 {
        return Err(format!("unexpected KVM API version {api}"));
    }
    let vm = owned(ioctl(&kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM")?);
    const MEM: usize = 0x10000;
    let mem = map(MEM, None)?;
    if code.len() > 16 {
        return Err("probe code longer than 16 bytes".into());
    }
    // SAFETY: offset 0xfff0 + at most 16 bytes lies inside the 64 KiB mapping.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), (mem.0 as *mut u8).add(0xfff0), code.len())
    };
    let region = UserspaceMemoryRegion {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0xffff_0000,
        memory_size: MEM as u64,
        userspace_addr: mem.0 as u64,
    };
    ioctl(
        &vm,
        KVM_SET_USER_MEMORY_REGION,
        &region as *const _ as libc::c_ulong,
        "KVM_SET_USER_MEMORY_REGION",
    )?;
    let vcpu = owned(ioctl(&vm, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU")?);
    let run_size = ioctl(&kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE")? as usize;
    if run_size < 64 {
        return Err(format!("vCPU run area too small ({run_size})"));
    }
    let run = map(run_size, Some(&vcpu))?;
    let base = run.0 as *const u8;
    let mut saw_out = false;
    for _ in 0..4 {
        ioctl(&vcpu, KVM_RUN, 0, "KVM_RUN")?;
        // SAFETY: kvm_run layout: exit_reason u32 at 8; for IO exits, direction u8 at 32,
        // size u8 at 33, port u16 at 34, count u32 at 36, data_offset u64 at 40; all inside
        // the run area whose size was checked above (data_offset is set by the kernel).
        let exit = unsafe { std::ptr::read_unaligned(base.add(8) as *const u32) };
        match exit {
            KVM_EXIT_IO => {
                let port = unsafe { std::ptr::read_unaligned(base.add(34) as *const u16) };
                let off = unsafe { std::ptr::read_unaligned(base.add(40) as *const u64) } as usize;
                if port != 0xf1 || off >= run_size {
                    return Err(format!("unexpected IO exit on port {port:#x}"));
                }
                let val = unsafe { *base.add(off) };
                if val != 0x2a {
                    return Err(format!("test vCPU wrote {val:#x} instead of 0x2a"));
                }
                saw_out = true;
            }
            KVM_EXIT_HLT if saw_out => return Ok(()),
            other => return Err(format!("unexpected KVM exit reason {other}")),
        }
    }
    Err("test vCPU did not halt".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have_kvm() -> bool {
        std::path::Path::new("/dev/kvm").exists()
    }

    #[test]
    fn probe_gives_a_reason() {
        match probe(Duration::from_secs(2)) {
            Ok(why) => {
                assert!(have_kvm());
                assert!(why.contains("hlt"), "{why}");
            }
            Err(why) => {
                assert!(!why.is_empty());
                if !have_kvm() {
                    assert!(why.contains("/dev/kvm"), "{why}");
                }
            }
        }
    }

    /// The probe checks what the vCPU did: a vCPU that writes the wrong value, or halts
    /// without writing, fails it. (Needs /dev/kvm; without it every probe fails anyway.)
    #[test]
    fn probe_fails_when_the_vcpu_misbehaves() {
        static WRONG_VALUE: [u8; 5] = [0xb0, 0x2b, 0xe6, 0xf1, 0xf4];
        static HLT_ONLY: [u8; 1] = [0xf4];
        let e = probe_code(&WRONG_VALUE, Duration::from_secs(2)).unwrap_err();
        if have_kvm() {
            assert!(e.contains("0x2b"), "{e}");
        }
        let e = probe_code(&HLT_ONLY, Duration::from_secs(2)).unwrap_err();
        if have_kvm() {
            assert!(e.contains("exit reason 5"), "{e}");
        }
    }
}
