//! The vDSO as an ELF image: where it is mapped in a process, its bytes, and the offsets and
//! sizes of its dynamic symbols (found through `PT_DYNAMIC`: `DT_SYMTAB`, `DT_STRTAB`, and
//! `DT_HASH` or `DT_GNU_HASH` for the symbol count), the way a dynamic loader sees it.
use super::VdsoError;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_HASH: u64 = 4;
const DT_STRTAB: u64 = 5;
const DT_SYMTAB: u64 = 6;
const DT_SYMENT: u64 = 11;
const DT_GNU_HASH: u64 = 0x6fff_fef5;
const STT_FUNC: u8 = 2;
const SHN_UNDEF: u16 = 0;
const SYM_LEN: usize = 24;
/// The vDSO is a few pages; anything bigger is not one.
const MAX_LEN: u64 = 1 << 20;

/// A defined function symbol of the vDSO: offset from the image's start (= the mapping's
/// start) and size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Symbol {
    pub offset: u64,
    pub size: u64,
}

/// A parsed 64-bit x86_64 vDSO.
#[derive(Debug, Clone)]
pub struct VdsoImage {
    symbols: Vec<(String, Symbol)>,
}

fn bad(why: impl Into<String>) -> VdsoError {
    VdsoError::BadElf(why.into())
}

/// `base + i * size`, wrapping: a garbage image gives an offset the reads refuse, not a panic.
fn idx(base: u64, i: u64, size: u64) -> u64 {
    base.wrapping_add(i.wrapping_mul(size))
}

fn u16_at(b: &[u8], at: u64) -> Result<u16, VdsoError> {
    let at = usize::try_from(at).map_err(|_| bad("offset overflow"))?;
    b.get(at..at.saturating_add(2))
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| bad(format!("read past the end at {at:#x}")))
}

fn u32_at(b: &[u8], at: u64) -> Result<u32, VdsoError> {
    let at = usize::try_from(at).map_err(|_| bad("offset overflow"))?;
    b.get(at..at.saturating_add(4))
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| bad(format!("read past the end at {at:#x}")))
}

fn u64_at(b: &[u8], at: u64) -> Result<u64, VdsoError> {
    let at = usize::try_from(at).map_err(|_| bad("offset overflow"))?;
    b.get(at..at.saturating_add(8))
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| bad(format!("read past the end at {at:#x}")))
}

impl VdsoImage {
    /// Parses the vDSO image (the bytes of the `[vdso]` mapping). Refuses 32-bit (`vdso32`,
    /// x32 targets), big endian and non-x86_64 images.
    pub fn parse(b: &[u8]) -> Result<VdsoImage, VdsoError> {
        if b.get(..4) != Some(b"\x7fELF") || b.len() < 64 {
            return Err(bad("no ELF header"));
        }
        if b[4] != 2 {
            return Err(VdsoError::Unsupported(format!(
                "ELF class {} (a 32-bit vDSO); only 64-bit targets can be skewed",
                b[4]
            )));
        }
        if b[5] != 1 {
            return Err(VdsoError::Unsupported("big-endian vDSO".into()));
        }
        let machine = u16_at(b, 18)?;
        if machine != EM_X86_64 {
            return Err(VdsoError::Unsupported(format!(
                "vDSO machine {machine} (only x86_64 so far)"
            )));
        }
        let phoff = u64_at(b, 32)?;
        let phentsize = u64::from(u16_at(b, 54)?);
        let phnum = u64::from(u16_at(b, 56)?);
        if phentsize < 56 {
            return Err(bad("program header entries too small"));
        }
        // Addresses in the image are link-time virtual addresses; `bias` maps them to offsets
        // in the image (the first PT_LOAD covers the whole image at offset 0).
        let (mut bias, mut dynamic) = (None, None);
        for i in 0..phnum {
            let ph = idx(phoff, i, phentsize);
            let kind = u32_at(b, ph)?;
            let (off, vaddr, filesz) = (
                u64_at(b, idx(ph, 1, 8))?,
                u64_at(b, idx(ph, 1, 16))?,
                u64_at(b, idx(ph, 1, 32))?,
            );
            if kind == PT_LOAD && bias.is_none() {
                bias = Some(vaddr.wrapping_sub(off));
            }
            if kind == PT_DYNAMIC {
                dynamic = Some((off, filesz));
            }
        }
        let bias = bias.ok_or_else(|| bad("no PT_LOAD"))?;
        let (dyn_off, dyn_len) = dynamic.ok_or_else(|| bad("no PT_DYNAMIC"))?;
        let to_off = |vaddr: u64| vaddr.wrapping_sub(bias);
        let (mut symtab, mut strtab, mut hash, mut gnu_hash, mut syment) =
            (None, None, None, None, SYM_LEN as u64);
        for i in 0..dyn_len / 16 {
            let tag = u64_at(b, idx(dyn_off, i, 16))?;
            let val = u64_at(b, idx(dyn_off, i, 16).wrapping_add(8))?;
            match tag {
                DT_NULL => break,
                DT_SYMTAB => symtab = Some(to_off(val)),
                DT_STRTAB => strtab = Some(to_off(val)),
                DT_HASH => hash = Some(to_off(val)),
                DT_GNU_HASH => gnu_hash = Some(to_off(val)),
                DT_SYMENT => syment = val,
                _ => {}
            }
        }
        let symtab = symtab.ok_or_else(|| bad("no DT_SYMTAB"))?;
        let strtab = strtab.ok_or_else(|| bad("no DT_STRTAB"))?;
        if syment < SYM_LEN as u64 {
            return Err(bad("symbol entries too small"));
        }
        let count = match (hash, gnu_hash) {
            (Some(h), _) => u64::from(u32_at(b, h.wrapping_add(4))?), // nchain = number of symbols
            (None, Some(g)) => gnu_hash_count(b, g)?,
            (None, None) => return Err(bad("neither DT_HASH nor DT_GNU_HASH")),
        };
        if count > b.len() as u64 / syment {
            return Err(bad("symbol count larger than the image"));
        }
        let mut symbols = Vec::new();
        for i in 1..count {
            let s = idx(symtab, i, syment);
            let name = u32_at(b, s)?;
            let info = u32_at(b, s.wrapping_add(4))?.to_le_bytes()[0];
            let shndx = u16_at(b, s.wrapping_add(6))?;
            let (value, size) = (
                u64_at(b, s.wrapping_add(8))?,
                u64_at(b, s.wrapping_add(16))?,
            );
            if info & 0xf != STT_FUNC || shndx == SHN_UNDEF {
                continue;
            }
            let offset = to_off(value);
            if offset
                .checked_add(size)
                .is_none_or(|end| end > b.len() as u64)
            {
                return Err(bad(format!("symbol {i} lies outside the image")));
            }
            let start =
                usize::try_from(strtab.wrapping_add(u64::from(name))).map_err(|_| bad("name"))?;
            let tail = b
                .get(start..)
                .ok_or_else(|| bad("name outside the image"))?;
            let end = tail
                .iter()
                .position(|&c| c == 0)
                .ok_or_else(|| bad("name unterminated"))?;
            let name = String::from_utf8_lossy(&tail[..end]).into_owned();
            symbols.push((name, Symbol { offset, size }));
        }
        Ok(VdsoImage { symbols })
    }

    /// The defined function symbol called exactly `name`.
    pub fn symbol(&self, name: &str) -> Option<Symbol> {
        self.symbols
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| *s)
    }

    /// An image with these symbols (tests of what uses the table).
    #[cfg(test)]
    pub(crate) fn from_symbols(symbols: &[(&str, Symbol)]) -> VdsoImage {
        let symbols = symbols.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        VdsoImage { symbols }
    }

    /// Every defined function symbol, in table order.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, Symbol)> {
        self.symbols.iter().map(|(n, s)| (n.as_str(), *s))
    }
}

/// The number of symbols of a `DT_GNU_HASH` table: one past the highest index any bucket's
/// chain reaches (the chain ends at an entry with its low bit set).
fn gnu_hash_count(b: &[u8], at: u64) -> Result<u64, VdsoError> {
    let nbuckets = u64::from(u32_at(b, at)?);
    let symoffset = u64::from(u32_at(b, at.wrapping_add(4))?);
    let bloom_size = u64::from(u32_at(b, at.wrapping_add(8))?);
    let buckets = idx(at.wrapping_add(16), bloom_size, 8);
    let chains = idx(buckets, nbuckets, 4);
    let mut last = 0;
    for i in 0..nbuckets {
        last = last.max(u64::from(u32_at(b, idx(buckets, i, 4))?));
    }
    if last < symoffset {
        return Ok(symoffset);
    }
    loop {
        let h = u32_at(b, idx(chains, last - symoffset, 4))?;
        if h & 1 == 1 {
            return Ok(last + 1);
        }
        last += 1;
    }
}

/// Where `[vdso]` is mapped in process `pid` (`"self"` for faultd) under `proc_root`:
/// (start, end).
pub fn vdso_range(proc_root: &Path, pid: &str) -> Result<(u64, u64), VdsoError> {
    let path = proc_root.join(pid).join("maps");
    let mut maps = String::new();
    std::fs::File::open(&path)
        .and_then(|mut f| f.read_to_string(&mut maps))
        .map_err(|e| VdsoError::Io(path.display().to_string(), e))?;
    parse_maps_vdso(&maps).ok_or(VdsoError::NoVdso)
}

/// The `[vdso]` line of a `/proc/<pid>/maps` text: (start, end).
pub fn parse_maps_vdso(maps: &str) -> Option<(u64, u64)> {
    let line = maps
        .lines()
        .find(|l| l.split_whitespace().nth(5) == Some("[vdso]"))?;
    let range = line.split_whitespace().next()?;
    let (a, b) = range.split_once('-')?;
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// The vDSO of process `pid` (`"self"` for faultd): its start address and its bytes, read
/// through `/proc/<pid>/mem` (for another process this needs ptrace access: root).
pub fn read_vdso(proc_root: &Path, pid: &str) -> Result<(u64, Vec<u8>), VdsoError> {
    let (start, end) = vdso_range(proc_root, pid)?;
    if end <= start || end - start > MAX_LEN {
        return Err(bad(format!(
            "[vdso] mapping of {} bytes",
            end.wrapping_sub(start)
        )));
    }
    let path = proc_root.join(pid).join("mem");
    let mut bytes = vec![0; (end - start) as usize];
    std::fs::File::open(&path)
        .and_then(|f| f.read_exact_at(&mut bytes, start))
        .map_err(|e| VdsoError::Io(path.display().to_string(), e))?;
    Ok((start, bytes))
}
