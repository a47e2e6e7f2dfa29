//! Test helpers: throw-away network namespaces made with `ip netns` (removed on drop, also
//! when the test panics), `ip -j` / `tc -j` queries inside them, and raw `AF_PACKET`
//! sockets for checking a datapath frame by frame. Tests only; the product never runs `ip`.

#![warn(missing_docs)]

use serde_json::Value;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `sn-<tag>-<pid>-<n>`.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("sn-{tag}-{}-{n}", std::process::id())
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace made for one test, deleted on drop.
#[derive(Debug)]
pub struct TestNs {
    /// Its name under /run/netns.
    pub name: String,
}

impl TestNs {
    /// Makes a namespace with a unique name built from `tag`, with `lo` up.
    pub fn new(tag: &str) -> TestNs {
        let name = unique(tag);
        run("ip", &["netns", "add", &name]);
        let ns = TestNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's path.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS…`, panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip -n NAME ARGS…` returning whether it succeeded (for setup that may fail).
    pub fn try_ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// `ip -j -n NAME ARGS…` parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-j", "-d", "-n", &self.name];
        a.extend_from_slice(args);
        let s = run("ip", &a);
        if s.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {s}"))
    }

    /// `tc -j ARGS…` inside the namespace, parsed.
    pub fn tc_json(&self, args: &[&str]) -> Value {
        let mut a = vec!["netns", "exec", &self.name, "tc", "-j"];
        a.extend_from_slice(args);
        let s = run("ip", &a);
        if s.trim().is_empty() {
            return Value::Array(vec![]);
        }
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("tc -j {args:?}: {e}: {s}"))
    }

    /// `tc ARGS…` inside the namespace, as text (this `tc` prints HTB classes only as
    /// text, even with `-j`); panics on failure.
    pub fn tc_text(&self, args: &[&str]) -> String {
        let mut a = vec!["netns", "exec", &self.name, "tc"];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// Names of all links in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        self.ip_json(&["link", "show"])
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect()
    }

    /// The `ip -j link show DEV` object of one link, or `None`.
    pub fn link(&self, dev: &str) -> Option<Value> {
        self.ip_json(&["link", "show"])
            .as_array()?
            .iter()
            .find(|l| l["ifname"] == dev)
            .cloned()
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = File::open(self.path()).expect("open netns");
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("setns");
                f()
            })
            .join()
            .expect("thread in netns panicked")
        })
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        // Processes started with `ip netns exec` are the test's to stop; the namespace
        // file goes in any case.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A pod namespace whose `eth0` is a veth with its peer `veth0` in a host namespace, both
/// up, with `172.19.0.5/24` in the pod, `172.19.0.1/24` on the host side and a default
/// route via it — what CNI's bridge plugin leaves, minus the bridge.
pub struct PodPair {
    /// The host-side namespace (peer `veth0`).
    pub host: TestNs,
    /// The pod namespace (`eth0`).
    pub pod: TestNs,
}

impl PodPair {
    /// Builds the pair.
    pub fn new(tag: &str) -> PodPair {
        let host = TestNs::new(&format!("{tag}-h"));
        let pod = TestNs::new(&format!("{tag}-p"));
        pod.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "veth0", "netns", &host.name,
        ]);
        pod.ip(&["addr", "add", "172.19.0.5/24", "dev", "eth0"]);
        pod.ip(&["link", "set", "eth0", "up"]);
        host.ip(&["addr", "add", "172.19.0.1/24", "dev", "veth0"]);
        host.ip(&["link", "set", "veth0", "up"]);
        pod.ip(&["route", "add", "default", "via", "172.19.0.1"]);
        PodPair { host, pod }
    }

    /// Adds another veth `name` in the pod with peer `peer` on the host side, up, with
    /// an address.
    pub fn add_veth(&self, name: &str, peer: &str, pod_addr: &str, host_addr: &str) {
        self.pod.ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            &self.host.name,
        ]);
        self.pod.ip(&["addr", "add", pod_addr, "dev", name]);
        self.pod.ip(&["link", "set", name, "up"]);
        self.host.ip(&["addr", "add", host_addr, "dev", peer]);
        self.host.ip(&["link", "set", peer, "up"]);
    }

    /// The MAC of a link in the pod.
    pub fn pod_mac(&self, dev: &str) -> String {
        self.pod.link(dev).expect("link")["address"]
            .as_str()
            .expect("address")
            .to_string()
    }
}

/// An `AF_PACKET` socket bound to one device of a namespace, for sending and receiving
/// raw Ethernet frames.
pub struct PacketSocket(pub OwnedFd);

impl PacketSocket {
    /// Opens it inside `ns` on `dev`.
    pub fn open(ns: &TestNs, dev: &str) -> PacketSocket {
        let dev = dev.to_string();
        ns.enter(move || {
            let ifindex = nix::net::if_::if_nametoindex(dev.as_str()).expect("ifindex");
            let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
            // SAFETY: plain socket(2) call.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            // SAFETY: fd was just created and is owned here.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto as u16;
            sa.sll_ifindex = ifindex as i32;
            // SAFETY: binding with a correctly sized sockaddr_ll.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
            PacketSocket(fd)
        })
    }

    /// Sends one frame.
    pub fn send(&self, frame: &[u8]) {
        let n = write_fd(&self.0, frame);
        assert_eq!(n, frame.len(), "short send");
    }

    /// Waits up to `timeout` for a frame for which `want` holds.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        want: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        recv_matching(&self.0, 0, timeout, want)
    }
}

/// Writes a buffer to an fd.
pub fn write_fd(fd: &OwnedFd, buf: &[u8]) -> usize {
    // SAFETY: writing from a valid buffer of the given length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    assert!(n >= 0, "write: {}", io::Error::last_os_error());
    n as usize
}

/// Reads frames from `fd` (skipping `skip` leading bytes of each, e.g. a virtio-net
/// header) until one satisfies `want` or `timeout` passes.
pub fn recv_matching(
    fd: &OwnedFd,
    skip: usize,
    timeout: Duration,
    want: impl Fn(&[u8]) -> bool,
) -> Option<Vec<u8>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if rc <= 0 {
            continue;
        }
        // SAFETY: reading into a buffer we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let n = n as usize;
        if n > skip && want(&buf[skip..n]) {
            return Some(buf[skip..n].to_vec());
        }
    }
}

/// A test Ethernet frame: `dst`, `src`, ethertype 0x88b5 (local experimental) and a
/// payload carrying `tag`, padded to the minimum frame size.
pub fn frame(dst: [u8; 6], src: [u8; 6], tag: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(tag);
    while f.len() < 60 {
        f.push(0);
    }
    f
}

/// Parses `aa:bb:…` into bytes.
pub fn mac_bytes(s: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(p, 16).expect("mac");
    }
    out
}

/// Whether a frame carries `tag` right after the Ethernet header.
pub fn has_tag(f: &[u8], tag: &[u8]) -> bool {
    f.len() >= 14 + tag.len() && &f[14..14 + tag.len()] == tag
}

/// The drops of HTB class `class` (e.g. `5a4e:2`) in the text of `tc -s class show`
/// (this iproute2 prints classes as text even with `-j`): the class line, then
/// ` Sent N bytes M pkt (dropped D, …`. `None` when there is no such class; panics when the
/// class has no drop count.
pub fn htb_class_drops(tc_text: &str, class: &str) -> Option<u64> {
    let mut lines = tc_text.lines();
    lines.find(|l| l.starts_with(&format!("class htb {class} ")))?;
    let sent = lines.next().unwrap_or_default();
    Some(
        sent.split("(dropped ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|d| d.trim().parse().ok())
            .unwrap_or_else(|| panic!("no drop count for {class} in {sent:?}")),
    )
}

/// The names of the entries of a directory, sorted; none when it cannot be read.
pub fn dir_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A directory under the system temp dir, removed on drop (also when the test panics).
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// Makes a fresh directory with a unique name built from `tag`.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Pids (other than this process) whose command line contains `needle`, with that line.
pub fn pids_mentioning(needle: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(b) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&b).replace('\0', " ");
        if cmd.contains(needle) {
            out.push((pid, cmd));
        }
    }
    out
}

/// Asserts a failed command with exactly one line on stderr that contains every `needle`.
pub fn assert_fails_with(o: &std::process::Output, needles: &[&str]) {
    assert!(!o.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{err:?} should mention {n:?}");
    }
}

/// A command-line binary run with a state directory of its own (`SANDNET_STATE_DIR`) and
/// an empty configuration file (`SANDNET_CONFIG`, so nothing installed on the machine
/// changes what a test runs); both removed on drop.
pub struct Cli {
    bin: std::path::PathBuf,
    /// The state directory.
    pub state: TempDir,
    /// The (empty) configuration file.
    pub config: std::path::PathBuf,
}

impl Cli {
    /// Prepares to run `bin` for a test tagged `tag`.
    pub fn new(bin: &str, tag: &str) -> Cli {
        let state = TempDir::new(tag);
        let config = std::env::temp_dir().join(format!("{}.toml", unique(tag)));
        std::fs::write(&config, "").expect("write config");
        Cli {
            bin: bin.into(),
            state,
            config,
        }
    }

    /// The command, with the environment set, ready to spawn.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(args)
            .env("SANDNET_STATE_DIR", &*self.state)
            .env("SANDNET_CONFIG", &self.config);
        c
    }

    /// Runs it to completion.
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().expect("spawn")
    }

    /// Runs it and asserts success.
    pub fn ok(&self, args: &[&str]) -> std::process::Output {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{} {args:?} failed ({}): {}",
            self.bin.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Runs it, asserts success and parses stdout as JSON.
    pub fn ok_json(&self, args: &[&str]) -> Value {
        let o = self.ok(args);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The static guest agent the VM tests boot: `$SANDNET_TEST_AGENT`, else the one
/// `scripts/build-agent` leaves in the workspace's target directory. Panics if it is missing.
pub fn static_agent() -> std::path::PathBuf {
    let agent = std::env::var_os("SANDNET_TEST_AGENT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/x86_64-unknown-linux-gnu/release/sandnet-agent")
        });
    assert!(agent.exists(), "no static agent at {}", agent.display());
    agent
}
