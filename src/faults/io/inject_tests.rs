//! The injectors: order, method and path filters, percent, weights, attribute merging and the
//! bounds of mistakes, all with seeded randomness.
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::faults::io::{parse_actions, IoRng, SplitMix64};

const VOLUME: &str = "/var/run/data";

fn injector(json: &str) -> Injector {
    Injector::new(VOLUME, parse_actions(json).unwrap())
}

fn latency(path: &str, methods: &str, percent: u8, d: &str) -> String {
    format!(
        r#"{{"type":"latency","path":"{path}","methods":{methods},"percent":{percent},"latency":"{d}"}}"#
    )
}

fn fault(path: &str, methods: &str, percent: u8, faults: &str) -> String {
    format!(
        r#"{{"type":"fault","path":"{path}","methods":{methods},"percent":{percent},"faults":{faults}}}"#
    )
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// Panics on any draw: proves a decision needed no randomness.
struct NoDraw;
impl IoRng for NoDraw {
    fn next_u64(&mut self) -> u64 {
        panic!("drew a random number")
    }
}

#[test]
fn one_injector_serves_every_thread() {
    fn shared<T: Send + Sync>() {}
    shared::<Injector>();
    let i = Injector::parse(VOLUME, E2E).unwrap();
    assert_eq!(i.actions().len(), 1);
    assert!(Injector::parse(VOLUME, "[{}]").is_err());
    assert!(Injector::parse(VOLUME, "").unwrap().is_empty());
}

/// `e2e-test/e2e/chaos/iochaos/io_error.go`, as chaos-daemon receives it.
const E2E: &str = r#"[{"type":"fault","path":"/var/run/data/*","methods":["write"],"percent":100,"faults":[{"errno":5,"weight":1}],"source":"e2e-ns/io-chaos"}]"#;

#[test]
fn e2e_error_fails_writes_of_files_in_the_volume_only() {
    let i = Injector::parse(VOLUME, E2E).unwrap();
    let r = &mut NoDraw;
    assert_eq!(
        i.before(Method::Write, Path::new("f"), r).errno,
        Some(libc::EIO)
    );
    assert!(i.before(Method::Read, Path::new("f"), r).is_nothing());
    assert!(i.before(Method::Write, Path::new("d/f"), r).is_nothing());
}

#[test]
fn container_paths_are_todas_joins() {
    let i = injector("[]");
    assert!(i.is_empty());
    assert_eq!(i.volume(), Path::new(VOLUME));
    assert_eq!(i.container_path(Path::new("")), Path::new("/var/run/data/"));
    assert_eq!(
        i.container_path(Path::new("a/b")),
        Path::new("/var/run/data/a/b")
    );
    assert_eq!(
        i.container_path(Path::new("/a")),
        Path::new("/var/run/data/a")
    );
}

#[test]
fn no_actions_means_nothing_and_no_draw() {
    let i = injector("null");
    let rel = Path::new("f");
    assert!(i.before(Method::Read, rel, &mut NoDraw).is_nothing());
    assert!(i.attr(rel, &mut NoDraw).is_empty());
    let mut buf = [7u8; 16];
    assert_eq!(i.reply_data(Method::Read, rel, &mut buf, &mut NoDraw), 0);
    assert_eq!(i.write_data(rel, &mut buf, &mut NoDraw), 0);
    assert_eq!(buf, [7u8; 16]);
}

#[test]
fn latency_follows_methods_and_path() {
    let i = injector(&list(&[latency(
        "/var/run/data/*",
        r#"["read"]"#,
        100,
        "100ms",
    )]));
    let r = &mut NoDraw;
    let d = |m, p: &str, r: &mut NoDraw| i.before(m, Path::new(p), r);
    assert_eq!(
        d(Method::Read, "f", r),
        Before {
            delay: Duration::from_millis(100),
            errno: None
        }
    );
    assert!(d(Method::Write, "f", r).is_nothing());
    assert!(d(Method::Open, "f", r).is_nothing());
    // `*` does not cross into a subdirectory.
    assert!(d(Method::Read, "sub/f", r).is_nothing());
    // The volume root ("<volume>/") does match `<volume>/*`.
    assert!(!d(Method::Read, "", r).is_nothing());
}

#[test]
fn covered_latencies_add_up_until_a_fault_fires() {
    let i = injector(&list(&[
        latency("", "[]", 100, "10ms"),
        latency("", r#"["write"]"#, 100, "1s"),
        latency("", "[]", 100, "20ms"),
        fault("", r#"["read"]"#, 100, r#"[{"errno":5,"weight":1}]"#),
        latency("", "[]", 100, "5s"),
    ]));
    let mut rng = SplitMix64::new(1);
    // read: 10ms + 20ms, then EIO; the 5s after the fault never waits.
    assert_eq!(
        i.before(Method::Read, Path::new("x"), &mut rng),
        Before {
            delay: Duration::from_millis(30),
            errno: Some(libc::EIO)
        }
    );
    // write: no fault, every latency that covers write.
    assert_eq!(
        i.before(Method::Write, Path::new("x"), &mut rng),
        Before {
            delay: Duration::from_millis(10 + 1000 + 20 + 5000),
            errno: None
        }
    );
}

#[test]
fn a_fault_that_does_not_fire_lets_later_actions_run() {
    let i = injector(&list(&[
        fault("/elsewhere/*", "[]", 100, r#"[{"errno":5,"weight":1}]"#),
        fault("", "[]", 0, r#"[{"errno":28,"weight":1}]"#),
        fault("", "[]", 100, r#"[{"errno":13,"weight":1}]"#),
        fault("", "[]", 100, r#"[{"errno":30,"weight":1}]"#),
    ]));
    let b = i.before(Method::Getattr, Path::new("f"), &mut NoDraw);
    assert_eq!(b.errno, Some(libc::EACCES));
    assert!(b.delay.is_zero());
}

#[test]
fn methods_upstream_never_hooks_are_still_answered_when_asked() {
    // toda has no hook for bmap; the library answers whatever the layer asks.
    let i = injector(&list(&[fault(
        "",
        r#"["bmap"]"#,
        100,
        r#"[{"errno":22,"weight":1}]"#,
    )]));
    assert_eq!(
        i.before(Method::Bmap, Path::new("f"), &mut NoDraw).errno,
        Some(libc::EINVAL)
    );
    assert_eq!(
        i.before(Method::Read, Path::new("f"), &mut NoDraw).errno,
        None
    );
}

#[test]
fn percent_draws_per_action_and_operation() {
    // Two independent 50% latencies: 0, 1 or 2 of them per operation with 1/4, 1/2, 1/4.
    let i = injector(&list(&[
        latency("", "[]", 50, "1ms"),
        latency("", "[]", 50, "2ms"),
    ]));
    let mut rng = SplitMix64::new(99);
    let n = 100_000;
    let mut by_delay = [0u32; 4];
    for _ in 0..n {
        let ms = i
            .before(Method::Read, Path::new("f"), &mut rng)
            .delay
            .as_millis();
        by_delay[ms as usize] += 1;
    }
    let frac = |k: usize| f64::from(by_delay[k]) / f64::from(n);
    for (k, want) in [(0, 0.25), (1, 0.25), (2, 0.25), (3, 0.25)] {
        assert!((frac(k) - want).abs() < 0.01, "{by_delay:?}");
    }
    // 30%: about 30 000 of 100 000 (σ ≈ 145).
    let i = injector(&list(&[fault("", "[]", 30, r#"[{"errno":5,"weight":1}]"#)]));
    let hits = (0..n)
        .filter(|_| {
            i.before(Method::Write, Path::new("f"), &mut rng)
                .errno
                .is_some()
        })
        .count();
    assert!((29_300..=30_700).contains(&hits), "{hits}");
}

#[test]
fn same_seed_same_decisions() {
    let i = injector(&list(&[
        latency("", "[]", 37, "1ms"),
        fault(
            "",
            "[]",
            20,
            r#"[{"errno":5,"weight":1},{"errno":28,"weight":2}]"#,
        ),
    ]));
    let run = |seed| {
        let mut rng = SplitMix64::new(seed);
        (0..200)
            .map(|_| i.before(Method::Read, Path::new("f"), &mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn errnos_are_chosen_by_weight() {
    let i = injector(&list(&[fault(
        "",
        "[]",
        100,
        r#"[{"errno":5,"weight":3},{"errno":13,"weight":0},{"errno":28,"weight":1}]"#,
    )]));
    let mut rng = SplitMix64::new(2024);
    let n = 100_000;
    let (mut eio, mut enospc) = (0, 0);
    for _ in 0..n {
        match i.before(Method::Write, Path::new("f"), &mut rng).errno {
            Some(libc::EIO) => eio += 1,
            Some(libc::ENOSPC) => enospc += 1,
            other => panic!("{other:?}"),
        }
    }
    // 75 000 / 25 000 expected, σ ≈ 137; weight 0 never.
    assert!((74_300..=75_700).contains(&eio), "{eio}");
    assert_eq!(eio + enospc, n);
    // One errno: always it.
    let one = [WeightedErrno {
        errno: 28,
        weight: 9,
    }];
    assert!((0..100).all(|_| choose_errno(&one, &mut rng) == 28));
}

#[test]
fn choose_errno_walks_the_list_like_toda() {
    struct Fixed(u64);
    impl IoRng for Fixed {
        fn next_u64(&mut self) -> u64 {
            self.0
        }
    }
    let f = [
        WeightedErrno {
            errno: 1,
            weight: 2,
        },
        WeightedErrno {
            errno: 2,
            weight: 0,
        },
        WeightedErrno {
            errno: 3,
            weight: 2,
        },
    ];
    // below(4) = high 64 bits of x·4: x in quarters of the range picks 0, 1, 2, 3.
    let q = u64::MAX / 4 + 1;
    assert_eq!(choose_errno(&f, &mut Fixed(0)), 1);
    assert_eq!(choose_errno(&f, &mut Fixed(q)), 1);
    assert_eq!(choose_errno(&f, &mut Fixed(2 * q)), 3);
    assert_eq!(choose_errno(&f, &mut Fixed(u64::MAX)), 3);
}

fn attr_action(path: &str, percent: u8, fields: &str) -> String {
    format!(
        r#"{{"type":"attrOverride","path":"{path}","methods":["write"],"percent":{percent},{fields}}}"#
    )
}

fn sample_attr() -> Attr {
    Attr {
        ino: 11,
        size: 4096,
        blocks: 8,
        atime: Timespec { sec: 10, nsec: 1 },
        mtime: Timespec { sec: 20, nsec: 2 },
        ctime: Timespec { sec: 30, nsec: 3 },
        kind: FileKind::RegularFile,
        perm: 0o644,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
    }
}

#[test]
fn attr_overrides_merge_in_order_field_by_field() {
    let i = injector(&list(&[
        attr_action("", 100, r#""perm":448,"size":1,"uid":5"#),
        attr_action("/var/run/data/*.db", 100, r#""size":2,"kind":"socket""#),
        attr_action("/other/**", 100, r#""nlink":9"#),
        attr_action("", 0, r#""gid":7"#),
        attr_action("", 100, r#""mtime":{"sec":5,"nsec":6}"#),
    ]));
    let o = i.attr(Path::new("x.db"), &mut NoDraw);
    assert_eq!(
        o,
        AttrOverride {
            perm: Some(0o700),
            size: Some(2),
            uid: Some(5),
            kind: Some(FileKind::Socket),
            mtime: Some(Timespec { sec: 5, nsec: 6 }),
            ..Default::default()
        }
    );
    let mut a = sample_attr();
    o.apply(&mut a);
    assert_eq!(
        a,
        Attr {
            perm: 0o700,
            size: 2,
            uid: 5,
            kind: FileKind::Socket,
            mtime: Timespec { sec: 5, nsec: 6 },
            ..sample_attr()
        }
    );
    assert_eq!(a.mode(), libc::S_IFSOCK | 0o700);
    // Another file: the `*.db` action does not cover it.
    let o = i.attr(Path::new("x.log"), &mut NoDraw);
    assert_eq!((o.size, o.kind), (Some(1), None));
    // Methods are ignored (the actions say `write`): the override is the same for any call.
    assert!(!i.attr(Path::new("x.log"), &mut NoDraw).is_empty());
}

#[test]
fn empty_override_changes_nothing() {
    let mut a = sample_attr();
    AttrOverride::default().apply(&mut a);
    assert_eq!(a, sample_attr());
    let mut m = AttrOverride {
        ino: Some(1),
        ..Default::default()
    };
    m.merge(&AttrOverride::default());
    assert_eq!(m.ino, Some(1));
}

#[test]
fn attr_from_a_real_stat() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"hello").unwrap();
    let st = nix::sys::stat::stat(&file).unwrap();
    let a = Attr::from_stat(&st).unwrap();
    assert_eq!(a.kind, FileKind::RegularFile);
    assert_eq!(a.size, 5);
    assert_eq!(a.ino, st.st_ino);
    assert_eq!(a.mode(), st.st_mode);
    assert_eq!(a.nlink, 1);
    assert_eq!(a.mtime.sec, st.st_mtime);
    let d = Attr::from_stat(&nix::sys::stat::stat(dir.path()).unwrap()).unwrap();
    assert_eq!(d.kind, FileKind::Directory);
    let mut bad = st;
    bad.st_mode = 0o644;
    assert_eq!(Attr::from_stat(&bad), None);
}

fn mistake(filling: Filling, max_occurrences: u64, max_length: u64) -> Mistake {
    Mistake {
        filling,
        max_occurrences,
        max_length,
    }
}

#[test]
fn mistakes_stay_within_their_bounds() {
    // 20 000 random shapes: buffer length, limits and filling; the runs reported are checked
    // against the buffer before and after.
    let mut rng = SplitMix64::new(0xbad_da7a);
    for case in 0..20_000 {
        let len = rng.below(300) as usize;
        let m = mistake(
            if case % 2 == 0 {
                Filling::Zero
            } else {
                Filling::Random
            },
            1 + rng.below(6),
            1 + rng.below(64),
        );
        let original: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
        let mut data = original.clone();
        let runs = m.apply(&mut data, &mut rng);
        if len == 0 {
            assert!(runs.is_empty());
            continue;
        }
        assert!(
            !runs.is_empty() && runs.len() as u64 <= m.max_occurrences,
            "{m:?} {runs:?}"
        );
        let mut touched = vec![false; len];
        for r in &runs {
            assert!(r.start < r.end && r.end <= len, "{len} {r:?}");
            assert!((r.end - r.start) as u64 <= m.max_length, "{m:?} {r:?}");
            touched[r.clone()].iter_mut().for_each(|t| *t = true);
        }
        for k in 0..len {
            if !touched[k] {
                assert_eq!(data[k], original[k], "byte {k} outside every run changed");
            } else if m.filling == Filling::Zero {
                assert_eq!(data[k], 0, "byte {k} in a zero run");
            }
        }
    }
}

#[test]
fn mistakes_use_the_whole_range_of_counts_lengths_and_positions() {
    let mut rng = SplitMix64::new(77);
    let m = mistake(Filling::Zero, 3, 4);
    let mut counts = [0u32; 4];
    let mut lengths = [0u32; 5];
    let mut first = false;
    let mut last = false;
    for _ in 0..10_000 {
        let mut data = vec![1u8; 64];
        let runs = m.apply(&mut data, &mut rng);
        counts[runs.len()] += 1;
        for r in &runs {
            lengths[r.end - r.start] += 1;
            first |= r.start == 0;
            last |= r.end == 64;
        }
    }
    assert_eq!(counts[0], 0);
    assert!(counts[1..].iter().all(|c| *c > 3_000), "{counts:?}");
    // A run starting in the last 3 bytes is clipped, so 1..=4 all appear and nothing longer.
    assert_eq!(lengths[0], 0);
    assert!(lengths[1..].iter().all(|c| *c > 3_000), "{lengths:?}");
    assert!(first && last);
    // One byte of buffer: every run is that byte.
    let mut one = [9u8];
    let runs = mistake(Filling::Zero, 5, 100).apply(&mut one, &mut rng);
    assert!(runs.iter().all(|r| *r == (0..1)));
    assert_eq!(one, [0]);
}

#[test]
fn random_filling_writes_random_bytes() {
    let mut rng = SplitMix64::new(3);
    let m = mistake(Filling::Random, 1, 4096);
    let mut changed = 0usize;
    let mut written = 0usize;
    for _ in 0..200 {
        let mut data = vec![0u8; 4096];
        for r in m.apply(&mut data, &mut rng) {
            written += r.len();
            changed += data[r].iter().filter(|b| **b != 0).count();
        }
    }
    // A random byte is 0 with probability 1/256.
    assert!(written > 10_000, "{written}");
    let zero_frac = 1.0 - changed as f64 / written as f64;
    assert!(zero_frac < 0.01, "{zero_frac}");
}

fn mistake_action(methods: &str, percent: u8, filling: &str) -> String {
    format!(
        r#"{{"type":"mistake","path":"/var/run/data/**/*","methods":{methods},"percent":{percent},"mistake":{{"filling":"{filling}","maxOccurrences":2,"maxLength":8}}}}"#
    )
}

#[test]
fn mistakes_apply_to_read_replies_and_write_buffers_their_methods_cover() {
    let mut rng = SplitMix64::new(8);
    let reads = injector(&list(&[mistake_action(r#"["read"]"#, 100, "zero")]));
    let mut buf = [0xffu8; 32];
    assert!(reads.reply_data(Method::Read, Path::new("d/f"), &mut buf, &mut rng) >= 1);
    assert!(buf.contains(&0));
    let mut buf = [0xffu8; 32];
    assert_eq!(reads.write_data(Path::new("d/f"), &mut buf, &mut rng), 0);
    assert_eq!(
        reads.reply_data(Method::Readlink, Path::new("d/f"), &mut buf, &mut rng),
        0
    );
    assert_eq!(buf, [0xffu8; 32]);

    let writes = injector(&list(&[mistake_action(r#"["write"]"#, 100, "zero")]));
    assert!(writes.write_data(Path::new("f"), &mut buf, &mut rng) >= 1);
    assert!(buf.contains(&0));
    let mut buf = [0xffu8; 32];
    assert_eq!(
        writes.reply_data(Method::Read, Path::new("f"), &mut buf, &mut rng),
        0
    );
    // Outside the glob, and at 0 percent: untouched.
    let mut buf = [0xffu8; 32];
    assert_eq!(
        Injector::new("/elsewhere", writes.actions().to_vec()).write_data(
            Path::new("f"),
            &mut buf,
            &mut rng
        ),
        0
    );
    let never = injector(&list(&[mistake_action("[]", 0, "random")]));
    assert_eq!(never.write_data(Path::new("f"), &mut buf, &mut NoDraw), 0);
    assert_eq!(buf, [0xffu8; 32]);
    // Mistakes do nothing before an operation; latencies and faults nothing to data.
    assert!(never
        .before(Method::Read, Path::new("f"), &mut NoDraw)
        .is_nothing());
    let lat = injector(&list(&[latency("", "[]", 100, "1s")]));
    assert_eq!(lat.write_data(Path::new("f"), &mut buf, &mut NoDraw), 0);
    assert!(lat.attr(Path::new("f"), &mut NoDraw).is_empty());
}

#[test]
fn two_mistakes_both_apply() {
    let i = injector(&list(&[
        mistake_action("[]", 100, "zero"),
        mistake_action("[]", 100, "zero"),
    ]));
    let mut rng = SplitMix64::new(4);
    let runs: Vec<usize> = (0..2_000)
        .map(|_| i.reply_data(Method::Read, Path::new("f"), &mut [1u8; 64], &mut rng))
        .collect();
    assert!(runs.iter().all(|r| (2..=4).contains(r)), "{runs:?}");
    assert!(runs.contains(&2) && runs.contains(&4));
}
