//! TimeChaos building blocks (x86_64): faultd's fake clock page ([`fake`]), the vDSO's ELF
//! symbols ([`elf`]), and the jump faultd writes over a vDSO entry point to reach its page.
//!
//! Nothing here touches another process: the ptrace remote-syscall module maps the page and
//! writes the patch; this module only computes bytes and reads `/proc`.
pub mod elf;
pub mod fake;

pub use elf::{Symbol, VdsoImage};
pub use fake::{FakeFn, FakePage, PageData, TimeOffset};

use crate::failure::FailureKind;

/// The patch's length: `movabs rax, imm64` (10 bytes) + `jmp rax` (2 bytes).
pub const PATCH_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VdsoError {
    #[error("reading {0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("the process has no [vdso] mapping")]
    NoVdso,
    #[error("malformed vDSO image: {0}")]
    BadElf(String),
    #[error("unsupported target: {0}")]
    Unsupported(String),
    #[error("the vDSO has no symbol {0}")]
    MissingSymbol(&'static str),
    #[error("vDSO symbol {name} is {size} bytes, shorter than the {PATCH_LEN}-byte patch")]
    TooShort { name: &'static str, size: u64 },
}

impl VdsoError {
    pub fn kind(&self) -> FailureKind {
        match self {
            VdsoError::Io(_, e) if e.kind() == std::io::ErrorKind::NotFound => {
                FailureKind::NotFound
            }
            VdsoError::Io(..) | VdsoError::BadElf(_) => FailureKind::Internal,
            VdsoError::NoVdso
            | VdsoError::Unsupported(_)
            | VdsoError::MissingSymbol(_)
            | VdsoError::TooShort { .. } => FailureKind::FailedPrecondition,
        }
    }
}

crate::impl_failure!(VdsoError);

/// The bytes written over a vDSO entry point: `movabs rax, target; jmp rax`. `rax` is free
/// at a function's entry (caller-saved, the return register).
pub fn jump_patch(target: u64) -> [u8; PATCH_LEN] {
    let mut p = [0; PATCH_LEN];
    p[0] = 0x48;
    p[1] = 0xb8;
    p[2..10].copy_from_slice(&target.to_le_bytes());
    p[10] = 0xff;
    p[11] = 0xe0;
    p
}

/// The target of a jump patch, if `bytes` start with one (the entry is already faultd's).
pub fn parse_jump_patch(bytes: &[u8]) -> Option<u64> {
    match bytes.get(..PATCH_LEN)? {
        [0x48, 0xb8, imm @ .., 0xff, 0xe0] => Some(u64::from_le_bytes(imm.try_into().ok()?)),
        _ => None,
    }
}

/// What a vDSO entry of a target holds, compared with faultd's own (pristine) vDSO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// The same bytes as faultd's own vDSO.
    Pristine,
    /// faultd's jump to a page at this address.
    Patched(u64),
    /// Neither: someone else's patch or a different kernel image; do not touch.
    Foreign,
}

/// Classifies the first `PATCH_LEN` bytes of a target's entry against faultd's own.
pub fn entry_state(target: &[u8], pristine: &[u8]) -> EntryState {
    match (target.get(..PATCH_LEN), pristine.get(..PATCH_LEN)) {
        (Some(t), Some(p)) if t == p => EntryState::Pristine,
        (Some(t), _) => parse_jump_patch(t).map_or(EntryState::Foreign, EntryState::Patched),
        _ => EntryState::Foreign,
    }
}

/// Where each fake function's vDSO symbol is (offset from the vDSO start), for the functions
/// `mask` needs ([`FakeFn::needed_for`]); refuses a missing symbol or one shorter than the
/// patch.
pub fn patch_sites(image: &VdsoImage, mask: u64) -> Result<Vec<(FakeFn, Symbol)>, VdsoError> {
    FakeFn::ALL
        .into_iter()
        .filter(|f| f.needed_for(mask))
        .map(|f| {
            let name = f.vdso_symbol();
            let sym = image.symbol(name).ok_or(VdsoError::MissingSymbol(name))?;
            if sym.size < PATCH_LEN as u64 {
                return Err(VdsoError::TooShort {
                    name,
                    size: sym.size,
                });
            }
            Ok((f, sym))
        })
        .collect()
}

#[cfg(test)]
mod tests;
