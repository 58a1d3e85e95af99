use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rec {
    seq: u64,
    kind: String,
    target: String,
}

fn rec(seq: u64) -> Rec {
    Rec {
        seq,
        kind: if seq.is_multiple_of(2) {
            "inject"
        } else {
            "recover"
        }
        .to_owned(),
        // Include characters that need JSON escaping, incl. a newline.
        target: format!("pod-{seq} \"ns\"/ünï\n\t{}", "x".repeat(seq as usize % 7)),
    }
}

fn recs(range: std::ops::Range<u64>) -> Vec<Rec> {
    range.map(rec).collect()
}

fn open(dir: &Path) -> (Journal<Rec>, Vec<Rec>) {
    Journal::<Rec>::open(dir).expect("open journal")
}

/// Write `records` into a fresh journal in `dir` and return the file bytes.
fn write_journal(dir: &Path, records: &[Rec]) -> Vec<u8> {
    let (mut j, replayed) = open(dir);
    assert!(replayed.is_empty());
    for r in records {
        j.append(r).unwrap();
    }
    drop(j);
    fs::read(dir.join(JOURNAL_FILE)).unwrap()
}

/// Install `bytes` as the journal file of a fresh directory.
fn dir_with_file(bytes: &[u8]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join(JOURNAL_FILE), bytes).unwrap();
    d
}

/// Deterministic xorshift64* PRNG (no extra crates).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The journal lines of `records`.
fn encode(records: &[Rec]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        format::encode_into(&mut out, r).unwrap();
    }
    out
}

fn corrupt_files(dir: &Path) -> Vec<std::path::PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .collect()
}

// (1) round trip ------------------------------------------------------------

#[test]
fn journal_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("nested/state"); // created on open
    let (mut j, replayed) = open(&dir);
    assert!(replayed.is_empty());
    assert!(j.is_empty());
    assert_eq!(j.path(), dir.join(JOURNAL_FILE));
    assert_eq!(j.dir(), dir);

    j.append(&rec(0)).unwrap();
    j.append_many(&recs(1..5)).unwrap();
    j.append_many(&[]).unwrap();
    j.append(&rec(5)).unwrap();
    assert_eq!(j.len(), 6);
    let st = j.stats();
    assert_eq!(st.records, 6);
    assert_eq!(st.syncs, 3);
    assert_eq!(st.bytes, fs::metadata(j.path()).unwrap().len());
    assert!(st.total_sync >= st.last_sync);
    assert_eq!(j.last_sync(), st.last_sync);
    assert_eq!(st.unsynced_bytes, 0);
    assert_eq!(*j.last_replay(), Replay::default());
    drop(j);

    let text = fs::read_to_string(dir.join(JOURNAL_FILE)).unwrap();
    assert_eq!(text.lines().count(), 6, "one record per line:\n{text}");
    assert!(text.lines().all(|l| l.starts_with("FJ1 ")));

    let (j, replayed) = open(&dir);
    assert_eq!(replayed, recs(0..6));
    assert_eq!(j.len(), 6);
    assert!(!j.last_replay().is_corrupt() && !j.last_replay().torn_tail);
    assert_eq!(j.last_replay().records, 6);
    let pid = fs::read_to_string(dir.join(LOCK_FILE)).unwrap();
    assert_eq!(pid, format!("{}\n", std::process::id()));
}

#[test]
fn journal_encode_errors_leave_journal_usable() {
    let d = tempfile::tempdir().unwrap();
    let (mut j, _) = Journal::<BTreeMap<Vec<u8>, u8>>::open(d.path()).unwrap();
    let bad = BTreeMap::from([(vec![1u8], 1u8)]); // non-string JSON key
    assert!(matches!(j.append(&bad), Err(JournalError::Encode(_))));
    // A failing record in a batch writes nothing.
    let batch = [BTreeMap::new(), bad];
    assert!(matches!(
        j.append_many(&batch),
        Err(JournalError::Encode(_))
    ));
    assert!(matches!(j.compact(&batch), Err(JournalError::Encode(_))));
    assert_eq!(j.len(), 0);
    j.append(&BTreeMap::new()).unwrap();
    drop(j);
    let (_j, replayed) = Journal::<BTreeMap<Vec<u8>, u8>>::open(d.path()).unwrap();
    assert_eq!(replayed, vec![BTreeMap::new()]);

    let (mut j, _) = Journal::<String>::open(&d.path().join("big")).unwrap();
    let huge = "a".repeat(MAX_RECORD_LEN);
    assert!(matches!(
        j.append(&huge),
        Err(JournalError::RecordTooLarge {
            max: MAX_RECORD_LEN,
            ..
        })
    ));
    assert_eq!(fs::metadata(j.path()).unwrap().len(), 0);
}

// (2) torn-write replay -------------------------------------------------------

#[test]
fn journal_torn_write_replay_every_offset() {
    const N: u64 = 6;
    let src = tempfile::tempdir().unwrap();
    let full = write_journal(src.path(), &recs(0..N));
    let last_len = {
        let mut one = Vec::new();
        format::encode_into(&mut one, &rec(N - 1)).unwrap();
        one.len()
    };
    let last_start = full.len() - last_len;
    assert_eq!(full[last_start - 1], b'\n');

    for cut in last_start..=full.len() {
        let d = dir_with_file(&full[..cut]);
        let (mut j, replayed) = open(d.path());
        let expect_n = if cut == full.len() { N } else { N - 1 };
        assert_eq!(replayed, recs(0..expect_n), "cut at {cut}");
        assert_eq!(j.len() as u64, expect_n);

        let replay = j.last_replay().clone();
        assert!(
            !replay.is_corrupt(),
            "cut at {cut}: a torn line is silent: {replay:?}"
        );
        if cut == last_start || cut == full.len() {
            assert!(!replay.torn_tail, "cut at {cut}: {replay:?}");
        } else {
            assert!(replay.torn_tail, "cut at {cut}");
            assert_eq!(replay.torn_tail_bytes, (cut - last_start) as u64);
        }
        // Truncated back to the last good record before any append.
        let good = if cut == full.len() {
            full.len()
        } else {
            last_start
        };
        assert_eq!(fs::metadata(j.path()).unwrap().len(), good as u64);
        assert!(corrupt_files(d.path()).is_empty());

        j.append(&rec(100)).unwrap();
        drop(j);
        let (_j, replayed) = open(d.path());
        let mut want = recs(0..expect_n);
        want.push(rec(100));
        assert_eq!(replayed, want, "append after cut at {cut}");
    }
}

// (3) corruption ----------------------------------------------------------------

#[test]
fn journal_corrupt_byte_in_last_record_is_dropped() {
    let src = tempfile::tempdir().unwrap();
    let full = write_journal(src.path(), &recs(0..5));
    let text = std::str::from_utf8(&full).unwrap();
    let last_start = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    let mid = last_start + (full.len() - last_start) / 2;

    let mut bad = full.clone();
    bad[mid] ^= 0x01;
    let d = dir_with_file(&bad);
    let (mut j, replayed) = open(d.path());
    assert_eq!(replayed, recs(0..4));
    let replay = j.last_replay().clone();
    assert_eq!(replay.corrupt.len(), 1, "{replay:?}");
    let dropped = &replay.corrupt[0];
    assert_eq!(dropped.offset, last_start as u64);
    assert_eq!(dropped.end(), full.len() as u64);
    assert!(!replay.torn_tail);
    // A complete (acknowledged) line was dropped: preserved for forensics.
    let saved = dropped.saved_to.clone().expect("saved");
    assert_eq!(fs::read(saved).unwrap(), &bad[last_start..]);
    j.append(&rec(9)).unwrap();
    drop(j);
    let (_j, replayed) = open(d.path());
    assert_eq!(replayed.len(), 5);
    assert_eq!(replayed[4], rec(9));
}

#[test]
fn journal_corrupt_middle_record_costs_only_that_record() {
    let src = tempfile::tempdir().unwrap();
    let full = write_journal(src.path(), &recs(0..7));
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            full.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        )
        .collect();
    for victim in 0..7 {
        // Corrupt each byte position class: magic, version, length, payload, newline.
        let (s, e) = (starts[victim], starts[victim + 1]);
        for pos in [s, s + 2, s + 4, (s + e) / 2, e - 2, e - 1] {
            let mut bad = full.clone();
            bad[pos] = bad[pos].wrapping_add(1);
            let d = dir_with_file(&bad);
            let (j, replayed) = open(d.path());
            let want: Vec<Rec> = recs(0..7)
                .into_iter()
                .filter(|r| r.seq != victim as u64)
                .collect();
            assert_eq!(replayed, want, "victim {victim} pos {pos}");
            let replay = j.last_replay().clone();
            if victim == 6 && pos == e - 1 {
                // The last line lost its newline: indistinguishable from a torn append.
                assert!(replay.torn_tail && !replay.is_corrupt(), "{replay:?}");
            } else {
                assert_eq!(
                    replay.corrupt.len(),
                    1,
                    "victim {victim} pos {pos}: {replay:?}"
                );
                assert_eq!(
                    (replay.corrupt[0].offset, replay.corrupt[0].len),
                    (s as u64, (e - s) as u64)
                );
                assert!(!replay.torn_tail);
            }
            // The file now holds exactly the kept records.
            let mut kept = full[..s].to_vec();
            kept.extend_from_slice(&full[e..]);
            assert_eq!(
                fs::read(j.path()).unwrap(),
                kept,
                "victim {victim} pos {pos}"
            );
        }
    }
}

#[test]
fn journal_bad_json_and_unknown_version_are_dropped() {
    let src = tempfile::tempdir().unwrap();
    let mut full = write_journal(src.path(), &recs(0..3));
    let good_len = full.len();

    // CRC-valid payload that is not a `Rec`.
    let payload = br#"{"seq":"not a number"}"#;
    let line = format!(
        "FJ1 {} {:08x} {}\n",
        payload.len(),
        crc32fast::hash(payload),
        std::str::from_utf8(payload).unwrap()
    );
    let mut bad_json = full.clone();
    bad_json.extend_from_slice(line.as_bytes());
    let d = dir_with_file(&bad_json);
    let (j, replayed) = open(d.path());
    assert_eq!(replayed, recs(0..3));
    let reason = &j.last_replay().corrupt[0].reason;
    assert!(reason.contains("does not decode"), "{reason}");

    // Unknown version with otherwise valid framing.
    full.extend_from_slice(line.replace("FJ1 ", "FJ2 ").as_bytes());
    full.extend_from_slice(&write_journal(
        tempfile::tempdir().unwrap().path(),
        &recs(3..4),
    ));
    let d = dir_with_file(&full);
    let (j, replayed) = open(d.path());
    // The valid record after the unknown one is kept.
    assert_eq!(replayed, recs(0..4));
    let replay = j.last_replay();
    assert_eq!(replay.corrupt.len(), 1, "{replay:?}");
    let reason = &replay.corrupt[0].reason;
    assert!(reason.contains("unknown record version 2"), "{reason}");
    assert_eq!(replay.corrupt[0].offset, good_len as u64);
    assert_eq!(replay.corrupt[0].len, line.len() as u64);
    assert_eq!(
        fs::metadata(j.path()).unwrap().len(),
        (full.len() - line.len()) as u64
    );
}

#[test]
fn journal_garbage_empty_and_random_inputs_never_panic() {
    // Empty file and an all-valid file: nothing dropped.
    let d = dir_with_file(b"");
    let (j, replayed) = open(d.path());
    assert!(replayed.is_empty() && *j.last_replay() == Replay::default());
    drop(j);

    for garbage in [
        &b"hello\nworld\n"[..],
        b"\n",
        b"FJ",
        b"FJ1",
        b"FJ1 ",
        b"FJ1 5 ",
        b"FJ1 5 0000000",
        b"FJ1 5 00000000 abc",
        b"FJ1 99999999 00000000 {}\n",
        b"FJ1 18446744073709551616 00000000 {}\n",
        b"FJ999999999999 1 00000000 1\n",
        b"FJ1 0 00000000 \n",
        b"\xff\xfe\x00\x00FJ1\n",
    ] {
        let d = dir_with_file(garbage);
        let (mut j, replayed) = open(d.path());
        assert!(replayed.is_empty(), "{garbage:?}");
        assert_eq!(fs::metadata(j.path()).unwrap().len(), 0);
        j.append(&rec(1)).unwrap();
        drop(j);
        assert_eq!(open(d.path()).1, vec![rec(1)]);
    }

    let src = tempfile::tempdir().unwrap();
    let valid = write_journal(src.path(), &recs(0..8));
    let mut rng = Rng(0x5eed_f00d_dead_beef);
    for case in 0..400 {
        let bytes: Vec<u8> = match case % 4 {
            // Pure random bytes, sometimes with newlines and magic sprinkled in.
            0 => (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
            1 => {
                let mut v = Vec::new();
                for _ in 0..rng.below(20) {
                    match rng.below(4) {
                        0 => v.extend_from_slice(b"FJ1 "),
                        1 => v.push(b'\n'),
                        2 => v.extend_from_slice(format!("{} ", rng.below(100)).as_bytes()),
                        _ => v.extend((0..rng.below(10)).map(|_| rng.next() as u8)),
                    }
                }
                v
            }
            // Mutations of a valid journal: flips, truncation, splices.
            2 => {
                let mut v = valid.clone();
                for _ in 0..1 + rng.below(3) {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                v
            }
            _ => {
                let mut v = valid.clone();
                let i = rng.below(v.len());
                let junk: Vec<u8> = (0..rng.below(40)).map(|_| rng.next() as u8).collect();
                v.splice(i..i + rng.below(v.len() - i), junk);
                v
            }
        };
        let d = dir_with_file(&bytes);
        let (mut j, replayed) = open(d.path());
        // Whatever comes back was validly written, in the order it was written.
        let all = recs(0..8);
        let mut rest = all.iter();
        assert!(
            replayed.iter().all(|r| rest.any(|a| a == r)),
            "case {case}: {replayed:?}"
        );
        let replay = j.last_replay();
        assert_eq!(replay.records, replayed.len());
        // The file kept exactly the valid records.
        assert_eq!(
            fs::metadata(j.path()).unwrap().len(),
            encode(&replayed).len() as u64,
            "case {case}"
        );
        // Replay is idempotent and appends work afterwards.
        j.append(&rec(50)).unwrap();
        drop(j);
        let (_j, again) = open(d.path());
        assert_eq!(again.len(), replayed.len() + 1, "case {case}");
        assert_eq!(again[..replayed.len()], replayed[..]);
        assert_eq!(again.last(), Some(&rec(50)));
    }
}

// (4) compaction --------------------------------------------------------------

#[test]
fn journal_compact_then_append() {
    let d = tempfile::tempdir().unwrap();
    let (mut j, _) = open(d.path());
    j.append_many(&recs(0..10)).unwrap();
    let live: Vec<Rec> = recs(0..10).into_iter().filter(|r| r.seq % 3 == 0).collect();
    j.compact(&live).unwrap();
    assert_eq!(j.len(), live.len());
    assert_eq!(j.stats().bytes, fs::metadata(j.path()).unwrap().len());
    assert!(!d.path().join(TMP_FILE).exists());
    j.append(&rec(42)).unwrap();
    drop(j);

    let (mut j, replayed) = open(d.path());
    let mut want = live.clone();
    want.push(rec(42));
    assert_eq!(replayed, want);

    j.compact(&[]).unwrap();
    assert!(j.is_empty());
    drop(j);
    let (_j, replayed) = open(d.path());
    assert!(replayed.is_empty());
    assert_eq!(fs::metadata(d.path().join(JOURNAL_FILE)).unwrap().len(), 0);
}

#[test]
fn journal_compact_crash_at_every_point() {
    let old = recs(0..12);
    let live: Vec<Rec> = old.iter().filter(|r| r.seq % 4 == 1).cloned().collect();
    for at in CrashPoint::ALL {
        let d = tempfile::tempdir().unwrap();
        let (mut j, _) = open(d.path());
        j.append_many(&old).unwrap();
        j.compact_crashing_at(&live, at).unwrap(); // journal dropped: "crash"

        let (mut j, replayed) = open(d.path());
        // Never a mix or a loss: exactly the old set or exactly the new one.
        let expected = if at == CrashPoint::AfterRename {
            &live
        } else {
            &old
        };
        assert_eq!(&replayed, expected, "crash at {at:?}");
        assert!(
            !d.path().join(TMP_FILE).exists(),
            "{at:?}: stale tmp removed"
        );
        assert!(!j.last_replay().is_corrupt(), "{at:?}");

        // The recovered journal is fully usable, including a real compaction.
        j.append(&rec(77)).unwrap();
        drop(j);
        let (mut j, replayed) = open(d.path());
        let mut want = expected.clone();
        want.push(rec(77));
        assert_eq!(replayed, want, "{at:?}");
        j.compact(&live).unwrap();
        drop(j);
        assert_eq!(open(d.path()).1, live, "{at:?}");
    }
}

// (5) + (6) locking ---------------------------------------------------------------

#[test]
fn journal_second_open_is_locked_until_drop() {
    let d = tempfile::tempdir().unwrap();
    let (j, _) = open(d.path());
    let err = Journal::<Rec>::open(d.path()).unwrap_err();
    match &err {
        JournalError::Locked { dir, holder_pid } => {
            assert_eq!(dir, d.path());
            assert_eq!(*holder_pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "state dir {} is in use by another faultd (pid {})",
            d.path().display(),
            std::process::id()
        )
    );
    // A failed open must not clobber the holder's pid.
    let pid = fs::read_to_string(d.path().join(LOCK_FILE)).unwrap();
    assert_eq!(pid.trim(), std::process::id().to_string());

    drop(j);
    let (_j, _) = open(d.path());
}

const CHILD_DIR_ENV: &str = "FAULTD_JOURNAL_TEST_LOCK_CHILD_DIR";

/// Child-process half of `journal_lock_held_by_other_process`: holds the
/// journal lock until its stdin is closed. Does nothing when run directly.
#[test]
#[ignore = "helper run as a child process by journal_lock_held_by_other_process"]
fn journal_lock_child_holder() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let (_j, _) = open(Path::new(&dir));
    println!("LOCKED {}", std::process::id());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn journal_lock_held_by_other_process() {
    let d = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "journal::tests::journal_lock_child_holder",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_ENV, d.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("LOCKED "))
        .expect("child reported holding the lock");
    assert!(
        ready.ends_with(&format!("LOCKED {}", child.id())),
        "{ready}"
    );

    match Journal::<Rec>::open(d.path()) {
        Err(JournalError::Locked { holder_pid, .. }) => assert_eq!(holder_pid, Some(child.id())),
        other => panic!("expected Locked, got {other:?}"),
    }

    drop(child.stdin.take()); // child exits on EOF, releasing the lock
    assert!(child.wait().unwrap().success());
    let (_j, _) = open(d.path());
}

// Benchmarks (run with: cargo test --lib journal_bench -- --ignored --nocapture) ---

/// A realistic rollback record, ~400 bytes of JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FaultRecord {
    op: String,
    id: String,
    kind: String,
    pod_uid: String,
    container_id: String,
    pid: u32,
    netns: String,
    device: String,
    spec: BTreeMap<String, f64>,
    rollback: Vec<String>,
    created_unix_ms: u64,
    expires_unix_ms: u64,
}

fn fault_record(i: u64) -> FaultRecord {
    FaultRecord {
        op: "inject".into(),
        id: format!("3f2b9c1e-8d4a-4b7f-9e21-{i:012x}"),
        kind: "netem".into(),
        pod_uid: "a1b2c3d4-e5f6-4789-abcd-0123456789ab".into(),
        container_id: format!(
            "containerd://{:064x}",
            u128::from(i) * 0x9e37_79b9_7f4a_7c15
        ),
        pid: 4242 + i as u32,
        netns: format!("/proc/{}/ns/net", 4242 + i),
        device: "eth0".into(),
        spec: BTreeMap::from([
            ("delay_ms".into(), 120.0),
            ("jitter_ms".into(), 15.0),
            ("loss_pct".into(), 2.5),
        ]),
        rollback: vec!["tc qdisc del dev eth0 root".into()],
        created_unix_ms: 1_760_000_000_000 + i,
        expires_unix_ms: 1_760_000_600_000 + i,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn journal_append_latency() {
    let d = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let (mut j, _) = Journal::<FaultRecord>::open(d.path()).unwrap();
    let size = serde_json::to_vec(&fault_record(0)).unwrap().len();
    let mut total = Vec::with_capacity(2000);
    let mut sync = Vec::with_capacity(2000);
    for i in 0..2000 {
        let t = Instant::now();
        j.append(&fault_record(i)).unwrap();
        total.push(t.elapsed());
        sync.push(j.last_sync());
    }
    total.sort();
    sync.sort();
    println!(
        "journal_append_latency: 2000 appends of {size}-byte records in {}: \
         append p50={:.0}us p99={:.0}us max={:.0}us; fdatasync p50={:.0}us p99={:.0}us",
        d.path().display(),
        percentile(&total, 0.50),
        percentile(&total, 0.99),
        percentile(&total, 1.0),
        percentile(&sync, 0.50),
        percentile(&sync, 0.99),
    );
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn journal_replay_latency() {
    let d = tempfile::tempdir().unwrap();
    let all: Vec<FaultRecord> = (0..10_000).map(fault_record).collect();
    let (mut j, _) = Journal::<FaultRecord>::open(d.path()).unwrap();
    j.append_many(&all).unwrap();
    let bytes = j.stats().bytes;
    drop(j);

    let t = Instant::now();
    let (j, replayed) = Journal::<FaultRecord>::open(d.path()).unwrap();
    let took = t.elapsed();
    assert_eq!(replayed, all);
    println!(
        "journal_replay_latency: open+replay of {} records ({bytes} bytes) took {:.1}ms \
         (read+decode {:.1}ms)",
        replayed.len(),
        took.as_secs_f64() * 1e3,
        j.stats().replay_time.as_secs_f64() * 1e3
    );
    assert!(took < Duration::from_secs(1), "replay too slow: {took:?}");
}

#[test]
fn journal_poisoned_refuses_appends_until_compact() {
    fn assert_send_sync<X: Send + Sync>() {}
    assert_send_sync::<Journal<Rec>>();

    let d = tempfile::tempdir().unwrap();
    let (mut j, _) = open(d.path());
    j.append_many(&recs(0..3)).unwrap();
    // Simulate a failed fdatasync (cannot be provoked portably in a test).
    j.poisoned = Some("fdatasync: simulated".into());
    let err = j.append(&rec(3)).unwrap_err();
    assert!(matches!(err, JournalError::Poisoned { .. }), "{err:?}");
    assert!(err.to_string().contains("poisoned"));
    assert!(err.to_string().contains("fdatasync: simulated"), "{err}");
    assert_eq!(j.len(), 3);
    // A successful compaction writes and syncs a fresh file: usable again.
    j.compact(&recs(0..3)).unwrap();
    j.append(&rec(3)).unwrap();
    drop(j);
    assert_eq!(open(d.path()).1, recs(0..4));
}

#[test]
fn unsynced_appends_are_written_and_replayed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut j, _) = open(dir.path());
        j.append(&rec(1)).unwrap();
        j.append_unsynced(&rec(2)).unwrap();
        j.append(&rec(3)).unwrap();
        j.append_unsynced(&rec(4)).unwrap();
        assert_eq!(j.len(), 4);
        assert_eq!(j.stats().syncs, 2, "only the durable appends sync");
    }
    let (_, got) = open(dir.path());
    assert_eq!(got, recs(1..5));
}

/// A background sync taken as a ticket covers the bytes written before it, not those appended
/// while it ran; one that a compaction overtook changes nothing; a failing one poisons.
#[test]
fn journal_sync_ticket_covers_what_was_written_before_it() {
    let d = tempfile::tempdir().unwrap();
    let (mut j, _) = open(d.path());
    assert!(j.begin_sync().unwrap().is_none(), "nothing waits");
    j.append_unsynced(&rec(1)).unwrap();
    let ticket = j.begin_sync().unwrap().expect("a sync is due");
    j.append_unsynced(&rec(2)).unwrap(); // while the disk works
    let done = ticket.run();
    j.finish_sync(ticket, done).unwrap();
    assert!(j.has_unsynced(), "record 2 came after the ticket");
    assert_eq!(j.stats().syncs, 1);
    j.sync().unwrap();
    assert!(!j.has_unsynced());
    assert_eq!(j.stats().syncs, 2);

    // Overtaken by a compaction (which syncs the new file whole): ignored.
    j.append_unsynced(&rec(3)).unwrap();
    let ticket = j.begin_sync().unwrap().unwrap();
    j.compact(&recs(0..3)).unwrap();
    j.append_unsynced(&rec(4)).unwrap();
    let done = ticket.run();
    j.finish_sync(ticket, done).unwrap();
    assert!(
        j.has_unsynced(),
        "record 4 is not covered by the old file's sync"
    );

    // A failing one poisons the journal.
    j.inject_sync_failure(nix::errno::Errno::EIO);
    let ticket = j.begin_sync().unwrap().unwrap();
    let done = ticket.run();
    assert!(j.finish_sync(ticket, done).is_err());
    assert!(j.poisoned().is_some());
    assert!(j.append_unsynced(&rec(5)).is_err());
}
