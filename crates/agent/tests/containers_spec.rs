//! The agent's OCI runner on the real kernel (no VM), what the OCI spec asks for: user, env,
//! capabilities, rlimits, mounts, a memory limit, and bad specs: the real
//! `sandnet-agent --listen` in a throwaway netns with a cgroup of the test's own, containers
//! on a busybox root file system (harness in `common/containers.rs`). Needs root and
//! Debian's busybox-static at /bin/busybox.

mod common;

use common::containers::{ctx, failure, mount, Env, TempDir, DEFAULT_CAPS_HEX};
use sandnet_agent_proto::protobuf::MessageField;
use sandnet_agent_proto::ttrpc::Code;
use sandnet_agent_proto::{agent, oci};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_cwd_user_and_readonly_root() {
    let env = Env::new("ctr-user").await;
    let id = "user";
    let mut spec = env.spec(&[
        "sh",
        "-c",
        "echo \"$FOO\"; pwd; id; touch /x || echo ro-root; echo nofile=$(ulimit -n); \
         grep -E '^(CapEff|CapAmb|CapBnd|NoNewPrivs)' /proc/self/status; \
         echo adj=$(cat /proc/self/oom_score_adj)",
    ]);
    let p = spec.Process.as_mut().unwrap();
    p.OOMScoreAdj = 500;
    let caps = p.Capabilities.as_mut().unwrap();
    let raw = vec!["CAP_NET_RAW".to_string()];
    caps.Effective.clone_from(&raw);
    caps.Permitted.clone_from(&raw);
    caps.Inheritable.clone_from(&raw);
    caps.Ambient = raw;
    p.Rlimits.push(oci::POSIXRlimit {
        Type: "RLIMIT_NOFILE".into(),
        Hard: 2048,
        Soft: 1000,
        ..Default::default()
    });
    p.Env = vec!["PATH=/bin".into(), "FOO=bar baz".into()];
    p.Cwd = "/work".into();
    p.User = MessageField::some(oci::User {
        UID: 1000,
        GID: 1000,
        AdditionalGids: vec![1001],
        ..Default::default()
    });
    spec.Root.as_mut().unwrap().Readonly = true;
    env.run(id, spec).await;
    assert_eq!(env.wait(id, "").await, 0);
    let out = env.read_all(id, "", false).await;
    assert!(
        out.starts_with("bar baz\n/work\nuid=1000 gid=1000"),
        "{out}"
    );
    assert!(out.contains("1001"), "{out}");
    assert!(out.contains("ro-root"), "{out}");
    assert!(out.contains("nofile=1000\n"), "{out}");
    assert!(out.contains("adj=500\n"), "{out}");
    // A non-root user keeps exactly the ambient capability across exec.
    for want in [
        "CapEff:\t0000000000002000".to_string(),
        "CapAmb:\t0000000000002000".to_string(),
        format!("CapBnd:\t{DEFAULT_CAPS_HEX}"),
        "NoNewPrivs:\t1".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in {out}");
    }
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mount_of_a_host_directory() {
    let env = Env::new("ctr-bind").await;
    let id = "bind";
    let host = TempDir::new("ctr-bind-host");
    std::fs::write(host.0.join("in.txt"), "from host\n").unwrap();
    let src = host.0.to_string_lossy().into_owned();
    let mut spec = env.spec(&[
        "sh",
        "-c",
        "cat /data/in.txt; echo written > /data/out.txt; echo no > /ro/x || echo ro-ok",
    ]);
    spec.Mounts
        .push(mount("/data", "bind", &src, &["rbind", "rw"]));
    spec.Mounts
        .push(mount("/ro", "bind", &src, &["bind", "ro"]));
    env.run(id, spec).await;
    assert_eq!(env.wait(id, "").await, 0);
    let out = env.read_all(id, "", false).await;
    assert!(out.starts_with("from host\n"), "{out}");
    assert!(out.contains("ro-ok"), "{out}");
    assert_eq!(
        std::fs::read_to_string(host.0.join("out.txt")).unwrap(),
        "written\n"
    );
    assert!(!host.0.join("x").exists());
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_fail_with_one_line_and_leave_nothing() {
    let env = Env::new("ctr-bad").await;
    let id = "bad";
    let cases: Vec<(oci::Spec, Code, &str)> = vec![
        (
            env.spec(&["/nope"]),
            Code::INVALID_ARGUMENT,
            "executable \"/nope\" not found in the container's root (PATH=/usr/bin:/bin)",
        ),
        (
            env.spec(&["nope-cmd"]),
            Code::INVALID_ARGUMENT,
            "executable \"nope-cmd\" not found",
        ),
        (
            {
                let mut s = env.spec(&["true"]);
                s.Mounts
                    .push(mount("/data", "bind", "/nonexistent/src", &["rbind"]));
                s
            },
            Code::INVALID_ARGUMENT,
            "bind mount /data: source /nonexistent/src does not exist",
        ),
        (
            {
                let mut s = env.spec(&["true"]);
                s.Process.as_mut().unwrap().Rlimits.push(oci::POSIXRlimit {
                    Type: "RLIMIT_BOGUS".into(),
                    Hard: 1,
                    Soft: 1,
                    ..Default::default()
                });
                s
            },
            Code::INVALID_ARGUMENT,
            "unknown rlimit \"RLIMIT_BOGUS\"",
        ),
        (
            {
                let mut s = env.spec(&["true"]);
                let c = s.Process.as_mut().unwrap().Capabilities.as_mut().unwrap();
                c.Bounding.push("CAP_BOGUS".into());
                s
            },
            Code::INVALID_ARGUMENT,
            "unknown capability \"CAP_BOGUS\"",
        ),
        (
            {
                let mut s = env.spec(&["true"]);
                s.Process.as_mut().unwrap().Cwd = "/no/such/dir".into();
                s
            },
            Code::INVALID_ARGUMENT,
            "cwd /no/such/dir",
        ),
    ];
    for (spec, want_code, want) in cases {
        let (code, m) = failure(env.create(id, spec).await, id);
        assert_eq!(code, want_code, "{m}");
        assert!(m.contains(want), "{m:?} does not contain {want:?}");
        env.assert_gone(id);
        let (code, _) = failure(env.start(id).await, id);
        assert_eq!(code, Code::NOT_FOUND);
    }
    // An executable the kernel refuses fails Start (the exec error comes back).
    std::fs::write(env.root.join("bin/not-elf"), "just text\n").unwrap();
    std::fs::set_permissions(
        env.root.join("bin/not-elf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    env.create(id, env.spec(&["not-elf"])).await.unwrap();
    let (code, m) = failure(env.start(id).await, id);
    assert_eq!(code, Code::INTERNAL, "{m}");
    assert!(m.contains("exec /bin/not-elf: ENOEXEC"), "{m}");
    assert_eq!(env.wait(id, "").await, 127);
    env.remove(id).await;
    env.assert_gone(id);
    // The same id works afterwards.
    env.run(id, env.spec(&["sh", "-c", "echo fine"])).await;
    assert_eq!(env.wait(id, "").await, 0);
    assert_eq!(env.read_all(id, "", false).await, "fine\n");
    env.remove(id).await;
    env.assert_gone(id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_kills_with_137_and_reports_oom() {
    let env = Env::new("ctr-oom").await;
    let id = "oom";
    let mut spec = env.spec(&["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    spec.Linux.as_mut().unwrap().Resources = MessageField::some(oci::LinuxResources {
        Memory: MessageField::some(oci::LinuxMemory {
            Limit: 16 << 20,
            // memory + swap = memory: on a host with swap, dd would swap instead of
            // being killed.
            Swap: 16 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let has_memory = env.ns.cgroup.as_ref().unwrap().offers("memory");
    if !has_memory {
        // A hybrid-cgroup host binds the memory controller to v1: the limit cannot be
        // honoured, so Create refuses it clearly and leaves nothing.
        eprintln!("no memory controller in this host's cgroup2: checking the refusal only");
        let (code, m) = failure(env.create(id, spec).await, id);
        assert_eq!(code, Code::FAILED_PRECONDITION, "{m}");
        assert!(m.contains("memory controller is not available"), "{m}");
        env.assert_gone(id);
        return;
    }
    env.run(id, spec).await;
    assert_eq!(env.wait(id, "").await, 137);
    let ev = tokio::time::timeout(
        Duration::from_secs(10),
        env.c
            .get_oom_event(ctx(10), &agent::GetOOMEventRequest::default()),
    )
    .await
    .expect("no OOM event")
    .expect("oom event");
    assert_eq!(ev.container_id, id);
    let max = std::fs::read_to_string(env.cgroup(id).join("memory.max")).unwrap();
    assert_eq!(max.trim(), (16u64 << 20).to_string());
    env.remove(id).await;
    env.assert_gone(id);
}
