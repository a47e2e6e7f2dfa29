//! Unit tests of the accelerator choice: modes, cache key, verdict file, lock.

use super::*;

/// A scratch directory (removed on drop, also when a test fails).
struct Tmp(sandnet_testkit::TempDir);
impl Tmp {
    fn new(tag: &str) -> Tmp {
        Tmp(sandnet_testkit::TempDir::new(&format!("accel-{tag}")))
    }
    /// A stand-in "QEMU binary" (only its identity matters to the cache).
    fn binary(&self) -> PathBuf {
        let b = self.0.join("qemu");
        if !b.exists() {
            std::fs::write(&b, b"#!/bin/sh\n").unwrap();
        }
        b
    }
}

fn env_unset() -> bool {
    std::env::var(ACCEL_ENV).map_or(true, |v| v.is_empty())
}

#[test]
fn modes_parse_print_and_serialise_lowercase() {
    for (s, m) in [
        ("auto", AccelMode::Auto),
        ("kvm", AccelMode::Kvm),
        ("tcg", AccelMode::Tcg),
    ] {
        assert_eq!(s.parse::<AccelMode>().unwrap(), m);
        assert_eq!(m.to_string(), s);
        assert_eq!(serde_json::to_string(&m).unwrap(), format!("\"{s}\""));
    }
    let e = "KVM".parse::<AccelMode>().unwrap_err();
    assert!(e.contains("auto, kvm or tcg"), "{e}");
    assert_eq!(AccelMode::default(), AccelMode::Auto);
    assert_eq!(serde_json::to_string(&Accel::Kvm).unwrap(), "\"kvm\"");
}

#[test]
fn cache_key_changes_with_every_input() {
    let p = Path::new("/usr/bin/qemu-system-x86_64");
    let id = (1, 2, 3, 4, 5);
    let k = cache_key("boot-a", p, id);
    assert_eq!(k, cache_key("boot-a", p, id), "stable");
    assert_eq!(k.len(), 24);
    let others = [
        cache_key("boot-b", p, id),
        cache_key("boot-a", Path::new("/usr/local/bin/qemu"), id),
        cache_key("boot-a", p, (9, 2, 3, 4, 5)),
        cache_key("boot-a", p, (1, 9, 3, 4, 5)),
        cache_key("boot-a", p, (1, 2, 9, 4, 5)),
        cache_key("boot-a", p, (1, 2, 3, 9, 5)),
        cache_key("boot-a", p, (1, 2, 3, 4, 9)),
    ];
    for o in others {
        assert_ne!(k, o);
    }
}

#[test]
fn verdicts_round_trip_and_leave_no_tmp() {
    let t = Tmp::new("verdict");
    let dir = t.0.join("accel");
    let c = VerdictCache::new(&dir, &t.binary()).unwrap();
    assert!(c.read().is_none());
    // A writer killed half-way left this behind.
    std::fs::write(dir.join(".x.1.2.tmp"), b"{").unwrap();
    c.write(Accel::Tcg, "KVM failed (QEMU aborted)").unwrap();
    let v = c.read().unwrap();
    assert_eq!(v.accel, Accel::Tcg);
    assert_eq!(v.reason, "KVM failed (QEMU aborted)");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].ends_with(".json"), "{names:?}");
    // A different binary (new identity) has no verdict yet.
    std::fs::write(t.binary(), b"#!/bin/sh\n# upgraded\n").unwrap();
    let c2 = VerdictCache::new(&dir, &t.binary()).unwrap();
    assert_ne!(c2.path, c.path);
    assert!(c2.read().is_none());
}

#[test]
fn a_verdict_of_another_boot_or_a_damaged_file_is_ignored() {
    let t = Tmp::new("stale");
    let dir = t.0.join("accel");
    let c = VerdictCache::new(&dir, &t.binary()).unwrap();
    c.write(Accel::Kvm, "ok").unwrap();
    let mut v = c.read().unwrap();
    v.boot_id = "another-boot".into();
    std::fs::write(&c.path, serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(c.read().is_none());
    std::fs::write(&c.path, b"{\"accel\":").unwrap();
    assert!(c.read().is_none());
}

#[test]
fn the_lock_excludes_a_second_decider_until_released() {
    let t = Tmp::new("lock");
    let held = lock_dir(&t.0, Duration::ZERO).unwrap().expect("first lock");
    assert!(lock_dir(&t.0, Duration::from_millis(200))
        .unwrap()
        .is_none());
    drop(held);
    assert!(lock_dir(&t.0, Duration::ZERO).unwrap().is_some());
}

#[test]
fn forced_modes_never_probe_or_cache() {
    if !env_unset() {
        return; // the environment overrides the mode under test
    }
    let t = Tmp::new("forced");
    let dir = t.0.join("accel");
    let c = choose(AccelMode::Tcg, &dir, &t.binary()).unwrap();
    assert_eq!((c.accel, c.trial.is_none()), (Accel::Tcg, true));
    assert!(c.reason.contains("tcg"), "{}", c.reason);
    let c = choose(AccelMode::Kvm, &dir, &t.binary()).unwrap();
    assert_eq!((c.accel, c.trial.is_none()), (Accel::Kvm, true));
    assert!(!dir.exists(), "forced modes must not touch the cache");
}

#[test]
fn auto_trial_records_once_and_a_dropped_trial_records_nothing() {
    if !env_unset()
        || !Path::new("/dev/kvm").exists()
        || kvm::probe(Duration::from_secs(2)).is_err()
    {
        return; // no trial happens here: covered by the no-/dev/kvm end-to-end test
    }
    let t = Tmp::new("trial");
    let dir = t.0.join("accel");
    let c = choose(AccelMode::Auto, &dir, &t.binary()).unwrap();
    assert_eq!(c.accel, Accel::Kvm);
    drop(c.trial.expect("a trial"));
    let c = choose(AccelMode::Auto, &dir, &t.binary()).unwrap();
    let trial = c.trial.expect("still a trial after a dropped one");
    trial.failed("KVM failed (QEMU aborted)").unwrap();
    let c = choose(AccelMode::Auto, &dir, &t.binary()).unwrap();
    assert!(c.trial.is_none());
    assert_eq!(c.accel, Accel::Tcg);
    assert!(c.reason.contains("QEMU aborted"), "{}", c.reason);
}

#[test]
fn kvm_failures_are_described_in_one_line() {
    let e = VmError::QemuExited {
        status: "signal: 6 (SIGABRT) (core dumped)".into(),
        log: "/x/qemu.log".into(),
        tail: "qemu: error: failed to set MSR 0x10a to 0x69\nqemu: kvm_buf_set_msrs: Assertion failed\n".into(),
    };
    let d = describe_kvm_failure(&e);
    assert_eq!(
        d,
        "QEMU aborted: qemu: error: failed to set MSR 0x10a to 0x69 | qemu: kvm_buf_set_msrs: Assertion failed"
    );
    assert!(kvm_may_be_at_fault(&e));
    let t = VmError::Timeout {
        what: "QMP socket".into(),
        ms: 10_000,
    };
    assert!(describe_kvm_failure(&t).contains("no sign of life"));
    assert!(!kvm_may_be_at_fault(&VmError::InvalidSpec("x".into())));
}

/// A choice holding a KVM trial whose verdict goes to `dir` (no /dev/kvm needed).
fn trial_choice(t: &Tmp, dir: &Path) -> Choice {
    let cache = VerdictCache::new(dir, &t.binary()).unwrap();
    let lock = lock_dir(dir, Duration::ZERO).unwrap().expect("the lock");
    Choice {
        accel: Accel::Kvm,
        reason: "trying KVM".into(),
        trial: Some(KvmTrial { cache, _lock: lock }),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn start_runs_the_trial_and_falls_back_to_tcg_once() {
    let t = Tmp::new("start");
    let dir = t.0.join("accel");
    let fail = |suspect: bool| StartFailure {
        error: "boom",
        kvm_suspect: suspect,
        why: "QEMU aborted".to_string(),
    };
    // KVM hangs: the verdict says TCG, and one TCG attempt follows with the caller's deadline.
    let mut seen = vec![];
    let r = block_on(start(
        trial_choice(&t, &dir),
        Duration::from_secs(99),
        "alive",
        async |accel, deadline, reason: &str| {
            seen.push((accel, deadline, reason.to_string()));
            if accel == Accel::Kvm {
                Err(fail(true))
            } else {
                Ok(7)
            }
        },
    ))
    .unwrap();
    assert_eq!((r.vm, r.accel), (7, Accel::Tcg));
    assert_eq!(r.reason, "KVM failed (QEMU aborted); using TCG");
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].0, seen[0].1), (Accel::Kvm, KVM_TRIAL_DEADLINE));
    assert_eq!(seen[0].2, "trying KVM");
    assert_eq!(
        (seen[1].0, seen[1].1),
        (Accel::Tcg, Duration::from_secs(99))
    );
    assert_eq!(seen[1].2, r.reason);
    let v = VerdictCache::new(&dir, &t.binary())
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(
        (v.accel, v.reason.as_str()),
        (Accel::Tcg, "KVM failed (QEMU aborted)")
    );

    // KVM works: the verdict says so and names the sign of life.
    std::fs::remove_dir_all(&dir).unwrap();
    let r = block_on(start(
        trial_choice(&t, &dir),
        Duration::from_secs(99),
        "alive",
        async |_, _, _: &str| Ok::<_, StartFailure<&str>>(1),
    ))
    .unwrap();
    assert_eq!((r.accel, r.reason.as_str()), (Accel::Kvm, "alive"));
    let v = VerdictCache::new(&dir, &t.binary())
        .unwrap()
        .read()
        .unwrap();
    assert_eq!(v.accel, Accel::Kvm);

    // A failure KVM is not to blame for: no fallback, no verdict.
    std::fs::remove_dir_all(&dir).unwrap();
    let mut n = 0;
    let e = block_on(start(
        trial_choice(&t, &dir),
        Duration::from_secs(99),
        "alive",
        async |_, _, _: &str| {
            n += 1;
            Err::<u8, _>(fail(false))
        },
    ))
    .unwrap_err();
    assert_eq!((e.0, e.1.error, n), (Accel::Kvm, "boom", 1));
    assert!(VerdictCache::new(&dir, &t.binary())
        .unwrap()
        .read()
        .is_none());

    // No trial: one attempt under the chosen accelerator, its failure returned as is.
    let choice = Choice {
        accel: Accel::Tcg,
        reason: "accel = \"tcg\"".into(),
        trial: None,
    };
    let e = block_on(start(
        choice,
        Duration::from_secs(5),
        "alive",
        async |a, d, _: &str| {
            assert_eq!((a, d), (Accel::Tcg, Duration::from_secs(5)));
            Err::<u8, _>(fail(true))
        },
    ))
    .unwrap_err();
    assert_eq!(e.0, Accel::Tcg);
}
