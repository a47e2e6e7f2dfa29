//! The sandbox VM's specification ([`VmSpec`]): its checks and the QEMU command line it
//! becomes, with cold-plugged NICs on their own root ports.

use super::{StatePaths, AGENT_PORT_NAME, DEFAULT_KERNEL_ARGS, DEFAULT_QEMU, QBOOT_ROM};
use crate::console::DEFAULT_CONSOLE_CAP;
use crate::error::{Result, VmError};
use crate::kvm::Accel;
use crate::nic::NicSpec;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Everything needed to start a sandbox VM.
#[derive(Debug)]
pub struct VmSpec {
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// Machine type (`q35`).
    pub machine: String,
    /// Accelerator (see [`crate::accel::choose`]).
    pub accel: Accel,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Kernel image (ELF `vmlinux` for PVH, or bzImage).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub kernel_args: String,
    /// Firmware for `-bios` (qboot when the package ships it); `None` = QEMU's default.
    pub firmware: Option<PathBuf>,
    /// NICs cold-plugged on the command line.
    pub nics: Vec<NicSpec>,
    /// Number of free `pcie-root-port`s (`rp0`, `rp1`, …) left for hot plug (q35 only).
    pub hotplug_ports: u32,
    /// Add a `vhost-vsock-pci` device with this guest CID (hosts with `/dev/vhost-vsock`).
    pub vsock_cid: Option<u32>,
    /// A host directory shared with the guest (containers' files).
    pub share: Option<crate::share::ShareSpec>,
    /// A virtio balloon with free page reporting: pages the guest frees go back to the host.
    pub free_page_reporting: bool,
    /// TCG's translation cache in MiB (`-accel tcg,tb-size=`) under TCG; `None`: QEMU's
    /// default (1 GiB, touched as code is translated).
    pub tcg_tb_size_mib: Option<u32>,
    /// Extra arguments appended verbatim.
    pub extra_args: Vec<String>,
    /// Cap of `console.log` in bytes; the rotated `console.log.1` holds as much again.
    pub console_cap: u64,
}

impl VmSpec {
    /// A q35 VM with 1 vCPU, 256 MiB, the fast-boot kernel arguments, qboot if present, 4 free
    /// root ports and no NICs.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>, accel: Accel) -> Self {
        VmSpec {
            qemu: PathBuf::from(DEFAULT_QEMU),
            machine: "q35".into(),
            accel,
            vcpus: 1,
            memory_mib: 256,
            kernel: kernel.into(),
            initrd: initrd.into(),
            kernel_args: DEFAULT_KERNEL_ARGS.into(),
            firmware: Some(PathBuf::from(QBOOT_ROM)).filter(|p| p.is_file()),
            nics: Vec::new(),
            hotplug_ports: 4,
            vsock_cid: None,
            share: None,
            free_page_reporting: false,
            tcg_tb_size_mib: None,
            extra_args: Vec::new(),
            console_cap: DEFAULT_CONSOLE_CAP,
        }
    }

    /// The kernel command line QEMU gets: [`VmSpec::kernel_args`], plus `noapictimer` for a
    /// single vCPU under TCG. TCG offers no TSC-deadline timer, so the kernel would spend
    /// 130-280 ms (measured here) calibrating the local APIC timer against the PM timer;
    /// with one CPU the HPET serves as the clock event device just as well.
    pub fn effective_kernel_args(&self) -> String {
        let words: Vec<&str> = self.kernel_args.split_whitespace().collect();
        // Words after `--` are init's arguments, not the kernel's.
        let end = words.iter().position(|w| *w == "--").unwrap_or(words.len());
        let has = words[..end].contains(&"noapictimer");
        if self.accel != Accel::Tcg || self.vcpus != 1 || has {
            return self.kernel_args.clone();
        }
        let mut out = words[..end].to_vec();
        out.push("noapictimer");
        out.extend_from_slice(&words[end..]);
        out.join(" ")
    }

    /// The id of hot-plug root port `i` (`rp0`, …).
    pub fn root_port_id(i: u32) -> String {
        format!("rp{i}")
    }

    /// The id of the root port cold-plugged NIC `i` sits on (`rpn0`, …): on q35 each NIC
    /// gets a port of its own, so it can be unplugged later like a hot-plugged one (a
    /// device on the root bus itself cannot be).
    pub fn nic_port_id(i: usize) -> String {
        format!("rpn{i}")
    }

    /// Checks the spec against the filesystem and itself; nothing is started.
    pub fn validate(&self) -> Result<()> {
        let file = |p: &Path, what: &str| -> Result<()> {
            if p.is_file() {
                Ok(())
            } else {
                Err(VmError::InvalidSpec(format!(
                    "{what} {} does not exist or is not a file",
                    p.display()
                )))
            }
        };
        file(&self.qemu, "QEMU binary")?;
        let mode = std::fs::metadata(&self.qemu)
            .map_err(|e| VmError::io("reading", &self.qemu, e))?
            .permissions()
            .mode();
        if mode & 0o111 == 0 {
            return Err(VmError::InvalidSpec(format!(
                "QEMU binary {} is not executable",
                self.qemu.display()
            )));
        }
        file(&self.kernel, "kernel")?;
        file(&self.initrd, "initrd")?;
        if let Some(fw) = &self.firmware {
            file(fw, "firmware")?;
        }
        if self.vcpus == 0 || self.vcpus > 255 {
            return Err(VmError::InvalidSpec(format!(
                "{} vCPUs (need 1..=255)",
                self.vcpus
            )));
        }
        if self.memory_mib < 64 {
            return Err(VmError::InvalidSpec(format!(
                "{} MiB of memory (need at least 64)",
                self.memory_mib
            )));
        }
        if self.machine.is_empty() || self.machine.contains([',', ' ']) {
            return Err(VmError::InvalidSpec(format!("machine {:?}", self.machine)));
        }
        if self.hotplug_ports > 0 && self.machine != "q35" {
            return Err(VmError::InvalidSpec(
                "hot-plug root ports need machine q35".into(),
            ));
        }
        if self.machine == "q35" && self.hotplug_ports as usize + self.nics.len() > MAX_ROOT_PORTS {
            return Err(VmError::InvalidSpec(format!(
                "{} NICs and {} hot-plug ports: at most {MAX_ROOT_PORTS} root ports fit on q35's root bus",
                self.nics.len(),
                self.hotplug_ports
            )));
        }
        if self.hotplug_ports > 32 {
            return Err(VmError::InvalidSpec(format!(
                "{} hot-plug ports (at most 32)",
                self.hotplug_ports
            )));
        }
        let mut ids = std::collections::BTreeSet::new();
        for n in &self.nics {
            n.validate()?;
            if !ids.insert(n.id.as_str()) || n.id.starts_with("rp") {
                return Err(VmError::InvalidSpec(format!(
                    "NIC id {:?} is duplicated or reserved",
                    n.id
                )));
            }
            for fd in n.tap_fds.iter().chain(&n.vhost_fds) {
                if fd.as_raw_fd() <= 2 {
                    return Err(VmError::InvalidSpec(format!(
                        "NIC {}: fd {} would clash with the child's stdio",
                        n.id,
                        fd.as_raw_fd()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The QEMU arguments (without the binary) for this spec, its state files and the NIC fds as
    /// the child will see them (the same numbers as in this process).
    pub fn qemu_args(&self, paths: &StatePaths) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        let accel = match (self.accel, self.tcg_tb_size_mib) {
            (Accel::Tcg, Some(mib)) => format!("tcg,tb-size={mib}"),
            (a, _) => a.as_str().to_string(),
        };
        push(&["-machine", &self.machine, "-accel", &accel]);
        let cpu = match self.accel {
            Accel::Kvm => "host",
            Accel::Tcg => "qemu64,+rdrand",
        };
        push(&["-cpu", cpu]);
        push(&[
            "-smp",
            &self.vcpus.to_string(),
            "-m",
            &self.memory_mib.to_string(),
        ]);
        if let Some(fw) = &self.firmware {
            push(&["-bios", &path_str(fw)]);
        }
        push(&[
            "-kernel",
            &path_str(&self.kernel),
            "-initrd",
            &path_str(&self.initrd),
        ]);
        push(&["-append", &self.effective_kernel_args()]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=console,path={},server=off",
                esc(&paths.console_sock)
            ),
            "-serial",
            "chardev:console",
        ]);
        push(&[
            "-chardev",
            &format!("socket,id=qmp,path={},server=on,wait=off", esc(&paths.qmp)),
            "-mon",
            "chardev=qmp,mode=control",
        ]);
        push(&[
            "-device",
            "virtio-serial-pci,id=virtio-serial0,romfile=",
            "-chardev",
            &format!(
                "socket,id=agent,path={},server=on,wait=off",
                esc(&paths.agent)
            ),
            "-device",
            &format!("virtserialport,chardev=agent,id=agent0,name={AGENT_PORT_NAME}"),
        ]);
        if self.free_page_reporting {
            push(&[
                "-device",
                "virtio-balloon-pci,id=balloon0,free-page-reporting=on",
            ]);
        }
        for i in 0..self.hotplug_ports {
            push(&[
                "-device",
                &format!(
                    "pcie-root-port,id={},bus=pcie.0,chassis={},slot={}",
                    Self::root_port_id(i),
                    i + 1,
                    i + 1
                ),
            ]);
        }
        for (i, n) in self.nics.iter().enumerate() {
            let fds = |v: &[OwnedFd]| {
                v.iter()
                    .map(|f| f.as_raw_fd().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            };
            let mut netdev = format!("tap,id={}", NicSpec::netdev_id(&n.id));
            if n.tap_fds.len() == 1 {
                netdev.push_str(&format!(",fd={}", fds(&n.tap_fds)));
            } else {
                netdev.push_str(&format!(",fds={}", fds(&n.tap_fds)));
            }
            if !n.vhost_fds.is_empty() {
                let key = if n.vhost_fds.len() == 1 {
                    "vhostfd"
                } else {
                    "vhostfds"
                };
                netdev.push_str(&format!(",vhost=on,{key}={}", fds(&n.vhost_fds)));
            }
            let mut dev = format!(
                "virtio-net-pci,id={},netdev={},mac={},romfile=",
                n.id,
                NicSpec::netdev_id(&n.id),
                n.mac
            );
            if n.queues > 1 {
                dev.push_str(&format!(",mq=on,vectors={}", 2 * n.queues + 2));
            }
            if self.machine == "q35" {
                let chassis = 33 + i;
                push(&[
                    "-device",
                    &format!(
                        "pcie-root-port,id={},bus=pcie.0,chassis={chassis},slot={chassis}",
                        Self::nic_port_id(i)
                    ),
                ]);
                dev.push_str(&format!(",bus={}", Self::nic_port_id(i)));
            }
            push(&["-netdev", &netdev, "-device", &dev]);
        }
        if let Some(cid) = self.vsock_cid {
            push(&[
                "-device",
                &format!("vhost-vsock-pci,id=vsock0,guest-cid={cid}"),
            ]);
        }
        if let Some(share) = &self.share {
            let sa = share.qemu_args(self.memory_mib);
            push(&sa.iter().map(String::as_str).collect::<Vec<_>>());
        }
        push(&["-pidfile", &path_str(&paths.pid)]);
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Root ports that fit on q35's root bus next to its own devices (one slot each).
const MAX_ROOT_PORTS: usize = 28;

/// Escapes a value for QEMU's `key=value,…` option syntax (commas are doubled).
fn esc(p: &Path) -> String {
    path_str(p).replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    #[test]
    fn command_line_for_nics() {
        let mut s = VmSpec::new("/k", "/i,x", Accel::Tcg);
        s.firmware = None;
        let (a, b, c) = (fd(), fd(), fd());
        let (ra, rb, rc) = (a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd());
        s.nics.push(NicSpec::new(
            "eth0",
            "02:00:00:00:00:01".parse().unwrap(),
            a,
        ));
        s.nics.push(NicSpec {
            id: "eth1".into(),
            mac: "02:00:00:00:00:02".parse().unwrap(),
            tap_fds: vec![b, c],
            vhost_fds: vec![],
            queues: 2,
        });
        let args = s.qemu_args(&StatePaths::new(Path::new("/run/s,1")));
        let joined = args.join(" ");
        assert!(
            joined.contains(&format!("-netdev tap,id=eth0-netdev,fd={ra} ")),
            "{joined}"
        );
        assert!(
            joined.contains(&format!("tap,id=eth1-netdev,fds={rb}:{rc} ")),
            "{joined}"
        );
        assert!(joined.contains("virtio-net-pci,id=eth1,netdev=eth1-netdev,mac=02:00:00:00:00:02,romfile=,mq=on,vectors=6,bus=rpn1"));
        assert!(joined.contains(
            "virtio-net-pci,id=eth0,netdev=eth0-netdev,mac=02:00:00:00:00:01,romfile=,bus=rpn0 "
        ));
        assert!(joined.contains("pcie-root-port,id=rpn1,bus=pcie.0,chassis=34,slot=34"));
        assert!(joined.contains("socket,id=qmp,path=/run/s,,1/qmp.sock,server=on,wait=off"));
        assert!(joined.contains("pcie-root-port,id=rp3,bus=pcie.0,chassis=4,slot=4"));
        assert!(joined.contains("name=agent.channel.0"));
        assert!(joined.contains("socket,id=console,path=/run/s,,1/console.sock,server=off"));
        assert!(args.windows(2).any(|w| w[0] == "-initrd" && w[1] == "/i,x"));
        assert!(args
            .windows(2)
            .any(|w| w[0] == "-cpu" && w[1] == "qemu64,+rdrand"));
    }

    #[test]
    fn noapictimer_only_for_one_vcpu_under_tcg() {
        let append = |s: &VmSpec| {
            let a = s.qemu_args(&StatePaths::new(Path::new("/run/s")));
            let i = a.iter().position(|x| x == "-append").unwrap();
            a[i + 1].clone()
        };
        let mut s = VmSpec::new("/k", "/i", Accel::Tcg);
        assert!(append(&s).ends_with(" noapictimer"), "{}", append(&s));
        assert!(append(&s).contains("random.trust_cpu=on"));
        s.kernel_args.push_str(" noapictimer");
        assert_eq!(append(&s).matches("noapictimer").count(), 1);
        // It goes before `--`: what follows is for init (the agent).
        s.kernel_args = "console=ttyS0 -- --hostile names".into();
        assert_eq!(append(&s), "console=ttyS0 noapictimer -- --hostile names");
        s.vcpus = 2;
        s.kernel_args = DEFAULT_KERNEL_ARGS.into();
        assert!(!append(&s).contains("noapictimer"));
        let s = VmSpec::new("/k", "/i", Accel::Kvm);
        assert!(!append(&s).contains("noapictimer"));
    }

    #[test]
    fn tb_size_only_under_tcg_and_the_balloon_when_asked() {
        let args = |s: &VmSpec| s.qemu_args(&StatePaths::new(Path::new("/run/s")));
        let accel = |a: &[String]| {
            let i = a.iter().position(|x| x == "-accel").unwrap();
            a[i + 1].clone()
        };
        let mut s = VmSpec::new("/k", "/i", Accel::Tcg);
        assert_eq!(accel(&args(&s)), "tcg");
        assert!(!args(&s).iter().any(|a| a.contains("virtio-balloon")));
        s.tcg_tb_size_mib = Some(16);
        s.free_page_reporting = true;
        assert_eq!(accel(&args(&s)), "tcg,tb-size=16");
        assert!(args(&s)
            .iter()
            .any(|a| a.starts_with("virtio-balloon-pci,") && a.contains("free-page-reporting=on")));
        s.accel = Accel::Kvm;
        assert_eq!(accel(&args(&s)), "kvm");
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut s = VmSpec::new("/nonexistent/vmlinuz", "/dev/null", Accel::Tcg);
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("kernel /nonexistent/vmlinuz"), "{e}");
        s.kernel = "/bin/sh".into();
        s.initrd = "/bin/sh".into();
        s.nics.push(NicSpec {
            id: "eth0".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            tap_fds: vec![fd()],
            vhost_fds: vec![],
            queues: 2,
        });
        assert!(s.validate().unwrap_err().to_string().contains("queues=2"));
        s.nics[0].queues = 1;
        s.nics[0].id = "0bad,id".into();
        assert!(s.validate().is_err());
        s.nics[0].id = "eth0".into();
        s.nics[0].mac = "01:00:5e:00:00:01".parse().unwrap();
        assert!(s.validate().unwrap_err().to_string().contains("unicast"));
    }
}
