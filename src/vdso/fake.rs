//! The fake clock functions faultd maps into a target (one page), and the page's data block.
//!
//! The code is checked in as bytes; its assembly is in `fake_x86_64.S` (kept for reading,
//! never assembled by the build) and beside every instruction below. Page layout:
//!
//! | offset | size | content |
//! |---|---|---|
//! | `0x000` | 32 | data block: offset seconds `i64`, offset nanoseconds `i64` in `[0, 1e9)`, clock mask `u64`, token `u64` (which fault wrote it; the code never reads it); little endian |
//! | `0x020` | 55 | `add_offset` (internal: timespec += offset, normalized) |
//! | `0x060` | 40 | `fake_clock_gettime(clockid, ts)` |
//! | `0x090` | 92 | `fake_gettimeofday(tv, tz)` |
//! | `0x0f0` | 67 | `fake_time(tloc)` |
//! | `0x140` | … | `int3` filler to the end of the page |
//!
//! Every function makes the real syscall (never the vDSO, which is what gets patched) and
//! shifts its result only when the clock's bit is set in the mask; `gettimeofday` and `time`
//! follow bit 0 (`CLOCK_REALTIME`) and agree exactly with `clock_gettime(CLOCK_REALTIME)`.

/// The page faultd maps into a target.
pub const PAGE_SIZE: usize = 4096;
/// Where the data block starts in the page.
pub const DATA_OFFSET: usize = 0;
/// The data block's length (offset seconds, offset nanoseconds, mask, token).
pub const DATA_LEN: usize = 32;

const NSEC_PER_SEC: i128 = 1_000_000_000;

/// A clock offset, normalized: `0 <= nsec < 1e9` (so -10 m -100 ns is `sec = -601, nsec =
/// 999_999_900`), which is what the fake code expects in its data block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeOffset {
    sec: i64,
    nsec: i64,
}

impl TimeOffset {
    /// The offset `sec` s + `nsec` ns as Chaos Mesh sends it (both may be negative, `nsec` may
    /// exceed a second). `None` when the sum does not fit `i64` seconds.
    pub fn new(sec: i64, nsec: i64) -> Option<TimeOffset> {
        let total = i128::from(sec) * NSEC_PER_SEC + i128::from(nsec);
        let sec = i64::try_from(total.div_euclid(NSEC_PER_SEC)).ok()?;
        let nsec = i64::try_from(total.rem_euclid(NSEC_PER_SEC)).ok()?;
        Some(TimeOffset { sec, nsec })
    }

    /// Whole seconds (floor).
    pub fn sec(&self) -> i64 {
        self.sec
    }

    /// Nanoseconds past [`sec`](Self::sec), in `[0, 1e9)`.
    pub fn nsec(&self) -> i64 {
        self.nsec
    }

    /// The offset in nanoseconds.
    pub fn as_nanos(&self) -> i128 {
        i128::from(self.sec) * NSEC_PER_SEC + i128::from(self.nsec)
    }
}

/// One of the fake functions: where it starts in the page and which vDSO symbol it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum FakeFn {
    ClockGettime,
    Gettimeofday,
    Time,
}

impl FakeFn {
    pub const ALL: [FakeFn; 3] = [FakeFn::ClockGettime, FakeFn::Gettimeofday, FakeFn::Time];

    /// The entry point's offset in the page.
    pub fn entry(self) -> usize {
        match self {
            FakeFn::ClockGettime => 0x60,
            FakeFn::Gettimeofday => 0x90,
            FakeFn::Time => 0xf0,
        }
    }

    /// The x86_64 vDSO symbol this function replaces (exact name).
    pub fn vdso_symbol(self) -> &'static str {
        match self {
            FakeFn::ClockGettime => "__vdso_clock_gettime",
            FakeFn::Gettimeofday => "__vdso_gettimeofday",
            FakeFn::Time => "__vdso_time",
        }
    }

    /// Whether a fault with this clock mask needs this function patched in: `clock_gettime`
    /// for any bit, `gettimeofday` and `time` only for `CLOCK_REALTIME` (bit 0).
    pub fn needed_for(self, mask: u64) -> bool {
        match self {
            FakeFn::ClockGettime => mask != 0,
            FakeFn::Gettimeofday | FakeFn::Time => mask & 1 != 0,
        }
    }
}

/// What the data block of a page holds: the offset, the clocks it applies to, and the token
/// of the fault that wrote it (so a replaced fault's undo can tell that a newer fault owns the
/// page now and leave it alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageData {
    pub offset: TimeOffset,
    pub mask: u64,
    pub token: u64,
}

impl PageData {
    /// The block's bytes.
    pub fn bytes(&self) -> [u8; DATA_LEN] {
        let mut d = [0; DATA_LEN];
        d[0..8].copy_from_slice(&self.offset.sec.to_le_bytes());
        d[8..16].copy_from_slice(&self.offset.nsec.to_le_bytes());
        d[16..24].copy_from_slice(&self.mask.to_le_bytes());
        d[24..32].copy_from_slice(&self.token.to_le_bytes());
        d
    }

    /// A block read back from a target, if its nanoseconds are normalized as faultd writes
    /// them.
    pub fn parse(d: &[u8; DATA_LEN]) -> Option<PageData> {
        let word = |i: usize| <[u8; 8]>::try_from(&d[i..i + 8]).unwrap_or_default();
        let sec = i64::from_le_bytes(word(0));
        let nsec = i64::from_le_bytes(word(8));
        (0..1_000_000_000).contains(&nsec).then_some(PageData {
            offset: TimeOffset { sec, nsec },
            mask: u64::from_le_bytes(word(16)),
            token: u64::from_le_bytes(word(24)),
        })
    }
}

/// The fake page: code, data block, `int3` filler. Entry points: [`FakeFn::entry`].
#[derive(Clone)]
pub struct FakePage([u8; PAGE_SIZE]);

impl FakePage {
    /// The page for `offset` and `mask` (token 0).
    pub fn new(offset: TimeOffset, mask: u64) -> FakePage {
        FakePage::with(&PageData {
            offset,
            mask,
            token: 0,
        })
    }

    /// The page with data block `data`.
    pub fn with(data: &PageData) -> FakePage {
        let mut page = [0xcc; PAGE_SIZE];
        page[..CODE_X86_64.len()].copy_from_slice(&CODE_X86_64);
        page[DATA_OFFSET..DATA_OFFSET + DATA_LEN].copy_from_slice(&data.bytes());
        FakePage(page)
    }

    /// The page's bytes, to write into a freshly mapped page of the target.
    pub fn as_bytes(&self) -> &[u8; PAGE_SIZE] {
        &self.0
    }

    /// The data block alone (token 0), to write at `DATA_OFFSET` of a mapped page to change
    /// the offset or mask of a process already patched.
    pub fn data(offset: TimeOffset, mask: u64) -> [u8; DATA_LEN] {
        PageData {
            offset,
            mask,
            token: 0,
        }
        .bytes()
    }

    /// Whether `page` holds faultd's code (data block aside): a page read back from a target.
    pub fn is_ours(page: &[u8]) -> bool {
        page.len() >= CODE_X86_64.len()
            && page[DATA_LEN..CODE_X86_64.len()] == CODE_X86_64[DATA_LEN..]
    }

    /// The length of the code (data block included): what must be read back to check a page
    /// with [`FakePage::is_ours`].
    pub const CODE_LEN: usize = CODE_X86_64.len();
}

/// The x86_64 code, assembled once from `fake_x86_64.S` (`as --64`, GNU binutils 2.40; no
/// relocations: every reference is RIP-relative inside the page). Offsets on the left.
#[rustfmt::skip]
const CODE_X86_64: [u8; 0x140] = [
    // 0x00 data block: off_sec i64, off_nsec i64, mask u64, reserved u64 (written by FakePage)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // add_offset:
    0x48, 0x8b, 0x05, 0xd9, 0xff, 0xff, 0xff, // 020: mov rax,qword ptr [rip-0x27] # 0 <off_sec>
    0x48, 0x01, 0x06, // 027: add qword ptr [rsi],rax
    0x48, 0x8b, 0x46, 0x08, // 02a: mov rax,qword ptr [rsi+0x8]
    0x48, 0x03, 0x05, 0xd3, 0xff, 0xff, 0xff, // 02e: add rax,qword ptr [rip-0x2d] # 8 <off_nsec>
    0xb9, 0x00, 0xca, 0x9a, 0x3b, // 035: mov ecx,0x3b9aca00
    0x48, 0x39, 0xc8, // 03a: cmp rax,rcx
    0x7c, 0x08, // 03d: jl 47 <add_offset+0x27>
    0x48, 0x29, 0xc8, // 03f: sub rax,rcx
    0x48, 0xff, 0x06, // 042: inc qword ptr [rsi]
    0xeb, 0x0b, // 045: jmp 52 <add_offset+0x32>
    0x48, 0x85, 0xc0, // 047: test rax,rax
    0x79, 0x06, // 04a: jns 52 <add_offset+0x32>
    0x48, 0x01, 0xc8, // 04c: add rax,rcx
    0x48, 0xff, 0x0e, // 04f: dec qword ptr [rsi]
    0x48, 0x89, 0x46, 0x08, // 052: mov qword ptr [rsi+0x8],rax
    0xc3, // 056: ret
    0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // 057: nop word ptr [rax+rax*1+0x0]
    // fake_clock_gettime:
    0xb8, 0xe4, 0x00, 0x00, 0x00, // 060: mov eax,0xe4
    0x0f, 0x05, // 065: syscall
    0x48, 0x85, 0xc0, // 067: test rax,rax
    0x75, 0x1b, // 06a: jne 87 <fake_clock_gettime+0x27>
    0x83, 0xff, 0x3f, // 06c: cmp edi,0x3f
    0x77, 0x16, // 06f: ja 87 <fake_clock_gettime+0x27>
    0x89, 0xf9, // 071: mov ecx,edi
    0x48, 0x8b, 0x15, 0x96, 0xff, 0xff, 0xff, // 073: mov rdx,qword ptr [rip-0x6a] # 10 <mask>
    0x48, 0x0f, 0xa3, 0xca, // 07a: bt rdx,rcx
    0x73, 0x07, // 07e: jae 87 <fake_clock_gettime+0x27>
    0xe8, 0x9b, 0xff, 0xff, 0xff, // 080: call 20 <add_offset>
    0x31, 0xc0, // 085: xor eax,eax
    0xc3, // 087: ret
    0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // 088: nop dword ptr [rax+rax*1+0x0]
    // fake_gettimeofday:
    0xb8, 0x60, 0x00, 0x00, 0x00, // 090: mov eax,0x60
    0x0f, 0x05, // 095: syscall
    0x48, 0x85, 0xc0, // 097: test rax,rax
    0x75, 0x4f, // 09a: jne eb <fake_gettimeofday+0x5b>
    0x48, 0x85, 0xff, // 09c: test rdi,rdi
    0x74, 0x4a, // 09f: je eb <fake_gettimeofday+0x5b>
    0xf6, 0x05, 0x68, 0xff, 0xff, 0xff, 0x01, // 0a1: test byte ptr [rip-0x98],0x1 # 10 <mask>
    0x74, 0x41, // 0a8: je eb <fake_gettimeofday+0x5b>
    0x57, // 0aa: push rdi
    0x48, 0x83, 0xec, 0x10, // 0ab: sub rsp,0x10
    0xb8, 0xe4, 0x00, 0x00, 0x00, // 0af: mov eax,0xe4
    0x31, 0xff, // 0b4: xor edi,edi
    0x48, 0x89, 0xe6, // 0b6: mov rsi,rsp
    0x0f, 0x05, // 0b9: syscall
    0x48, 0x85, 0xc0, // 0bb: test rax,rax
    0x75, 0x24, // 0be: jne e4 <fake_gettimeofday+0x54>
    0xe8, 0x5b, 0xff, 0xff, 0xff, // 0c0: call 20 <add_offset>
    0x48, 0x8b, 0x7c, 0x24, 0x10, // 0c5: mov rdi,qword ptr [rsp+0x10]
    0x48, 0x8b, 0x04, 0x24, // 0ca: mov rax,qword ptr [rsp]
    0x48, 0x89, 0x07, // 0ce: mov qword ptr [rdi],rax
    0x48, 0x8b, 0x44, 0x24, 0x08, // 0d1: mov rax,qword ptr [rsp+0x8]
    0x31, 0xd2, // 0d6: xor edx,edx
    0xb9, 0xe8, 0x03, 0x00, 0x00, // 0d8: mov ecx,0x3e8
    0x48, 0xf7, 0xf1, // 0dd: div rcx
    0x48, 0x89, 0x47, 0x08, // 0e0: mov qword ptr [rdi+0x8],rax
    0x48, 0x83, 0xc4, 0x10, // 0e4: add rsp,0x10
    0x5f, // 0e8: pop rdi
    0x31, 0xc0, // 0e9: xor eax,eax
    0xc3, // 0eb: ret
    0x0f, 0x1f, 0x40, 0x00, // 0ec: nop dword ptr [rax+0x0]
    // fake_time:
    0xf6, 0x05, 0x19, 0xff, 0xff, 0xff, 0x01, // 0f0: test byte ptr [rip-0xe7],0x1 # 10 <mask>
    0x75, 0x08, // 0f7: jne 101 <fake_time+0x11>
    0xb8, 0xc9, 0x00, 0x00, 0x00, // 0f9: mov eax,0xc9
    0x0f, 0x05, // 0fe: syscall
    0xc3, // 100: ret
    0x57, // 101: push rdi
    0x48, 0x83, 0xec, 0x10, // 102: sub rsp,0x10
    0xb8, 0xe4, 0x00, 0x00, 0x00, // 106: mov eax,0xe4
    0x31, 0xff, // 10b: xor edi,edi
    0x48, 0x89, 0xe6, // 10d: mov rsi,rsp
    0x0f, 0x05, // 110: syscall
    0x48, 0x85, 0xc0, // 112: test rax,rax
    0x75, 0x16, // 115: jne 12d <fake_time+0x3d>
    0xe8, 0x04, 0xff, 0xff, 0xff, // 117: call 20 <add_offset>
    0x48, 0x8b, 0x04, 0x24, // 11c: mov rax,qword ptr [rsp]
    0x48, 0x8b, 0x7c, 0x24, 0x10, // 120: mov rdi,qword ptr [rsp+0x10]
    0x48, 0x85, 0xff, // 125: test rdi,rdi
    0x74, 0x03, // 128: je 12d <fake_time+0x3d>
    0x48, 0x89, 0x07, // 12a: mov qword ptr [rdi],rax
    0x48, 0x83, 0xc4, 0x10, // 12d: add rsp,0x10
    0x5f, // 131: pop rdi
    0xc3, // 132: ret
    0x66, 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, // 133: data16 cs nop word ptr [rax+rax*1+0x0]
    0x66, 0x90, // 13e: xchg ax,ax
];
