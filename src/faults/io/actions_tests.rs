//! `parse_actions`: fixtures in the exact form chaos-daemon receives (Go `encoding/json` of
//! `[]v1alpha1.IOChaosAction`, field order and omissions included) and every refusal.
use std::time::Duration;

use super::*;
use crate::faults::io::matcher::{Filter, Method, MethodSet};

fn one(json: &str) -> Action {
    let mut v = parse_actions(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(v.len(), 1, "{json}");
    v.remove(0)
}

fn err(json: &str) -> String {
    match parse_actions(json) {
        Ok(v) => panic!("{json}: accepted as {v:?}"),
        Err(e) => e.to_string(),
    }
}

/// `e2e-test/e2e/chaos/iochaos/io_delay.go`: latency 1s on `/var/run/data/*`, every method.
/// The controller (`controllers/chaosimpl/iochaos/impl.go`) adds `faults` to every action.
const E2E_DELAY: &str = r#"[{"type":"latency","path":"/var/run/data/*","percent":100,"faults":[{"errno":0,"weight":1}],"latency":"1s","source":"e2e-ns/io-chaos"}]"#;
/// `io_error.go`: errno 5 on writes.
const E2E_ERROR: &str = r#"[{"type":"fault","path":"/var/run/data/*","methods":["write"],"percent":100,"faults":[{"errno":5,"weight":1}],"source":"e2e-ns/io-chaos"}]"#;
/// `io_mistake.go`: zeros, one run of at most 10000 bytes, reads and writes.
const E2E_MISTAKE: &str = r#"[{"type":"mistake","path":"/var/run/data/*","methods":["read","write"],"percent":100,"faults":[{"errno":0,"weight":1}],"mistake":{"filling":"zero","maxOccurrences":1,"maxLength":10000},"source":"e2e-ns/io-chaos"}]"#;
/// An attrOverride with every field (`AttrOverrideSpec` is embedded: its fields sit in the
/// action); `perm: 72` is the Chaos Mesh documentation's example (0o110).
const ATTR_ALL: &str = r#"[{"type":"attrOverride","path":"/data/**/*","methods":["read"],"percent":100,"faults":[{"errno":0,"weight":1}],"ino":7,"size":1024,"blocks":2,"atime":{"sec":1700000000,"nsec":5},"mtime":{"sec":-1,"nsec":0},"ctime":{"sec":0,"nsec":999999999},"kind":"charDevice","perm":72,"nlink":3,"uid":1000,"gid":1001,"rdev":259,"source":"ns/attr"}]"#;

#[test]
fn e2e_delay_fixture() {
    let a = one(E2E_DELAY);
    assert_eq!(a.kind, ActionKind::Latency(Duration::from_secs(1)));
    assert_eq!(
        a.filter,
        Filter::new("/var/run/data/*", MethodSet::ALL, 100).unwrap()
    );
    assert_eq!(a.source, "e2e-ns/io-chaos");
    assert_eq!(a.kind.name(), "latency");
}

#[test]
fn e2e_error_fixture() {
    let a = one(E2E_ERROR);
    assert_eq!(
        a.kind,
        ActionKind::Fault(vec![WeightedErrno {
            errno: 5,
            weight: 1
        }])
    );
    assert_eq!(a.filter.methods(), MethodSet::of(&[Method::Write]));
    assert_eq!(a.filter.pattern(), "/var/run/data/*");
    assert_eq!(a.filter.percent(), 100);
}

#[test]
fn e2e_mistake_fixture() {
    let a = one(E2E_MISTAKE);
    assert_eq!(
        a.kind,
        ActionKind::Mistake(Mistake {
            filling: Filling::Zero,
            max_occurrences: 1,
            max_length: 10000
        })
    );
    assert_eq!(
        a.filter.methods(),
        MethodSet::of(&[Method::Read, Method::Write])
    );
}

#[test]
fn attr_override_with_every_field_ignores_methods() {
    let a = one(ATTR_ALL);
    let ActionKind::AttrOverride(o) = a.kind else {
        panic!("{a:?}")
    };
    assert_eq!(
        o,
        AttrOverride {
            ino: Some(7),
            size: Some(1024),
            blocks: Some(2),
            atime: Some(Timespec {
                sec: 1_700_000_000,
                nsec: 5
            }),
            mtime: Some(Timespec { sec: -1, nsec: 0 }),
            ctime: Some(Timespec {
                sec: 0,
                nsec: 999_999_999
            }),
            kind: Some(FileKind::CharDevice),
            perm: Some(0o110),
            nlink: Some(3),
            uid: Some(1000),
            gid: Some(1001),
            rdev: Some(259),
        }
    );
    // toda's AttrOverrideConfig has no methods: the override covers every method.
    assert!(a.filter.methods().is_all());
    // The documentation's minimal form.
    let a = one(
        r#"[{"type":"attrOverride","path":"/var/run/etcd/**/*","percent":100,"faults":[{"errno":0,"weight":1}],"perm":72}]"#,
    );
    assert_eq!(
        a.kind,
        ActionKind::AttrOverride(AttrOverride {
            perm: Some(72),
            ..Default::default()
        })
    );
    // An override that sets nothing is accepted (toda: a no-op injector).
    let a = one(r#"[{"type":"attrOverride","path":"","percent":100}]"#);
    assert_eq!(a.kind, ActionKind::AttrOverride(AttrOverride::default()));
}

#[test]
fn every_file_kind_spelling() {
    for (name, kind) in [
        ("namedPipe", FileKind::NamedPipe),
        ("charDevice", FileKind::CharDevice),
        ("blockDevice", FileKind::BlockDevice),
        ("directory", FileKind::Directory),
        ("regularFile", FileKind::RegularFile),
        ("symlink", FileKind::Symlink),
        ("socket", FileKind::Socket),
    ] {
        let a = one(&format!(
            r#"[{{"type":"attrOverride","path":"","percent":1,"kind":"{name}"}}]"#
        ));
        assert_eq!(
            a.kind,
            ActionKind::AttrOverride(AttrOverride {
                kind: Some(kind),
                ..Default::default()
            })
        );
        assert_eq!(FileKind::from_mode(kind.mode_bits() | 0o644), Some(kind));
    }
    assert_eq!(FileKind::from_mode(0o644), None);
}

#[test]
fn several_iochaos_on_one_pod_keep_their_order() {
    let json = format!(
        "[{},{},{}]",
        &E2E_DELAY[1..E2E_DELAY.len() - 1],
        &E2E_ERROR[1..E2E_ERROR.len() - 1],
        &E2E_MISTAKE[1..E2E_MISTAKE.len() - 1]
    );
    let v = parse_actions(&json).unwrap();
    let names: Vec<_> = v.iter().map(|a| a.kind.name()).collect();
    assert_eq!(names, ["latency", "fault", "mistake"]);
}

#[test]
fn todas_own_examples_parse() {
    // toda `config-examples/latency-example.json` (no methods, no faults, no source).
    let a = one(
        r#"[{"type":"latency","path":"/var/lib/postgresql/data/**/*","percent":100,"latency":"10s"}]"#,
    );
    assert_eq!(a.kind, ActionKind::Latency(Duration::from_secs(10)));
    assert!(a.filter.methods().is_all());
    assert_eq!(a.source, "");
    // `mistake-example.json`: upper-case methods, as toda lowercases them.
    let a = one(
        r#"[{"type":"mistake","path":"/var/test/**/*","methods":["READ","WRITE"],"mistake":{"filling":"zero","maxOccurrences":1,"maxLength":10000},"percent":100}]"#,
    );
    assert_eq!(
        a.filter.methods(),
        MethodSet::of(&[Method::Read, Method::Write])
    );
}

#[test]
fn no_actions() {
    for empty in ["", "  \n", "null", " null ", "[]", "[ ]"] {
        assert_eq!(parse_actions(empty).unwrap(), Vec::new(), "{empty:?}");
    }
}

#[test]
fn missing_or_null_path_and_methods_cover_everything() {
    for json in [
        r#"[{"type":"latency","percent":100,"latency":"1ms"}]"#,
        r#"[{"type":"latency","path":null,"methods":null,"percent":100,"latency":"1ms"}]"#,
        r#"[{"type":"latency","path":"","methods":[],"percent":100,"latency":"1ms"}]"#,
    ] {
        let a = one(json);
        assert_eq!(a.filter.pattern(), "", "{json}");
        assert!(a.filter.methods().is_all(), "{json}");
    }
}

#[test]
fn keys_in_another_case_are_found_as_go_finds_them() {
    let a =
        one(r#"[{"Type":"fault","PATH":"/d/*","Percent":40,"Faults":[{"Errno":28,"WEIGHT":2}]}]"#);
    assert_eq!(
        a.kind,
        ActionKind::Fault(vec![WeightedErrno {
            errno: 28,
            weight: 2
        }])
    );
    assert_eq!(a.filter.percent(), 40);
}

#[test]
fn fields_of_other_types_and_unknown_fields_are_ignored() {
    // A fault with a bad latency, a mistake with a bad perm, a latency without mistake...
    one(
        r#"[{"type":"fault","path":"","percent":1,"faults":[{"errno":5,"weight":1}],"latency":"soon","perm":99999}]"#,
    );
    one(
        r#"[{"type":"mistake","path":"","percent":1,"mistake":{"filling":"random","maxOccurrences":2,"maxLength":3},"faults":"x","kind":"file"}]"#,
    );
    one(
        r#"[{"type":"latency","path":"","percent":1,"latency":"5ms","mistake":7,"whatever":{"a":1}}]"#,
    );
}

#[test]
fn latency_takes_go_durations() {
    for (s, d) in [
        ("100ms", Duration::from_millis(100)),
        ("1.5s", Duration::from_millis(1500)),
        ("1h30m", Duration::from_secs(5400)),
        ("300µs", Duration::from_micros(300)),
        ("300us", Duration::from_micros(300)),
        ("7ns", Duration::from_nanos(7)),
        ("0", Duration::ZERO),
        ("0s", Duration::ZERO),
        ("+2s", Duration::from_secs(2)),
    ] {
        let a = one(&format!(
            r#"[{{"type":"latency","path":"","percent":100,"latency":"{s}"}}]"#
        ));
        assert_eq!(a.kind, ActionKind::Latency(d), "{s}");
    }
}

#[test]
fn weighted_faults_keep_order_and_zero_weights() {
    let a = one(
        r#"[{"type":"fault","path":"","percent":100,"faults":[{"errno":5,"weight":3},{"errno":28,"weight":0},{"errno":511,"weight":1},{"errno":1,"weight":2147483647}]}]"#,
    );
    let ActionKind::Fault(f) = a.kind else {
        panic!()
    };
    assert_eq!(
        f.iter().map(|f| (f.errno, f.weight)).collect::<Vec<_>>(),
        [(5, 3), (28, 0), (511, 1), (1, i32::MAX as u32)]
    );
}

/// Every refusal, with its whole message (the RPC answers INVALID_ARGUMENT with it).
#[test]
fn refusals_name_the_action_and_the_field() {
    let base = |extra: &str| format!(r#"[{{"type":"latency","path":"","latency":"1s",{extra}}}]"#);
    let fault =
        |faults: &str| format!(r#"[{{"type":"fault","path":"","percent":100,"faults":{faults}}}]"#);
    let attr =
        |extra: &str| format!(r#"[{{"type":"attrOverride","path":"","percent":100,{extra}}}]"#);
    let mistake =
        |m: &str| format!(r#"[{{"type":"mistake","path":"","percent":100,"mistake":{m}}}]"#);
    let cases: Vec<(String, &str)> = vec![
        ("{\"type\":\"latency\"}".into(), "IOChaos actions: expected a JSON list of IOChaos actions, got an object"),
        ("\"[]\"".into(), "IOChaos actions: expected a JSON list of IOChaos actions, got a string"),
        ("[1]".into(), "IOChaos action 0, (action): expected an object, got a number"),
        ("[null]".into(), "IOChaos action 0, (action): expected an object, got null"),
        (r#"[{"path":"","percent":1}]"#.into(), "IOChaos action 0, type: missing (latency, fault, attrOverride or mistake)"),
        (r#"[{"type":"delay","path":"","percent":1}]"#.into(), r#"IOChaos action 0, type: unknown action type "delay" (latency, fault, attrOverride or mistake)"#),
        (r#"[{"type":"Latency","path":"","percent":1,"latency":"1s"}]"#.into(), r#"IOChaos action 0, type: unknown action type "Latency" (latency, fault, attrOverride or mistake)"#),
        (r#"[{"type":5,"percent":1}]"#.into(), "IOChaos action 0, type: expected a string, got a number"),
        (base(r#""percent":100,"methods":["read","reed"]"#), r#"IOChaos action 0, methods[1]: unknown method "reed" (one of lookup, forget, getattr, setattr, readlink, mknod, mkdir, unlink, rmdir, symlink, rename, link, open, read, write, flush, release, fsync, opendir, readdir, releasedir, fsyncdir, statfs, setxattr, getxattr, listxattr, removexattr, access, create, getlk, setlk, bmap)"#),
        (base(r#""percent":100,"methods":"read""#), "IOChaos action 0, methods: expected a list of method names, got a string"),
        (base(r#""percent":100,"methods":[13]"#), "IOChaos action 0, methods[0]: expected a method name, got a number"),
        (r#"[{"type":"latency","path":"","latency":"1s"}]"#.into(), "IOChaos action 0, percent: missing (0 to 100)"),
        (base(r#""percent":101"#), "IOChaos action 0, percent: 101 is outside 0..=100"),
        (base(r#""percent":-1"#), "IOChaos action 0, percent: -1 is outside 0..=100"),
        (base(r#""percent":50.5"#), "IOChaos action 0, percent: 50.5 is not an integer"),
        (base(r#""percent":"50""#), "IOChaos action 0, percent: expected an integer, got a string"),
        (base(r#""percent":100,"path":"/data/***""#), "IOChaos action 0, path: \"/data/***\" is not a valid glob: Pattern syntax error near position 8: wildcards are either regular `*` or recursive `**`"),
        (base(r#""percent":100,"path":"/data/[a""#), "IOChaos action 0, path: \"/data/[a\" is not a valid glob: Pattern syntax error near position 6: invalid range pattern"),
        (base(r#""percent":100,"path":7"#), "IOChaos action 0, path: expected a string, got a number"),
        (base(r#""percent":100,"source":{}"#), "IOChaos action 0, source: expected a string, got an object"),
        (r#"[{"type":"latency","path":"","percent":100}]"#.into(), "IOChaos action 0, latency: missing (a duration such as \"100ms\")"),
        (r#"[{"type":"latency","path":"","percent":100,"latency":""}]"#.into(), "IOChaos action 0, latency: missing (a duration such as \"100ms\")"),
        (r#"[{"type":"latency","path":"","percent":100,"latency":"100"}]"#.into(), "IOChaos action 0, latency: bad duration: \"100\": missing unit (ns, us, ms, s, m, h)"),
        (r#"[{"type":"latency","path":"","percent":100,"latency":"1d"}]"#.into(), "IOChaos action 0, latency: bad duration: \"1d\": unknown unit \"d\" (ns, us, ms, s, m, h)"),
        (r#"[{"type":"latency","path":"","percent":100,"latency":"-1s"}]"#.into(), "IOChaos action 0, latency: \"-1s\" is negative"),
        (r#"[{"type":"latency","path":"","percent":100,"latency":100}]"#.into(), "IOChaos action 0, latency: expected a string, got a number"),
        (r#"[{"type":"fault","path":"","percent":100}]"#.into(), "IOChaos action 0, faults: missing (a list of {\"errno\": N, \"weight\": W}, e.g. errno 5 for EIO)"),
        (fault("[]"), "IOChaos action 0, faults: missing (a list of {\"errno\": N, \"weight\": W}, e.g. errno 5 for EIO)"),
        (fault("{}"), "IOChaos action 0, faults: expected a list, got an object"),
        (fault("[5]"), "IOChaos action 0, faults[0]: expected an object, got a number"),
        (fault(r#"[{"errno":"EIO","weight":1}]"#), "IOChaos action 0, faults[0].errno: expected a number in 1..=511 such as 5 for EIO, got a string \"EIO\""),
        (fault(r#"[{"errno":0,"weight":1}]"#), "IOChaos action 0, faults[0].errno: 0 is not an error (a number in 1..=511 such as 5 for EIO)"),
        (fault(r#"[{"errno":5,"weight":1},{"errno":512,"weight":1}]"#), "IOChaos action 0, faults[1].errno: 512 is not a number in 1..=511 such as 5 for EIO (512 and above are kernel-internal)"),
        (fault(r#"[{"errno":-5,"weight":1}]"#), "IOChaos action 0, faults[0].errno: -5 is not a number in 1..=511 such as 5 for EIO (512 and above are kernel-internal)"),
        (fault(r#"[{"weight":1}]"#), "IOChaos action 0, faults[0].errno: missing (a number in 1..=511 such as 5 for EIO)"),
        (fault(r#"[{"errno":5}]"#), "IOChaos action 0, faults[0].weight: missing"),
        (fault(r#"[{"errno":5,"weight":-1}]"#), "IOChaos action 0, faults[0].weight: -1 is outside 0..=2147483647"),
        (fault(r#"[{"errno":5,"weight":2147483648}]"#), "IOChaos action 0, faults[0].weight: 2147483648 is outside 0..=2147483647"),
        (fault(r#"[{"errno":5,"weight":0},{"errno":6,"weight":0}]"#), "IOChaos action 0, faults: every weight is 0: the action could never return an error"),
        (attr(r#""perm":4096"#), "IOChaos action 0, perm: 4096 is outside 0..=4095"),
        (attr(r#""kind":"file""#), "IOChaos action 0, kind: unknown file kind \"file\" (one of namedPipe, charDevice, blockDevice, directory, regularFile, symlink, socket)"),
        (attr(r#""atime":{"sec":1,"nsec":1000000000}"#), "IOChaos action 0, atime.nsec: 1000000000 is outside 0..=999999999"),
        (attr(r#""mtime":{"sec":1.5}"#), "IOChaos action 0, mtime.sec: 1.5 is not a 64-bit integer"),
        (attr(r#""ctime":"yesterday""#), "IOChaos action 0, ctime: expected an object, got a string"),
        (attr(r#""atime":{"sec":"1"}"#), "IOChaos action 0, atime.sec: expected an integer, got a string"),
        (attr(r#""ino":-1"#), "IOChaos action 0, ino: -1 is outside 0..=18446744073709551615"),
        (attr(r#""uid":4294967296"#), "IOChaos action 0, uid: 4294967296 is outside 0..=4294967295"),
        (attr(r#""nlink":true"#), "IOChaos action 0, nlink: expected an integer, got a boolean"),
        (r#"[{"type":"mistake","path":"","percent":100}]"#.into(), "IOChaos action 0, mistake: missing ({\"filling\": \"zero\"|\"random\", \"maxOccurrences\": N, \"maxLength\": N})"),
        (mistake("[]"), "IOChaos action 0, mistake: expected an object, got a list"),
        (mistake(r#"{"filling":"ones","maxOccurrences":1,"maxLength":1}"#), "IOChaos action 0, mistake.filling: \"ones\" is neither \"zero\" nor \"random\""),
        (mistake(r#"{"maxOccurrences":1,"maxLength":1}"#), "IOChaos action 0, mistake.filling: missing (\"zero\" or \"random\")"),
        (mistake(r#"{"filling":"zero","maxOccurrences":0,"maxLength":1}"#), "IOChaos action 0, mistake.maxOccurrences: 0: must be at least 1"),
        (mistake(r#"{"filling":"zero","maxOccurrences":1}"#), "IOChaos action 0, mistake.maxLength: missing (at least 1)"),
        (mistake(r#"{"filling":"zero","maxOccurrences":1,"maxLength":-3}"#), "IOChaos action 0, mistake.maxLength: -3 is outside 0..=18446744073709551615"),
    ];
    for (json, want) in cases {
        assert_eq!(err(&json), want, "{json}");
    }
}

#[test]
fn the_index_is_the_bad_actions_and_nothing_is_returned() {
    let json = format!(
        "[{},{},{}]",
        &E2E_DELAY[1..E2E_DELAY.len() - 1],
        &E2E_ERROR[1..E2E_ERROR.len() - 1],
        r#"{"type":"fault","path":"","percent":100,"methods":["write","bogus"],"faults":[{"errno":5,"weight":1}]}"#
    );
    let e = parse_actions(&json).unwrap_err();
    assert!(
        matches!(&e, IoError::Action { index: 2, field, .. } if field == "methods[1]"),
        "{e}"
    );
}

#[test]
fn bad_json_is_refused_with_the_parsers_position() {
    for (json, want) in [
        (
            "[",
            "IOChaos actions: EOF while parsing a list at line 1 column 1",
        ),
        (
            "[{\"type\":\"latency\",}]",
            "IOChaos actions: trailing comma at line 1 column 20",
        ),
        (
            "latency",
            "IOChaos actions: expected value at line 1 column 1",
        ),
    ] {
        assert_eq!(err(json), want, "{json}");
    }
}

#[test]
fn attr_override_still_validates_its_method_names() {
    // The controller copies the IOChaos's methods into every action; a bad one is refused even
    // where it would not be used.
    assert_eq!(
        err(r#"[{"type":"attrOverride","path":"","percent":1,"methods":["nope"],"perm":1}]"#)
            .split(" (one of")
            .next()
            .unwrap(),
        "IOChaos action 0, methods[0]: unknown method \"nope\""
    );
}
