//! Which operations an action applies to: a path glob, a set of methods and a percentage,
//! exactly as toda's `src/injector/filter.rs` decides it.
//!
//! - **Path.** A Unix glob (the `glob` crate, 0.3, as toda) matched against the path *as the
//!   container sees it*: the volume path joined with the path inside the volume (toda's
//!   `HookFs::rebuild_path`: `mount_path.join(tail)`, so the volume root itself is `"<volume>/"`).
//!   Options: case-sensitive, `require_literal_separator` (`*`, `?` and `[…]` never match a
//!   `/`; `**` as a whole component matches any number of directories, none included),
//!   `require_literal_leading_dot` off (`*` matches `.hidden`). `/var/run/etcd/**/*` is
//!   everything below `/var/run/etcd`; a pattern without a leading `/` such as `*.log`
//!   matches nothing, since every path starts with the volume's. An empty or missing `path`
//!   matches every path. A path that is not UTF-8 matches no pattern.
//! - **Methods.** The 32 FUSE operation names of toda's `Method` bitflags (`lookup` …
//!   `bmap`), matched without regard to case as toda lowercases them; missing or empty is
//!   every method.
//! - **Percent.** Each action draws independently on each operation (toda: one
//!   `rand::thread_rng().gen::<f64>() < percent / 100` per filter call): 0 never applies,
//!   100 always does, `p` applies to `p`% of the matching operations on average.
use std::path::Path;

use glob::{MatchOptions, Pattern, PatternError};

use super::IoRng;

macro_rules! methods {
    ($($variant:ident = $name:literal),* $(,)?) => {
        /// A FUSE operation, in the order of toda's `Method` bits (`lookup` = bit 0 …
        /// `bmap` = bit 31).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Method {
            $($variant),*
        }

        impl Method {
            /// Every method, in bit order.
            pub const ALL: [Method; 32] = [$(Method::$variant),*];

            /// The name as Chaos Mesh's `IoMethod` spells it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Method::$variant => $name),*
                }
            }
        }
    };
}

methods! {
    Lookup = "lookup",
    Forget = "forget",
    Getattr = "getattr",
    Setattr = "setattr",
    Readlink = "readlink",
    Mknod = "mknod",
    Mkdir = "mkdir",
    Unlink = "unlink",
    Rmdir = "rmdir",
    Symlink = "symlink",
    Rename = "rename",
    Link = "link",
    Open = "open",
    Read = "read",
    Write = "write",
    Flush = "flush",
    Release = "release",
    Fsync = "fsync",
    Opendir = "opendir",
    Readdir = "readdir",
    Releasedir = "releasedir",
    Fsyncdir = "fsyncdir",
    Statfs = "statfs",
    Setxattr = "setxattr",
    Getxattr = "getxattr",
    Listxattr = "listxattr",
    Removexattr = "removexattr",
    Access = "access",
    Create = "create",
    Getlk = "getlk",
    Setlk = "setlk",
    Bmap = "bmap",
}

impl Method {
    /// Parses a method name in any case (toda lowercases before matching).
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }

    fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MethodSet(u32);

impl MethodSet {
    pub const EMPTY: MethodSet = MethodSet(0);
    pub const ALL: MethodSet = MethodSet(u32::MAX);

    pub fn of(methods: &[Method]) -> MethodSet {
        let mut s = MethodSet::EMPTY;
        for m in methods {
            s.insert(*m);
        }
        s
    }

    pub fn insert(&mut self, m: Method) {
        self.0 |= m.bit();
    }

    pub fn contains(self, m: Method) -> bool {
        self.0 & m.bit() != 0
    }

    pub fn is_all(self) -> bool {
        self == MethodSet::ALL
    }
}

/// toda's options for `Pattern::matches_path_with`.
pub const MATCH_OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// An action's scope: path glob, methods, percent.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// `None`: every path.
    path: Option<Pattern>,
    methods: MethodSet,
    /// `0..=100`.
    percent: u8,
}

impl Filter {
    /// `path` empty: every path. `percent` above 100 is taken as 100 (the parser refuses it).
    pub fn new(path: &str, methods: MethodSet, percent: u8) -> Result<Filter, PatternError> {
        Ok(Filter {
            path: if path.is_empty() {
                None
            } else {
                Some(Pattern::new(path)?)
            },
            methods,
            percent: percent.min(100),
        })
    }

    /// The glob as written; `""` for every path.
    pub fn pattern(&self) -> &str {
        self.path.as_ref().map_or("", Pattern::as_str)
    }

    pub fn methods(&self) -> MethodSet {
        self.methods
    }

    pub fn percent(&self) -> u8 {
        self.percent
    }

    pub fn covers_method(&self, method: Method) -> bool {
        self.methods.contains(method)
    }

    /// Whether `path` (as the container sees it) matches the glob.
    pub fn covers_path(&self, path: &Path) -> bool {
        self.path
            .as_ref()
            .is_none_or(|p| p.matches_path_with(path, MATCH_OPTIONS))
    }

    /// The percent draw of one operation.
    pub fn roll<R: IoRng + ?Sized>(&self, rng: &mut R) -> bool {
        roll(self.percent, rng)
    }

    /// Whether the action applies to this operation: method, path, then one percent draw.
    pub fn applies<R: IoRng + ?Sized>(&self, method: Method, path: &Path, rng: &mut R) -> bool {
        self.covers_method(method) && self.covers_path(path) && self.roll(rng)
    }
}

/// `true` with probability `percent`/100 (no draw for 0 and 100).
pub fn roll<R: IoRng + ?Sized>(percent: u8, rng: &mut R) -> bool {
    match percent {
        0 => false,
        100.. => true,
        p => rng.below(100) < u64::from(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::io::SplitMix64;

    fn glob(p: &str, path: &str) -> bool {
        Filter::new(p, MethodSet::ALL, 100)
            .unwrap()
            .covers_path(Path::new(path))
    }

    #[test]
    fn method_names_are_upstreams_32_in_bit_order() {
        let names = Method::ALL.map(Method::name);
        assert_eq!(names.len(), 32);
        assert_eq!(names[0], "lookup");
        assert_eq!(names[13], "read");
        assert_eq!(names[14], "write");
        assert_eq!(names[31], "bmap");
        for (i, m) in Method::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
            assert_eq!(Method::parse(m.name()), Some(*m));
        }
        assert_eq!(Method::parse("READ"), Some(Method::Read));
        assert_eq!(Method::parse("GetAttr"), Some(Method::Getattr));
        assert_eq!(Method::parse("reed"), None);
        assert_eq!(Method::parse(""), None);
    }

    #[test]
    fn method_sets() {
        let s = MethodSet::of(&[Method::Read, Method::Bmap]);
        assert!(s.contains(Method::Read) && s.contains(Method::Bmap));
        assert!(!s.contains(Method::Write) && !s.contains(Method::Lookup));
        assert!(Method::ALL.iter().all(|m| MethodSet::ALL.contains(*m)));
        assert!(Method::ALL.iter().all(|m| !MethodSet::EMPTY.contains(*m)));
        assert!(MethodSet::ALL.is_all() && !s.is_all());
    }

    #[test]
    fn recursive_glob_covers_everything_below_the_directory() {
        let p = "/var/run/etcd/**/*";
        assert!(glob(p, "/var/run/etcd/member"));
        assert!(glob(p, "/var/run/etcd/member/snap/db"));
        assert!(glob(p, "/var/run/etcd/.hidden"));
        assert!(!glob(p, "/var/run/etcdx/member"));
        assert!(!glob(p, "/var/run/other/etcd/member"));
        assert!(!glob(p, "/var/run/etcd"));
        // The volume root as toda builds it (`join("")`) matches: `**/` and `*` match nothing.
        assert!(glob(p, "/var/run/etcd/"));
    }

    #[test]
    fn star_never_crosses_a_separator() {
        assert!(glob("/data/*", "/data/f"));
        assert!(!glob("/data/*", "/data/d/f"));
        assert!(glob("/data/*/f", "/data/d/f"));
        assert!(!glob("/data/*/f", "/data/d/e/f"));
        assert!(glob("/data/?", "/data/a"));
        assert!(!glob("/data/?a", "/data//a"));
        assert!(!glob("/data[/]x", "/data/x"));
        assert!(glob("/data/[ab].log", "/data/b.log"));
        assert!(glob("/data/[!ab].log", "/data/c.log"));
        assert!(!glob("/data/[!ab].log", "/data/a.log"));
    }

    #[test]
    fn log_glob_without_directory_matches_no_container_path() {
        assert!(!glob("*.log", "/data/a.log"));
        assert!(!glob("*.log", "/a.log"));
        assert!(glob("/data/*.log", "/data/a.log"));
        assert!(!glob("/data/*.log", "/data/sub/a.log"));
        assert!(glob("/data/**/*.log", "/data/sub/deeper/a.log"));
        assert!(glob("/data/**/*.log", "/data/a.log"));
        assert!(!glob("/data/**/*.log", "/data/a.txt"));
    }

    #[test]
    fn globs_are_case_sensitive_and_match_dot_files() {
        assert!(!glob("/Data/*", "/data/f"));
        assert!(glob("/data/*", "/data/.f"));
        assert!(glob("/data/*", "/data/."));
        // Literal text, no metacharacters: only that path.
        assert!(glob("/data/f", "/data/f"));
        assert!(!glob("/data/f", "/data/f/g"));
    }

    #[test]
    fn empty_pattern_matches_everything_and_bad_patterns_are_refused() {
        let f = Filter::new("", MethodSet::ALL, 100).unwrap();
        assert_eq!(f.pattern(), "");
        assert!(f.covers_path(Path::new("/anything/at/all")));
        assert!(f.covers_path(Path::new("")));
        for bad in [
            "/data/***",
            "/data/a**",
            "/data/**b",
            "/data/[",
            "/data/[!]",
        ] {
            assert!(Filter::new(bad, MethodSet::ALL, 100).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_utf8_paths_match_no_pattern() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/data/\xff"));
        assert!(!Filter::new("/data/*", MethodSet::ALL, 100)
            .unwrap()
            .covers_path(p));
        assert!(Filter::new("", MethodSet::ALL, 100).unwrap().covers_path(p));
    }

    #[test]
    fn applies_needs_method_path_and_draw() {
        let mut rng = SplitMix64::new(1);
        let f = Filter::new("/data/*", MethodSet::of(&[Method::Read]), 100).unwrap();
        assert!(f.applies(Method::Read, Path::new("/data/f"), &mut rng));
        assert!(!f.applies(Method::Write, Path::new("/data/f"), &mut rng));
        assert!(!f.applies(Method::Read, Path::new("/other/f"), &mut rng));
        let never = Filter::new("/data/*", MethodSet::ALL, 0).unwrap();
        assert!((0..1000).all(|_| !never.applies(Method::Read, Path::new("/data/f"), &mut rng)));
    }

    #[test]
    fn percent_0_and_100_draw_nothing() {
        struct NoDraw;
        impl IoRng for NoDraw {
            fn next_u64(&mut self) -> u64 {
                panic!("drew a number")
            }
        }
        assert!(!roll(0, &mut NoDraw));
        assert!(roll(100, &mut NoDraw));
        assert_eq!(Filter::new("", MethodSet::ALL, 250).unwrap().percent(), 100);
    }

    #[test]
    fn percent_is_an_independent_draw_per_operation() {
        // 200 000 draws per percentage: the standard deviation of the hit count is at most
        // ~224 (p = 50), so 5 sigma stays within ±1 120 hits (±0.56 points).
        let mut rng = SplitMix64::new(0x5eed);
        for p in [1u8, 10, 25, 50, 75, 99] {
            let n = 200_000;
            let hits = (0..n).filter(|_| roll(p, &mut rng)).count() as f64;
            let expect = n as f64 * f64::from(p) / 100.0;
            let sigma = (n as f64 * f64::from(p) / 100.0 * (1.0 - f64::from(p) / 100.0)).sqrt();
            assert!(
                (hits - expect).abs() < 5.0 * sigma,
                "p={p}: {hits} hits, expected {expect} ± {}",
                5.0 * sigma
            );
        }
        // Consecutive draws are not correlated: P(hit, hit) ≈ p².
        let pairs = 100_000;
        let both = (0..pairs)
            .filter(|_| roll(50, &mut rng) & roll(50, &mut rng))
            .count() as f64;
        assert!((both / pairs as f64 - 0.25).abs() < 0.01, "{both}");
    }
}
