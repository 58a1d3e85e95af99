use super::*;

fn entry(uid: &str, sec: i64, nsec: i64, mask: u64) -> TimeEntry {
    TimeEntry {
        uid: uid.into(),
        sec,
        nsec,
        mask,
    }
}

fn spec(sec: i64, nsec: i64, mask: u64) -> TimeSpec {
    TimeSpec {
        entry: entry("u", sec, nsec, mask),
        key: "pod:ctr".into(),
    }
}

#[test]
fn masks_and_offsets_are_validated() {
    assert_eq!(
        spec(-600, -100, 1).validate().unwrap(),
        TimeOffset::new(-601, 999_999_900).unwrap()
    );
    assert!(matches!(
        spec(1, 0, 0).validate(),
        Err(TimeError::NoClock(0))
    ));
    assert!(matches!(
        spec(1, 0, 1 << 12).validate(),
        Err(TimeError::BadMask(_))
    ));
    assert!(spec(1, 0, (1 << 12) - 1).validate().is_ok());
    assert!(matches!(
        spec(i64::MAX, 2_000_000_000, 1).validate(),
        Err(TimeError::BadOffset { .. })
    ));
    for e in [
        TimeError::NoClock(0),
        TimeError::BadMask(1 << 40),
        TimeError::NoKey,
    ] {
        assert_eq!(e.kind(), FailureKind::InvalidArgument, "{e}");
    }
    assert_eq!(TimeError::Busy(3).kind(), FailureKind::FailedPrecondition);
    assert_eq!(
        TimeError::Mismatch(3).kind(),
        FailureKind::FailedPrecondition
    );
    assert_eq!(TimeError::Gone(3).kind(), FailureKind::NotFound);
}

#[test]
fn entries_merge_as_chaos_mesh_merges_them() {
    let (off, mask) = merge(&[entry("a", 3600, 0, 1), entry("b", 60, 0, 2)]).unwrap();
    assert_eq!(off, TimeOffset::new(3660, 0).unwrap());
    assert_eq!(mask, 3);
    // -10m100ns plus +1ns: nanoseconds carry across the second boundary.
    let (off, _) = merge(&[entry("a", -600, -100, 1), entry("b", 0, 101, 1)]).unwrap();
    assert_eq!(off.as_nanos(), -600_000_000_000 + 1);
    let (off, mask) = merge(&[entry("a", 0, 999_999_999, 1), entry("b", 0, 1, 1)]).unwrap();
    assert_eq!((off.sec(), off.nsec(), mask), (1, 0, 1));
    assert_eq!(
        merge(&[entry("a", i64::MAX, 0, 1), entry("b", i64::MAX, 0, 1)]),
        None
    );
}

#[test]
fn the_key_is_the_pod_container_name_else_the_container_else_the_pid() {
    let c = Target::Container {
        id: "containerd://abc".into(),
        pod_uid: String::new(),
    };
    assert_eq!(key_of(&c, "pod1:app").unwrap(), "pod1:app");
    assert_eq!(key_of(&c, "").unwrap(), "containerd://abc");
    assert_eq!(key_of(&Target::Pid(42), "").unwrap(), "pid:42");
    let empty = Target::Container {
        id: String::new(),
        pod_uid: String::new(),
    };
    assert!(matches!(key_of(&empty, " "), Err(TimeError::NoKey)));
    assert_eq!(group_of("pod1:app"), "time/pod1:app");
}

#[test]
fn the_record_round_trips_and_reads_well() {
    let me = ProcessIdentity::of(std::process::id()).unwrap();
    let f = TimeFault {
        key: "pod:app".into(),
        container: "containerd://abc".into(),
        entries: vec![entry("a", -600, -100, 1)],
        offset: TimeOffset::new(-600, -100).unwrap(),
        mask: 0b11,
        token: 0xabc1,
        members: Members::PidNs { ino: 4026531836 },
        processes: vec![me],
        sites: vec![Site {
            func: crate::vdso::FakeFn::Time,
            offset: 0x9a0,
            pristine: vec![0x55; 12],
        }],
    };
    let json = serde_json::to_string(&f).unwrap();
    let back: TimeFault = serde_json::from_str(&json).unwrap();
    assert_eq!(back.sites, f.sites);
    assert_eq!(back.offset, f.offset);
    assert_eq!(back.members, f.members);
    assert_eq!(back.kind(), "time");
    assert_eq!(back.durability(), Durability::Boot);
    assert_eq!(back.scope(), Scope::Process);
    assert_eq!(
        back.summary(),
        "clock -600.000000100 s on REALTIME|MONOTONIC for pod:app (pid namespace 4026531836; 1 process(es) at apply)"
    );
    // faultd itself is never a candidate, even when recorded.
    assert!(!back.candidates().contains(&std::process::id()));
    assert!(!back.target_gone(&EffectCtx::default()));
}

#[test]
fn clock_names_make_the_mask_the_controller_makes() {
    assert_eq!(clock_mask("CLOCK_REALTIME"), Ok(1));
    assert_eq!(clock_mask("REALTIME, monotonic"), Ok(3));
    assert_eq!(clock_mask("CLOCK_BOOTTIME,CLOCK_TAI"), Ok(1 << 7 | 1 << 11));
    assert!(clock_mask("").is_err());
    assert!(clock_mask("WALL").is_err());
    assert_eq!(clocks(1 << 7 | 1), "REALTIME|BOOTTIME");
}
