//! Tier 1: the fake page executed in the test process, the vDSO parser on the test process's
//! own vDSO, the patch bytes.
use super::elf::{parse_maps_vdso, read_vdso};
use super::fake::{DATA_LEN, DATA_OFFSET, PAGE_SIZE};
use super::*;
use std::path::Path;

const NS: i128 = 1_000_000_000;
/// Slack between the vDSO's and the syscall's reading of one clock.
const SLACK_NS: i128 = 1_000_000;

type ClockGettime = extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;
type Gettimeofday = extern "C" fn(*mut libc::timeval, *mut libc::timezone) -> libc::c_int;
type Time = extern "C" fn(*mut libc::time_t) -> libc::time_t;

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    assert_eq!(unsafe { libc::clock_gettime(clock, &mut ts) }, 0);
    i128::from(ts.tv_sec) * NS + i128::from(ts.tv_nsec)
}

/// The fake page mapped executable in this process (RW while written, then RX).
struct ExecPage {
    addr: *mut libc::c_void,
}

impl ExecPage {
    fn new(page: &[u8; PAGE_SIZE]) -> ExecPage {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice; the
        // result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let p = ExecPage { addr };
        p.write(0, page);
        p
    }

    /// Writes `bytes` at `at` (RW for the write, RX again after).
    fn write(&self, at: usize, bytes: &[u8]) {
        assert!(at + bytes.len() <= PAGE_SIZE);
        // SAFETY: `addr` is our own page-sized mapping; nothing runs its code during the write
        // (the tests call it from this thread only).
        unsafe {
            assert_eq!(
                libc::mprotect(self.addr, PAGE_SIZE, libc::PROT_READ | libc::PROT_WRITE),
                0
            );
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.addr.cast::<u8>().add(at),
                bytes.len(),
            );
            assert_eq!(
                libc::mprotect(self.addr, PAGE_SIZE, libc::PROT_READ | libc::PROT_EXEC),
                0
            );
        }
    }

    fn entry(&self, f: FakeFn) -> *const u8 {
        // SAFETY: the entry offsets are inside the page.
        unsafe { self.addr.cast::<u8>().add(f.entry()) }
    }

    fn clock_gettime(&self) -> ClockGettime {
        // SAFETY: the page holds faultd's fake code; this entry has the C ABI of
        // `clock_gettime` (see fake_x86_64.S).
        unsafe { std::mem::transmute::<*const u8, ClockGettime>(self.entry(FakeFn::ClockGettime)) }
    }

    fn gettimeofday(&self) -> Gettimeofday {
        // SAFETY: as above, with the C ABI of `gettimeofday`.
        unsafe { std::mem::transmute::<*const u8, Gettimeofday>(self.entry(FakeFn::Gettimeofday)) }
    }

    fn time(&self) -> Time {
        // SAFETY: as above, with the C ABI of `time`.
        unsafe { std::mem::transmute::<*const u8, Time>(self.entry(FakeFn::Time)) }
    }
}

impl Drop for ExecPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no function pointer into it outlives the `ExecPage`
        // (they are only called while it is borrowed).
        unsafe { libc::munmap(self.addr, PAGE_SIZE) };
    }
}

/// The offsets, as Chaos Mesh sends them (sec, nsec).
const OFFSETS: [(i64, i64); 4] = [(3600, 0), (-600, -100), (0, 999_999_999), (0, -1)];
const REALTIME: u64 = 1 << libc::CLOCK_REALTIME;
const MONOTONIC: u64 = 1 << libc::CLOCK_MONOTONIC;
const MASKS: [u64; 4] = [REALTIME, MONOTONIC, REALTIME | MONOTONIC, 0];
const CLOCKS: [libc::clockid_t; 4] = [
    libc::CLOCK_REALTIME,
    libc::CLOCK_MONOTONIC,
    libc::CLOCK_BOOTTIME,
    libc::CLOCK_MONOTONIC_RAW,
];

fn shift(offset: TimeOffset, mask: u64, clock: libc::clockid_t) -> i128 {
    if mask & (1 << clock) != 0 {
        offset.as_nanos()
    } else {
        0
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn fake_clock_gettime_shifts_exactly_the_masked_clocks_and_normalizes() {
    for (sec, nsec) in OFFSETS {
        let offset = TimeOffset::new(sec, nsec).unwrap();
        for mask in MASKS {
            let page = ExecPage::new(FakePage::new(offset, mask).as_bytes());
            let fake = page.clock_gettime();
            for clock in CLOCKS {
                let want = shift(offset, mask, clock);
                let before = now(clock);
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: -1,
                };
                assert_eq!(fake(clock, &mut ts), 0);
                let after = now(clock);
                assert!(
                    (0..1_000_000_000).contains(&ts.tv_nsec),
                    "{ts:?} {sec} {nsec} {mask}"
                );
                let got = i128::from(ts.tv_sec) * NS + i128::from(ts.tv_nsec) - want;
                assert!(
                    before - SLACK_NS <= got && got <= after + SLACK_NS,
                    "clock {clock} offset ({sec}, {nsec}) mask {mask:#x}: {before} {got} {after}"
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn fake_clock_gettime_passes_errors_through_and_never_shifts_ids_past_63() {
    let page = ExecPage::new(FakePage::new(TimeOffset::new(3600, 0).unwrap(), u64::MAX).as_bytes());
    let fake = page.clock_gettime();
    let mut ts = libc::timespec {
        tv_sec: 7,
        tv_nsec: 7,
    };
    assert_eq!(fake(100, &mut ts), -libc::EINVAL);
    assert_eq!(
        fake(libc::CLOCK_REALTIME, std::ptr::null_mut()),
        -libc::EFAULT
    );
    // Bit n is clock id n, whatever the clock: CLOCK_PROCESS_CPUTIME_ID (2) shifts too.
    let clock = libc::CLOCK_PROCESS_CPUTIME_ID;
    assert_eq!(fake(clock, &mut ts), 0);
    let cpu = i128::from(ts.tv_sec) * NS + i128::from(ts.tv_nsec);
    assert!(
        cpu - 3600 * NS <= now(clock) + SLACK_NS && cpu >= 3600 * NS,
        "{cpu}"
    );
    // A thread CPU-time clock id (negative) is never shifted.
    let mut id: libc::clockid_t = 0;
    // SAFETY: `pthread_self` is this thread; `id` is writable.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    assert_eq!(rc, 0);
    assert!(id < 0);
    assert_eq!(fake(id, &mut ts), 0);
    assert!(ts.tv_sec < 3600, "thread CPU clock shifted: {ts:?}");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn fake_gettimeofday_follows_the_realtime_bit_and_normalizes_usec() {
    for (sec, nsec) in OFFSETS {
        let offset = TimeOffset::new(sec, nsec).unwrap();
        for mask in MASKS {
            let page = ExecPage::new(FakePage::new(offset, mask).as_bytes());
            let fake = page.gettimeofday();
            let want = shift(offset, mask, libc::CLOCK_REALTIME);
            let before = now(libc::CLOCK_REALTIME);
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: -1,
            };
            let mut tz = [-99i32; 2]; // struct timezone { minuteswest, dsttime }
            assert_eq!(fake(&mut tv, tz.as_mut_ptr().cast()), 0);
            let after = now(libc::CLOCK_REALTIME);
            assert!(
                (0..1_000_000).contains(&tv.tv_usec),
                "{tv:?} {sec} {nsec} {mask}"
            );
            assert_ne!(tz, [-99; 2], "tz not filled");
            let got = i128::from(tv.tv_sec) * NS + i128::from(tv.tv_usec) * 1000 - want;
            assert!(
                before - SLACK_NS - 1000 <= got && got <= after + SLACK_NS,
                "offset ({sec}, {nsec}) mask {mask:#x}: {before} {got} {after}"
            );
            // Only the timezone: no timeval to shift.
            assert_eq!(fake(std::ptr::null_mut(), tz.as_mut_ptr().cast()), 0);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn fake_time_follows_the_realtime_bit_with_the_nanosecond_carry() {
    for (sec, nsec) in OFFSETS {
        let offset = TimeOffset::new(sec, nsec).unwrap();
        for mask in MASKS {
            let page = ExecPage::new(FakePage::new(offset, mask).as_bytes());
            let fake = page.time();
            let want = shift(offset, mask, libc::CLOCK_REALTIME);
            let before = (now(libc::CLOCK_REALTIME) + want).div_euclid(NS);
            let mut stored: libc::time_t = 0;
            let got = fake(&mut stored);
            let bare = fake(std::ptr::null_mut());
            let after = (now(libc::CLOCK_REALTIME) + want).div_euclid(NS);
            assert_eq!(got, stored);
            // time() is the kernel's coarse second: it may trail clock_gettime by a tick.
            for t in [got, bare] {
                let t = i128::from(t);
                assert!(
                    before - 1 <= t && t <= after,
                    "({sec}, {nsec}) {mask:#x}: {before} {t} {after}"
                );
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn rewriting_the_data_block_changes_the_offset_of_a_mapped_page() {
    let page = ExecPage::new(FakePage::new(TimeOffset::new(0, 0).unwrap(), REALTIME).as_bytes());
    let fake = page.clock_gettime();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(fake(libc::CLOCK_REALTIME, &mut ts), 0);
    assert!((i128::from(ts.tv_sec) * NS - now(libc::CLOCK_REALTIME)).abs() < 2 * NS);
    page.write(
        DATA_OFFSET,
        &FakePage::data(TimeOffset::new(-86400, 0).unwrap(), REALTIME),
    );
    assert_eq!(fake(libc::CLOCK_REALTIME, &mut ts), 0);
    let d = now(libc::CLOCK_REALTIME) - (i128::from(ts.tv_sec) * NS + i128::from(ts.tv_nsec));
    assert!((86400 * NS..86400 * NS + SLACK_NS).contains(&d), "{d}");
}

#[test]
fn offsets_are_normalized_to_a_nanosecond_part_in_one_second() {
    let n = |s, ns| TimeOffset::new(s, ns).map(|o| (o.sec(), o.nsec()));
    assert_eq!(n(3600, 0), Some((3600, 0)));
    assert_eq!(n(-600, -100), Some((-601, 999_999_900)));
    assert_eq!(n(0, 999_999_999), Some((0, 999_999_999)));
    assert_eq!(n(0, -1), Some((-1, 999_999_999)));
    assert_eq!(n(1, 2_500_000_000), Some((3, 500_000_000)));
    assert_eq!(n(i64::MAX, 999_999_999), Some((i64::MAX, 999_999_999)));
    assert_eq!(n(i64::MAX, 1_000_000_000), None);
    assert_eq!(n(i64::MIN, -1), None);
    assert_eq!(
        TimeOffset::new(-600, -100).unwrap().as_nanos(),
        -600_000_000_100
    );
}

#[test]
fn the_page_is_code_then_filler_and_the_data_block_round_trips() {
    let offset = TimeOffset::new(-600, -100).unwrap();
    let page = *FakePage::new(offset, 0x3).as_bytes();
    assert_eq!(
        PageData::parse(page[..DATA_LEN].try_into().unwrap()),
        Some(PageData {
            offset,
            mask: 0x3,
            token: 0
        })
    );
    let with_token = PageData {
        offset,
        mask: 1,
        token: 0xfeed_beef_0123_4567,
    };
    let tokened = FakePage::with(&with_token);
    assert_eq!(
        tokened.as_bytes()[24..32],
        0xfeed_beef_0123_4567u64.to_le_bytes()
    );
    assert_eq!(
        PageData::parse(tokened.as_bytes()[..DATA_LEN].try_into().unwrap()),
        Some(with_token)
    );
    assert!(FakePage::is_ours(&tokened.as_bytes()[..FakePage::CODE_LEN]));
    assert_eq!(&page[..DATA_LEN], &FakePage::data(offset, 0x3));
    assert_eq!(page[0..8], (-601i64).to_le_bytes());
    assert_eq!(page[8..16], 999_999_900i64.to_le_bytes());
    assert_eq!(page[16..24], 3u64.to_le_bytes());
    assert!(page[0x140..].iter().all(|&b| b == 0xcc));
    // Every entry starts with `mov eax, <syscall>` or `test byte ptr [rip+mask], 1`.
    assert_eq!(
        page[FakeFn::ClockGettime.entry()..][..5],
        [0xb8, 0xe4, 0, 0, 0]
    );
    assert_eq!(
        page[FakeFn::Gettimeofday.entry()..][..5],
        [0xb8, 0x60, 0, 0, 0]
    );
    assert_eq!(page[FakeFn::Time.entry()..][..2], [0xf6, 0x05]);
    assert!(FakePage::is_ours(&page));
    let other_offset = FakePage::new(TimeOffset::new(5, 0).unwrap(), 0);
    assert!(FakePage::is_ours(other_offset.as_bytes()));
    let mut other = page;
    other[0x60] = 0x90;
    assert!(!FakePage::is_ours(&other));
    let mut bad = FakePage::data(offset, 1);
    bad[8..16].copy_from_slice(&1_000_000_000i64.to_le_bytes());
    assert_eq!(PageData::parse(&bad), None);
}

#[test]
fn which_functions_a_mask_needs() {
    let need = |m| {
        FakeFn::ALL
            .into_iter()
            .filter(|f| f.needed_for(m))
            .collect::<Vec<_>>()
    };
    assert_eq!(need(0), vec![]);
    assert_eq!(need(MONOTONIC), vec![FakeFn::ClockGettime]);
    assert_eq!(need(REALTIME), FakeFn::ALL.to_vec());
    assert_eq!(need(REALTIME | MONOTONIC), FakeFn::ALL.to_vec());
}

#[test]
fn the_jump_patch_is_movabs_rax_then_jmp_rax() {
    let p = jump_patch(0x7f12_3456_7000);
    assert_eq!(
        p,
        [0x48, 0xb8, 0x00, 0x70, 0x56, 0x34, 0x12, 0x7f, 0x00, 0x00, 0xff, 0xe0]
    );
    assert_eq!(parse_jump_patch(&p), Some(0x7f12_3456_7000));
    assert_eq!(parse_jump_patch(&p[..11]), None);
    assert_eq!(parse_jump_patch(&[0x90; 16]), None);
    let pristine = [0x55u8; 16];
    assert_eq!(entry_state(&pristine, &pristine), EntryState::Pristine);
    assert_eq!(
        entry_state(&p, &pristine),
        EntryState::Patched(0x7f12_3456_7000)
    );
    assert_eq!(entry_state(&[0x90; 16], &pristine), EntryState::Foreign);
    assert_eq!(entry_state(&[0x55; 4], &pristine), EntryState::Foreign);
}

#[test]
fn patch_sites_refuse_missing_and_short_symbols() {
    let s = |offset, size| Symbol { offset, size };
    let full = VdsoImage::from_symbols(&[
        ("__vdso_clock_gettime", s(0x100, 902)),
        ("__vdso_gettimeofday", s(0x500, 683)),
        ("__vdso_time", s(0x800, 40)),
    ]);
    let sites = patch_sites(&full, REALTIME).unwrap();
    assert_eq!(sites.len(), 3);
    assert_eq!(sites[2], (FakeFn::Time, s(0x800, 40)));
    assert_eq!(
        patch_sites(&full, MONOTONIC).unwrap(),
        vec![(FakeFn::ClockGettime, s(0x100, 902))]
    );
    let short = VdsoImage::from_symbols(&[
        ("__vdso_clock_gettime", s(0x100, 902)),
        ("__vdso_gettimeofday", s(0x500, 683)),
        ("__vdso_time", s(0x800, 11)),
    ]);
    assert!(patch_sites(&short, MONOTONIC).is_ok());
    let e = patch_sites(&short, REALTIME).unwrap_err();
    assert!(
        matches!(
            e,
            VdsoError::TooShort {
                name: "__vdso_time",
                size: 11
            }
        ),
        "{e}"
    );
    assert_eq!(e.kind(), crate::failure::FailureKind::FailedPrecondition);
    // aarch64-like: no `time` symbol, and the clock_gettime symbol under another name.
    let other = VdsoImage::from_symbols(&[("__kernel_clock_gettime", s(0x100, 200))]);
    let e = patch_sites(&other, MONOTONIC).unwrap_err();
    assert!(
        matches!(e, VdsoError::MissingSymbol("__vdso_clock_gettime")),
        "{e}"
    );
}

#[test]
fn the_maps_line_of_the_vdso() {
    let maps = "55d0c0a00000-55d0c0a28000 r--p 00000000 fd:01 1234 /usr/bin/cat\n\
                7ffd5b7f2000-7ffd5b7f6000 r--p 00000000 00:00 0                          [vvar]\n\
                7ffd5b7f6000-7ffd5b7f8000 r-xp 00000000 00:00 0                          [vdso]\n";
    assert_eq!(
        parse_maps_vdso(maps),
        Some((0x7ffd_5b7f_6000, 0x7ffd_5b7f_8000))
    );
    assert_eq!(
        parse_maps_vdso("00400000-00401000 r-xp 0 0:0 0 /x/[vdso]-not\n"),
        None
    );
    assert_eq!(parse_maps_vdso(""), None);
}

fn own_vdso() -> (u64, Vec<u8>) {
    let (start, bytes) = read_vdso(Path::new("/proc"), "self").unwrap();
    // SAFETY: getauxval only reads the auxiliary vector.
    let auxv = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    assert_eq!(start, auxv, "[vdso] in maps vs AT_SYSINFO_EHDR");
    (start, bytes)
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_own_vdso_has_the_three_symbols_and_clock_gettime_works_when_called() {
    let (start, bytes) = own_vdso();
    let image = VdsoImage::parse(&bytes).unwrap();
    for name in [
        "__vdso_clock_gettime",
        "__vdso_gettimeofday",
        "__vdso_time",
        "clock_gettime",
    ] {
        let s = image.symbol(name).unwrap_or_else(|| panic!("no {name}"));
        assert!(s.size >= PATCH_LEN as u64, "{name}: {s:?}");
    }
    assert_eq!(
        image.symbol("clock_gettime"),
        image.symbol("__vdso_clock_gettime")
    );
    assert_eq!(image.symbol("__vdso_clock_getti"), None);
    assert_eq!(patch_sites(&image, REALTIME).unwrap().len(), 3);

    let off = image.symbol("__vdso_clock_gettime").unwrap().offset;
    // SAFETY: `start + off` is the vDSO's own `clock_gettime` in this process (the parser
    // found it in the mapping at AT_SYSINFO_EHDR), which has the C ABI of clock_gettime.
    let vdso = unsafe { std::mem::transmute::<u64, ClockGettime>(start + off) };
    for clock in CLOCKS {
        let before = now(clock);
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        assert_eq!(vdso(clock, &mut ts), 0);
        let got = i128::from(ts.tv_sec) * NS + i128::from(ts.tv_nsec);
        assert!(
            before <= got && got <= now(clock),
            "clock {clock}: {before} {got}"
        );
    }

    let off = image.symbol("__vdso_time").unwrap().offset;
    // SAFETY: as above, the vDSO's `time`.
    let vdso_time = unsafe { std::mem::transmute::<u64, Time>(start + off) };
    // SAFETY: time(NULL) only reads.
    let libc_time = unsafe { libc::time(std::ptr::null_mut()) };
    assert!((vdso_time(std::ptr::null_mut()) - libc_time).abs() <= 1);
}

/// The program header of type `kind` of a 64-bit image: (offset, size).
fn segment(b: &[u8], kind: u32) -> (usize, usize) {
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let phoff = word(32);
    let (entsize, num) = (
        u16::from_le_bytes([b[54], b[55]]),
        u16::from_le_bytes([b[56], b[57]]),
    );
    (0..usize::from(num))
        .map(|i| phoff + i * usize::from(entsize))
        .find(|&ph| u32::from_le_bytes(b[ph..ph + 4].try_into().unwrap()) == kind)
        .map(|ph| (word(ph + 8), word(ph + 32)))
        .unwrap()
}

#[cfg(target_arch = "x86_64")]
#[test]
fn gnu_hash_alone_gives_the_same_symbols() {
    let (_, mut bytes) = own_vdso();
    let want: Vec<_> = VdsoImage::parse(&bytes)
        .unwrap()
        .symbols()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    let (dyn_off, dyn_len) = segment(&bytes, 2);
    let mut seen = (false, false);
    for e in (dyn_off..dyn_off + dyn_len).step_by(16) {
        let tag = u64::from_le_bytes(bytes[e..e + 8].try_into().unwrap());
        if tag == 4 {
            // DT_HASH → an unknown tag the parser skips.
            bytes[e..e + 8].copy_from_slice(&0x6fff_f000u64.to_le_bytes());
            seen.0 = true;
        }
        seen.1 |= tag == 0x6fff_fef5;
    }
    if !seen.0 || !seen.1 {
        eprintln!("this vDSO lacks DT_HASH or DT_GNU_HASH ({seen:?}); nothing to compare");
        return;
    }
    let got: Vec<_> = VdsoImage::parse(&bytes)
        .unwrap()
        .symbols()
        .map(|(n, s)| (n.to_string(), s))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_parser_refuses_32_bit_and_never_panics_on_a_cut_image() {
    let (_, bytes) = own_vdso();
    let mut b32 = bytes.clone();
    b32[4] = 1; // ELFCLASS32
    let e = VdsoImage::parse(&b32).unwrap_err();
    assert!(matches!(e, VdsoError::Unsupported(_)), "{e}");
    let mut be = bytes.clone();
    be[5] = 2;
    assert!(matches!(
        VdsoImage::parse(&be),
        Err(VdsoError::Unsupported(_))
    ));
    assert!(matches!(
        VdsoImage::parse(b"MZ\0\0"),
        Err(VdsoError::BadElf(_))
    ));
    for len in 0..bytes.len() {
        let _ = VdsoImage::parse(&bytes[..len]);
    }
    // Garbage in every dynamic-section word: an error or a table, never a panic.
    for i in (0..bytes.len().min(4096)).step_by(8) {
        let mut b = bytes.clone();
        b[i..i + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        let _ = VdsoImage::parse(&b);
    }
}

#[test]
fn reading_a_missing_process_is_not_found() {
    let e = read_vdso(Path::new("/proc"), "999999999").unwrap_err();
    assert_eq!(e.kind(), crate::failure::FailureKind::NotFound, "{e}");
}

/// Calls `f(a0, a1)` with sentinels in every callee-saved register (rbx, rbp, r12–r15) and
/// returns what those registers hold after the call, and the result.
#[cfg(target_arch = "x86_64")]
fn call_with_sentinels(f: *const u8, a0: u64, a1: u64) -> ([u64; 6], u64) {
    let mut after = [0u64; 6];
    let ret: u64;
    // SAFETY: `f` is an entry of faultd's fake page (C ABI, two arguments, reads/writes only
    // what `a0`/`a1` point to). The block saves and restores every callee-saved register it
    // sets, keeps the stack 16-byte aligned at the call (7 pushes + 8), and declares the C
    // ABI's caller-saved registers clobbered.
    unsafe {
        std::arch::asm!(
            "push rbx", "push rbp", "push r12", "push r13", "push r14", "push r15",
            "push rcx",
            "sub rsp, 8",
            "mov rbx, 0x1111111111111111",
            "mov rbp, 0x2222222222222222",
            "mov r12, 0x3333333333333333",
            "mov r13, 0x4444444444444444",
            "mov r14, 0x5555555555555555",
            "mov r15, 0x6666666666666666",
            "call rdx",
            "add rsp, 8",
            "pop rcx",
            "mov [rcx], rbx", "mov [rcx + 8], rbp", "mov [rcx + 16], r12",
            "mov [rcx + 24], r13", "mov [rcx + 32], r14", "mov [rcx + 40], r15",
            "pop r15", "pop r14", "pop r13", "pop r12", "pop rbp", "pop rbx",
            in("rdx") f,
            in("rdi") a0,
            in("rsi") a1,
            in("rcx") after.as_mut_ptr(),
            lateout("rax") ret,
            clobber_abi("C"),
        );
    }
    (after, ret)
}

#[cfg(target_arch = "x86_64")]
#[test]
fn the_fake_functions_preserve_the_callee_saved_registers() {
    let want = [
        0x1111_1111_1111_1111,
        0x2222_2222_2222_2222,
        0x3333_3333_3333_3333,
        0x4444_4444_4444_4444,
        0x5555_5555_5555_5555,
        0x6666_6666_6666_6666,
    ];
    let offset = TimeOffset::new(-600, -100).unwrap();
    for mask in [0, REALTIME | MONOTONIC] {
        let page = ExecPage::new(FakePage::new(offset, mask).as_bytes());
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        };
        let mut t: libc::time_t = 0;
        let calls = [
            // CLOCK_REALTIME: a monotonic clock 600 s back is negative on a machine up for
            // less than ten minutes (a fresh CI machine)
            (
                FakeFn::ClockGettime,
                libc::CLOCK_REALTIME as u64,
                &raw mut ts as u64,
            ),
            (FakeFn::Gettimeofday, &raw mut tv as u64, 0),
            (FakeFn::Time, &raw mut t as u64, 0),
        ];
        for (f, a0, a1) in calls {
            let (regs, ret) = call_with_sentinels(page.entry(f), a0, a1);
            assert_eq!(regs, want, "{f:?} mask {mask:#x}");
            if f == FakeFn::Time {
                assert_eq!(ret as i64, t);
            } else {
                assert_eq!(ret, 0, "{f:?}");
            }
        }
        assert!(ts.tv_sec > 0 && tv.tv_sec > 0 && t > 0);
    }
}
