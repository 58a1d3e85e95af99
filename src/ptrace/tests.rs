//! Tier 1: what runs without tracing anything (tracing is the host tier: `tests/host_ptrace.rs`).
use super::*;

#[test]
fn the_threads_of_this_process_are_listed() {
    let tids = thread_ids(Path::new("/proc"), std::process::id() as i32).unwrap();
    assert!(tids.contains(&(std::process::id() as i32)), "{tids:?}");
}

#[test]
fn a_missing_process_is_gone_not_found() {
    let e = thread_ids(Path::new("/proc"), 999_999_999).unwrap_err();
    assert!(matches!(e, PtraceError::Gone(999_999_999)), "{e}");
    assert_eq!(e.kind(), FailureKind::NotFound);
    let e = Traced::seize(Path::new("/proc"), 999_999_999)
        .err()
        .unwrap();
    assert_eq!(e.kind(), FailureKind::NotFound, "{e}");
}
