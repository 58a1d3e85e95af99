//! `ApplyIOChaosRequest.actions`: the JSON list of Chaos Mesh `IOChaosAction`
//! (`api/v1alpha1/podiochaos_types.go`), parsed and validated in full before anything is
//! applied.
//!
//! The wire form is what `controllers/podiochaos/controller.go` writes with Go's
//! `encoding/json` (`json.Marshal(obj.Spec.Actions)`): the `Filter` and the `AttrOverrideSpec`
//! are embedded, so their fields sit in the action itself; empty optional fields are omitted.
//! `controllers/chaosimpl/iochaos/impl.go` gives every action `faults: [{errno: <spec.errno>,
//! weight: 1}]`, whatever its type, so a latency action carries `{"errno":0,"weight":1}`:
//!
//! ```json
//! [{"type":"latency","path":"/var/run/etcd/**/*","percent":50,
//!   "faults":[{"errno":0,"weight":1}],"latency":"100ms","source":"ns/name"},
//!  {"type":"fault","path":"/data/*","methods":["write"],"percent":100,
//!   "faults":[{"errno":5,"weight":1}],"source":"ns/other"},
//!  {"type":"attrOverride","path":"/data/*","percent":100,"faults":[{"errno":0,"weight":1}],
//!   "perm":72,"atime":{"sec":0,"nsec":0},"kind":"regularFile"},
//!  {"type":"mistake","path":"/data/*","methods":["read","write"],"percent":100,
//!   "faults":[{"errno":0,"weight":1}],
//!   "mistake":{"filling":"zero","maxOccurrences":1,"maxLength":10000}}]
//! ```
//!
//! `""`, `"null"` and `"[]"` are no actions (the caller removes the layer). Fields that do not
//! belong to an action's type are ignored, as toda does (a latency action's `faults` above);
//! so are unknown fields. A key spelled in another case (`"Percent"`) is found as Go's decoder
//! in chaos-daemon finds it. Every error names the action (by index) and the field.
use std::time::Duration;

use serde_json::{Map, Value};

use super::matcher::{Filter, Method, MethodSet};
use super::IoError;
use crate::faults::json_list::{self, type_name};

/// Errnos a fault may return: `1..=511`. Linux's own end at 133; 512 and up are kernel-internal
/// (`ERESTARTSYS`, …) and the kernel refuses them in a FUSE reply (`fs/fuse/dev.c`,
/// `fuse_dev_do_write`).
pub const MAX_ERRNO: u32 = 511;

/// One validated action.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    pub kind: ActionKind,
    /// Which operations it applies to.
    pub filter: Filter,
    /// The IOChaos that asked for it (`namespace/name`), for logs; may be empty.
    pub source: String,
}

/// What an action does, by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum ActionKind {
    /// `latency`: the operation waits this long before it runs.
    Latency(Duration),
    /// `fault`: the operation fails with one of these errnos instead of running.
    Fault(Vec<WeightedErrno>),
    /// `attrOverride`: attributes the layer returns are replaced (it ignores `methods`).
    AttrOverride(AttrOverride),
    /// `mistake`: data read or written is damaged.
    Mistake(Mistake),
}

impl ActionKind {
    /// The `type` as Chaos Mesh spells it.
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::Latency(_) => "latency",
            ActionKind::Fault(_) => "fault",
            ActionKind::AttrOverride(_) => "attrOverride",
            ActionKind::Mistake(_) => "mistake",
        }
    }
}

/// One entry of a fault's `faults`: an errno (`1..=MAX_ERRNO`) and its weight (`> 0`; entries of
/// weight 0 are kept but never chosen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightedErrno {
    pub errno: i32,
    pub weight: u32,
}

/// A time as Chaos Mesh's `Timespec` (`{"sec":…,"nsec":…}`), `nsec` in `0..1_000_000_000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

/// A file type as Chaos Mesh's `FileType` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    NamedPipe,
    CharDevice,
    BlockDevice,
    Directory,
    RegularFile,
    Symlink,
    Socket,
}

impl FileKind {
    const NAMES: [(&'static str, FileKind); 7] = [
        ("namedPipe", FileKind::NamedPipe),
        ("charDevice", FileKind::CharDevice),
        ("blockDevice", FileKind::BlockDevice),
        ("directory", FileKind::Directory),
        ("regularFile", FileKind::RegularFile),
        ("symlink", FileKind::Symlink),
        ("socket", FileKind::Socket),
    ];

    /// Parses Chaos Mesh's spelling (exact, as toda's serde enum).
    pub fn parse(s: &str) -> Option<FileKind> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    /// The `S_IFMT` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::NamedPipe => libc::S_IFIFO,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::RegularFile => libc::S_IFREG,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::Socket => libc::S_IFSOCK,
        }
    }

    /// The type of an `st_mode`; `None` for bits that name no type.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        [
            FileKind::NamedPipe,
            FileKind::CharDevice,
            FileKind::BlockDevice,
            FileKind::Directory,
            FileKind::RegularFile,
            FileKind::Symlink,
            FileKind::Socket,
        ]
        .into_iter()
        .find(|k| k.mode_bits() == mode & libc::S_IFMT)
    }
}

/// The attributes an `attrOverride` action replaces (`None`: left as the file has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttrOverride {
    pub ino: Option<u64>,
    pub size: Option<u64>,
    /// In 512-byte units, as `st_blocks`.
    pub blocks: Option<u64>,
    pub atime: Option<Timespec>,
    pub mtime: Option<Timespec>,
    pub ctime: Option<Timespec>,
    pub kind: Option<FileKind>,
    /// Permission bits only (`<= 0o7777`); the type comes from `kind`.
    pub perm: Option<u16>,
    pub nlink: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub rdev: Option<u32>,
}

/// What a mistake writes into the damaged runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filling {
    Zero,
    Random,
}

/// A `mistake` action's parameters: between 1 and `max_occurrences` runs, each of 1 to
/// `max_length` bytes (both at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mistake {
    pub filling: Filling,
    pub max_occurrences: u64,
    pub max_length: u64,
}

/// Parses and validates `ApplyIOChaosRequest.actions`; any error names the action (by index)
/// and the field. An empty result means "no IOChaos on this volume".
pub fn parse_actions(json: &str) -> Result<Vec<Action>, IoError> {
    let list = json_list::items(json, "IOChaos actions").map_err(IoError::Json)?;
    list.iter()
        .enumerate()
        .map(|(index, v)| parse_action(index, v))
        .collect()
}

fn parse_action(index: usize, v: &Value) -> Result<Action, IoError> {
    let a = match v {
        Value::Object(map) => Obj {
            map,
            index,
            path: String::new(),
        },
        other => {
            return Err(IoError::Action {
                index,
                field: "(action)".into(),
                reason: format!("expected an object, got {}", type_name(other)),
            })
        }
    };
    let kind_name = a
        .str("type")?
        .ok_or_else(|| a.err("type", "missing (latency, fault, attrOverride or mistake)"))?;
    // Validated for every type (the controller sends them for every type); attrOverride
    // ignores them when matching, as toda's `AttrOverrideInjector` does.
    let methods = parse_methods(&a)?;
    let percent = match a.int("percent")? {
        None => return Err(a.err("percent", "missing (0 to 100)")),
        Some(p) => u8::try_from(p)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| a.err("percent", format!("{p} is outside 0..=100")))?,
    };
    let path = a.str("path")?.unwrap_or("");
    let kind = match kind_name {
        "latency" => ActionKind::Latency(parse_latency(&a)?),
        "fault" => ActionKind::Fault(parse_faults(&a)?),
        "attrOverride" => ActionKind::AttrOverride(parse_attr(&a)?),
        "mistake" => ActionKind::Mistake(parse_mistake(&a)?),
        other => {
            return Err(a.err(
                "type",
                format!("unknown action type {other:?} (latency, fault, attrOverride or mistake)"),
            ))
        }
    };
    let methods = match kind {
        ActionKind::AttrOverride(_) => MethodSet::ALL,
        _ => methods,
    };
    let filter = Filter::new(path, methods, percent)
        .map_err(|e| a.err("path", format!("{path:?} is not a valid glob: {e}")))?;
    Ok(Action {
        kind,
        filter,
        source: a.str("source")?.unwrap_or("").to_string(),
    })
}

/// `methods`: missing or empty is every method; names are matched as toda does (any case).
fn parse_methods(a: &Obj) -> Result<MethodSet, IoError> {
    let list = match a.get("methods") {
        None => return Ok(MethodSet::ALL),
        Some(Value::Array(l)) => l,
        Some(other) => {
            return Err(a.err(
                "methods",
                format!("expected a list of method names, got {}", type_name(other)),
            ))
        }
    };
    if list.is_empty() {
        return Ok(MethodSet::ALL);
    }
    let mut set = MethodSet::EMPTY;
    for (i, m) in list.iter().enumerate() {
        let field = format!("methods[{i}]");
        let name = m.as_str().ok_or_else(|| {
            a.err(
                &field,
                format!("expected a method name, got {}", type_name(m)),
            )
        })?;
        let method = Method::parse(name).ok_or_else(|| {
            a.err(
                &field,
                format!(
                    "unknown method {name:?} (one of {})",
                    Method::ALL.map(Method::name).join(", ")
                ),
            )
        })?;
        set.insert(method);
    }
    Ok(set)
}

/// `latency`: a Go duration (`time.ParseDuration`, what the IOChaos webhook checks), not
/// negative, required.
fn parse_latency(a: &Obj) -> Result<Duration, IoError> {
    let s = a
        .str("latency")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| a.err("latency", "missing (a duration such as \"100ms\")"))?;
    let nanos = crate::duration::parse_signed_nanos(s)
        .map_err(|e| a.err("latency", format!("bad duration: {e}")))?;
    let nanos = u64::try_from(nanos).map_err(|_| a.err("latency", format!("{s:?} is negative")))?;
    Ok(Duration::from_nanos(nanos))
}

/// `faults`: at least one `{errno, weight}`, errnos `1..=MAX_ERRNO` as numbers (Go's
/// `uint32`: no names), weights not negative and not all 0.
fn parse_faults(a: &Obj) -> Result<Vec<WeightedErrno>, IoError> {
    let list = match a.get("faults") {
        Some(Value::Array(l)) if !l.is_empty() => l,
        Some(Value::Array(_)) | None => {
            return Err(a.err(
                "faults",
                "missing (a list of {\"errno\": N, \"weight\": W}, e.g. errno 5 for EIO)",
            ))
        }
        Some(other) => {
            return Err(a.err(
                "faults",
                format!("expected a list, got {}", type_name(other)),
            ))
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let f = a.child(&format!("faults[{i}]"), f)?;
        let errno = parse_errno(&f)?;
        let weight = f
            .uint("weight", i32::MAX as u64)?
            .ok_or_else(|| f.err("weight", "missing"))?;
        out.push(WeightedErrno {
            errno: errno as i32,
            weight: weight as u32,
        });
    }
    if out.iter().all(|f| f.weight == 0) {
        return Err(a.err(
            "faults",
            "every weight is 0: the action could never return an error",
        ));
    }
    Ok(out)
}

/// An errno: a JSON number in `1..=MAX_ERRNO` (chaos-daemon decodes it as Go's `uint32`, toda
/// as `i32`: a name such as `"EIO"` is refused by both).
fn parse_errno(f: &Obj) -> Result<u32, IoError> {
    const HINT: &str = "a number in 1..=511 such as 5 for EIO";
    match f.get("errno") {
        None => Err(f.err("errno", format!("missing ({HINT})"))),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(e) if (1..=u64::from(MAX_ERRNO)).contains(&e) => Ok(e as u32),
            Some(0) => Err(f.err("errno", format!("0 is not an error ({HINT})"))),
            _ => Err(f.err(
                "errno",
                format!("{n} is not {HINT} (512 and above are kernel-internal)"),
            )),
        },
        Some(other) => Err(f.err(
            "errno",
            format!("expected {HINT}, got {} {other}", type_name(other)),
        )),
    }
}

fn parse_attr(a: &Obj) -> Result<AttrOverride, IoError> {
    let u32_of = |key: &str| -> Result<Option<u32>, IoError> {
        Ok(a.uint(key, u64::from(u32::MAX))?.map(|v| v as u32))
    };
    let kind = match a.str("kind")? {
        None => None,
        Some(k) => Some(FileKind::parse(k).ok_or_else(|| {
            a.err(
                "kind",
                format!(
                    "unknown file kind {k:?} (one of {})",
                    FileKind::NAMES.map(|(n, _)| n).join(", ")
                ),
            )
        })?),
    };
    Ok(AttrOverride {
        ino: a.uint("ino", u64::MAX)?,
        size: a.uint("size", u64::MAX)?,
        blocks: a.uint("blocks", u64::MAX)?,
        atime: parse_time(a, "atime")?,
        mtime: parse_time(a, "mtime")?,
        ctime: parse_time(a, "ctime")?,
        kind,
        perm: a.uint("perm", 0o7777)?.map(|v| v as u16),
        nlink: u32_of("nlink")?,
        uid: u32_of("uid")?,
        gid: u32_of("gid")?,
        rdev: u32_of("rdev")?,
    })
}

fn parse_time(a: &Obj, key: &str) -> Result<Option<Timespec>, IoError> {
    let Some(v) = a.get(key) else {
        return Ok(None);
    };
    let t = a.child(key, v)?;
    let sec = match t.get("sec") {
        None => 0,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| t.err("sec", format!("{n} is not a 64-bit integer")))?,
        Some(other) => {
            return Err(t.err(
                "sec",
                format!("expected an integer, got {}", type_name(other)),
            ))
        }
    };
    let nsec = t.uint("nsec", 999_999_999)?.unwrap_or(0) as u32;
    Ok(Some(Timespec { sec, nsec }))
}

fn parse_mistake(a: &Obj) -> Result<Mistake, IoError> {
    let m = match a.get("mistake") {
        Some(v) => a.child("mistake", v)?,
        None => return Err(a.err(
            "mistake",
            "missing ({\"filling\": \"zero\"|\"random\", \"maxOccurrences\": N, \"maxLength\": N})",
        )),
    };
    let filling = match m.str("filling")? {
        Some("zero") => Filling::Zero,
        Some("random") => Filling::Random,
        Some(other) => {
            return Err(m.err(
                "filling",
                format!("{other:?} is neither \"zero\" nor \"random\""),
            ))
        }
        None => return Err(m.err("filling", "missing (\"zero\" or \"random\")")),
    };
    let at_least_one = |key: &str| -> Result<u64, IoError> {
        match m.uint(key, u64::MAX)? {
            None => Err(m.err(key, "missing (at least 1)")),
            Some(0) => Err(m.err(key, "0: must be at least 1")),
            Some(n) => Ok(n),
        }
    };
    Ok(Mistake {
        filling,
        max_occurrences: at_least_one("maxOccurrences")?,
        max_length: at_least_one("maxLength")?,
    })
}

/// A JSON object inside an action and its path for error messages. A `null` field is a missing
/// one (Go's pointers and omitted fields).
struct Obj<'a> {
    map: &'a Map<String, Value>,
    index: usize,
    path: String,
}

impl<'a> Obj<'a> {
    fn field(&self, key: &str) -> String {
        json_list::field(&self.path, key)
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> IoError {
        IoError::Action {
            index: self.index,
            field: self.field(key),
            reason: reason.into(),
        }
    }

    /// The value of `key`: the exact key, else one equal but for ASCII case (Go's decoder).
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map
            .get(key)
            .or_else(|| {
                self.map
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .filter(|v| !v.is_null())
    }

    /// `v` (found at `key`, which may carry an index) as an object.
    fn child(&self, key: &str, v: &'a Value) -> Result<Obj<'a>, IoError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map,
                index: self.index,
                path: self.field(key),
            }),
            other => Err(self.err(key, format!("expected an object, got {}", type_name(other)))),
        }
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, IoError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.err(key, format!("expected a string, got {}", type_name(other))))
            }
        }
    }

    fn int(&self, key: &str) -> Result<Option<i64>, IoError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("{n} is not an integer"))),
            Some(other) => Err(self.err(
                key,
                format!("expected an integer, got {}", type_name(other)),
            )),
        }
    }

    /// An unsigned integer in `0..=max`.
    fn uint(&self, key: &str, max: u64) -> Result<Option<u64>, IoError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= max => Ok(Some(v)),
                _ if n.is_f64() => Err(self.err(key, format!("{n} is not an integer"))),
                _ => Err(self.err(key, format!("{n} is outside 0..={max}"))),
            },
            Some(other) => Err(self.err(
                key,
                format!("expected an integer, got {}", type_name(other)),
            )),
        }
    }
}

#[cfg(test)]
#[path = "actions_tests.rs"]
mod tests;
