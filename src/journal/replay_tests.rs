//! Replay after corruption (resynchronization, forensic copies, the report) and the durability
//! primitives (`has_unsynced`/`sync`, poisoning, the sync counter and its failure hook).
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Snap {
    id: String,
    phase: String,
}

fn snap(id: &str, phase: &str) -> Snap {
    Snap {
        id: id.into(),
        phase: phase.into(),
    }
}

fn lines(records: &[Snap]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| {
            let mut out = Vec::new();
            format::encode_into(&mut out, r).unwrap();
            out
        })
        .collect()
}

fn dir_with(bytes: &[u8]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    fs::write(d.path().join(JOURNAL_FILE), bytes).unwrap();
    d
}

fn open(dir: &Path) -> (Journal<Snap>, Vec<Snap>) {
    Journal::<Snap>::open(dir).unwrap()
}

fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".corrupt-"))
        .collect();
    v.sort();
    v
}

fn history() -> Vec<Snap> {
    vec![
        snap("a", "intent"),
        snap("a", "applied"),
        snap("b", "intent"),
        snap("b", "applied"),
        snap("a", "reverted"),
    ]
}

#[test]
fn journal_every_single_byte_flip_costs_only_its_record() {
    let recs = history();
    let lines = lines(&recs);
    let full = lines.concat();
    let mut start = 0;
    for (victim, line) in lines.iter().enumerate() {
        for pos in start..start + line.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = full.clone();
                bad[pos] ^= flip;
                let d = dir_with(&bad);
                let (j, replayed) = open(d.path());
                let mut want = recs.clone();
                want.remove(victim);
                assert_eq!(replayed, want, "victim {victim} byte {pos} ^ {flip:#x}");
                let replay = j.last_replay().clone();
                let last_newline = victim == recs.len() - 1 && pos == full.len() - 1;
                if last_newline {
                    // The final line lost its newline: a torn append as far as anyone can tell.
                    assert!(replay.torn_tail && !replay.is_corrupt(), "{replay:?}");
                    continue;
                }
                assert_eq!(replay.corrupt.len(), 1, "byte {pos}: {replay:?}");
                let c = &replay.corrupt[0];
                assert_eq!((c.offset, c.len), (start as u64, line.len() as u64));
                assert_eq!(c.lines, 1);
                assert_eq!(
                    fs::read(c.saved_to.as_ref().unwrap()).unwrap(),
                    &bad[start..start + line.len()]
                );
            }
        }
        start += line.len();
    }
}

#[test]
fn journal_garbage_between_records_is_skipped_and_saved() {
    let l = lines(&history());
    let junk1 = b"\x00\x00\x00garbage\nmore garbage FJ1 12 deadbeef {}\n".to_vec();
    let junk2 = b"FJ1 2 00000000 {}\n".to_vec(); // well formed, wrong CRC
    let bytes = [
        l[0].clone(),
        junk1.clone(),
        l[1].clone(),
        l[2].clone(),
        junk2.clone(),
        l[3].clone(),
        l[4].clone(),
    ]
    .concat();
    let d = dir_with(&bytes);
    let (mut j, replayed) = open(d.path());
    assert_eq!(replayed, history());
    let replay = j.last_replay().clone();
    assert_eq!(replay.records, 5);
    assert_eq!(replay.file_len, bytes.len() as u64);
    assert!(!replay.torn_tail);
    let off1 = l[0].len() as u64;
    let off2 = (l[0].len() + junk1.len() + l[1].len() + l[2].len()) as u64;
    let got: Vec<(u64, u64)> = replay.corrupt.iter().map(|c| (c.offset, c.len)).collect();
    assert_eq!(
        got,
        vec![(off1, junk1.len() as u64), (off2, junk2.len() as u64)]
    );
    assert!(replay.corrupt[0].reason.contains("bad magic"), "{replay:?}");
    assert!(replay.corrupt[1].reason.contains("crc32"), "{replay:?}");
    assert_eq!(replay.corrupt_bytes(), (junk1.len() + junk2.len()) as u64);
    // One forensic copy per region, named by its offset, holding exactly its bytes.
    let files = corrupt_files(d.path());
    assert_eq!(files.len(), 2, "{files:?}");
    for c in &replay.corrupt {
        let p = c.saved_to.as_ref().unwrap();
        assert!(files.contains(p));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("{JOURNAL_FILE}.corrupt-{}-", c.offset)),
            "{name}"
        );
        let want = &bytes[c.offset as usize..c.end() as usize];
        assert_eq!(fs::read(p).unwrap(), want);
    }
    let summary = replay.summary();
    // junk1 holds two lines, junk2 one.
    let counted: Vec<u64> = replay.corrupt.iter().map(|c| c.lines).collect();
    assert_eq!(counted, vec![2, 1]);
    assert_eq!(replay.corrupt_lines(), 3);
    assert!(
        summary.starts_with("CORRUPT: 3 unreadable record(s) in 2 region(s)"),
        "{summary}"
    );
    assert!(
        summary.contains(&format!("bytes {off1}..{}", off1 + junk1.len() as u64)),
        "{summary}"
    );

    // The file was rewritten with the valid records only; appends follow them.
    assert_eq!(fs::read(j.path()).unwrap(), l.concat());
    j.append(&snap("c", "intent")).unwrap();
    drop(j);
    let (j, replayed) = open(d.path());
    assert_eq!(replayed.len(), 6);
    // Reported once: the second open finds a clean journal and writes no new copies.
    assert!(!j.last_replay().is_corrupt());
    assert_eq!(corrupt_files(d.path()).len(), 2);
}

#[test]
fn journal_torn_tail_is_silent_even_after_corruption() {
    let l = lines(&history());
    let torn = &l[4][..l[4].len() - 3];

    // A torn final line alone: no corruption, no copy, truncated.
    let bytes = [&l[0][..], &l[1], torn].concat();
    let d = dir_with(&bytes);
    let (j, replayed) = open(d.path());
    assert_eq!(replayed, history()[..2]);
    let replay = j.last_replay().clone();
    assert!(!replay.is_corrupt() && replay.torn_tail, "{replay:?}");
    assert_eq!(replay.torn_tail_bytes, torn.len() as u64);
    assert!(
        replay.summary().starts_with("clean (2 record(s)"),
        "{}",
        replay.summary()
    );
    assert!(corrupt_files(d.path()).is_empty());
    assert_eq!(fs::read(j.path()).unwrap(), [&l[0][..], &l[1]].concat());

    // A corrupt record earlier and a torn line last: one region, the torn line apart.
    let mut bad1 = l[1].clone();
    let mid = bad1.len() / 2;
    bad1[mid] ^= 0x20;
    let bytes = [&l[0][..], &bad1, &l[2], torn].concat();
    let d = dir_with(&bytes);
    let (j, replayed) = open(d.path());
    assert_eq!(replayed, vec![history()[0].clone(), history()[2].clone()]);
    let replay = j.last_replay().clone();
    assert_eq!(replay.corrupt.len(), 1);
    assert_eq!(replay.corrupt[0].len, bad1.len() as u64);
    assert!(replay.torn_tail);
    assert_eq!(corrupt_files(d.path()).len(), 1);
    assert_eq!(fs::read(j.path()).unwrap(), [&l[0][..], &l[2]].concat());
}

#[test]
fn journal_hole_in_one_items_history_replays_its_latest_valid_snapshot() {
    let l = lines(&history());
    let latest = |recs: &[Snap]| -> BTreeMap<String, String> {
        recs.iter()
            .map(|r| (r.id.clone(), r.phase.clone()))
            .collect()
    };
    // "a applied" lost: the later "a reverted" still wins.
    let mut bad = l[1].clone();
    bad[10] ^= 0x04;
    let d = dir_with(&[&l[0][..], &bad, &l[2], &l[3], &l[4]].concat());
    let (_j, replayed) = open(d.path());
    assert_eq!(latest(&replayed)["a"], "reverted");
    // "a reverted" lost: "a" replays as applied (an earlier, still-safe phase: undone again).
    let mut bad = l[4].clone();
    bad[12] ^= 0x04;
    let d = dir_with(&[&l[0][..], &l[1], &l[2], &l[3], &bad].concat());
    let (_j, replayed) = open(d.path());
    let m = latest(&replayed);
    assert_eq!((m["a"].as_str(), m["b"].as_str()), ("applied", "applied"));
}

#[test]
fn journal_sync_flushes_only_unsynced_appends() {
    let d = tempfile::tempdir().unwrap();
    let (mut j, _) = open(d.path());
    assert!(!j.has_unsynced());
    j.sync().unwrap();
    assert_eq!(j.stats().syncs, 0, "nothing to flush: no fdatasync");

    j.append_unsynced(&snap("a", "intent")).unwrap();
    j.append_unsynced(&snap("a", "applied")).unwrap();
    assert!(j.has_unsynced());
    assert_eq!(j.stats().syncs, 0);
    assert_eq!(
        j.stats().unsynced_bytes,
        lines(&history()[..2]).concat().len() as u64
    );
    j.sync().unwrap();
    assert!(!j.has_unsynced());
    assert_eq!(j.stats().syncs, 1);
    assert_eq!(j.stats().unsynced_bytes, 0);
    j.sync().unwrap();
    assert_eq!(j.stats().syncs, 1, "second sync has nothing to do");

    // A synced append flushes the unsynced ones before it too.
    j.append_unsynced(&snap("b", "intent")).unwrap();
    j.append(&snap("b", "applied")).unwrap();
    assert!(!j.has_unsynced());
    assert_eq!(j.stats().syncs, 2);
    j.sync().unwrap();
    assert_eq!(j.stats().syncs, 2);
    drop(j);
    assert_eq!(open(d.path()).1.len(), 4);
}

#[test]
fn journal_failed_sync_poisons_until_compaction() {
    let d = tempfile::tempdir().unwrap();
    let (mut j, _) = open(d.path());
    j.append(&snap("a", "intent")).unwrap();

    // Through sync(): the failure is returned, the journal poisoned, nothing counted.
    j.append_unsynced(&snap("a", "applied")).unwrap();
    j.inject_sync_failure(Errno::EIO);
    let err = j.sync().unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(j.stats().syncs, 1);
    assert!(j.has_unsynced(), "the failed sync made nothing durable");
    let first = j.poisoned().unwrap().to_string();
    assert!(first.starts_with("fdatasync: "), "{first}");
    assert!(first.contains("os error 5"), "{first}");

    // Every later append or sync is refused, naming the first failure.
    for r in [
        j.append(&snap("b", "intent")),
        j.append_unsynced(&snap("b", "intent")),
        j.append_many(&[]),
        j.sync(),
    ] {
        match r {
            Err(JournalError::Poisoned { path, first: f }) => {
                assert_eq!(path, j.path());
                assert_eq!(f, first);
            }
            other => panic!("expected Poisoned, got {other:?}"),
        }
    }
    let msg = j.sync().unwrap_err().to_string();
    assert!(
        msg.contains("poisoned") && msg.contains("os error 5"),
        "{msg}"
    );
    assert_eq!(j.len(), 2);

    // Compaction writes and syncs a new file: usable again.
    j.compact(&history()[..2]).unwrap();
    assert!(j.poisoned().is_none() && !j.has_unsynced());
    j.append(&snap("b", "intent")).unwrap();
    drop(j);
    assert_eq!(open(d.path()).1.len(), 3);

    // Through a synced append: the append fails and poisons as well.
    let (mut j, _) = open(d.path());
    j.inject_sync_failure(Errno::ENOSPC);
    let err = j.append(&snap("c", "intent")).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(j.poisoned().unwrap().contains("os error 28"));
    assert!(matches!(
        j.append(&snap("d", "intent")),
        Err(JournalError::Poisoned { .. })
    ));
    drop(j);
    // The record whose sync failed was written: a restart replays what reached the disk.
    let (j, replayed) = open(d.path());
    assert_eq!(replayed.len(), 4);
    assert!(j.poisoned().is_none());
}

#[test]
fn journal_peek_reads_a_locked_journal_without_touching_it() {
    let l = lines(&history());
    let bytes = [&l[0][..], b"garbage\n", &l[1], b"FJ1 9 torn"].concat();
    let d = dir_with(&bytes);
    let (_j, _) = open(d.path()); // holds the lock; repaired the file
    fs::write(d.path().join(JOURNAL_FILE), &bytes).unwrap();
    let got: Vec<Snap> = peek(&d.path().join(JOURNAL_FILE)).unwrap();
    assert_eq!(got, history()[..2]);
    assert_eq!(fs::read(d.path().join(JOURNAL_FILE)).unwrap(), bytes);
    assert!(peek::<Snap>(&d.path().join("nope")).is_err());
}

#[test]
fn journal_failed_write_is_rolled_back_and_poisons() {
    let d = tempfile::tempdir().unwrap();
    let (mut j, _) = open(d.path());
    j.append(&snap("a", "intent")).unwrap();
    let before = fs::read(j.path()).unwrap();
    j.inject_write_failure(Errno::ENOSPC);
    let err = j.append_unsynced(&snap("a", "applied")).unwrap_err();
    assert!(
        matches!(err, JournalError::Io { op: "write", .. }),
        "{err:?}"
    );
    // The half-written line was truncated away; the journal refuses further appends.
    assert_eq!(fs::read(j.path()).unwrap(), before);
    assert_eq!((j.len(), j.stats().bytes), (1, before.len() as u64));
    let first = j.poisoned().unwrap().to_string();
    assert!(
        first.starts_with("write: ") && first.contains("os error 28"),
        "{first}"
    );
    match j.append(&snap("b", "intent")) {
        Err(JournalError::Poisoned { first: f, .. }) => assert_eq!(f, first),
        other => panic!("expected Poisoned, got {other:?}"),
    }
    assert!(matches!(j.sync(), Err(JournalError::Poisoned { .. })));
    drop(j);
    let (j, replayed) = open(d.path());
    assert_eq!(replayed, vec![snap("a", "intent")]);
    assert!(!j.last_replay().is_corrupt() && !j.last_replay().torn_tail);
}
