use super::*;

#[test]
fn dirents_parse_and_stop_at_garbage() {
    let mut b = Vec::new();
    for (ino, off, ty, name) in [(5u64, 1i64, 4u8, "."), (9, 2, 8, "file.log")] {
        let reclen = (19 + name.len() + 1).next_multiple_of(8);
        let start = b.len();
        b.extend_from_slice(&ino.to_ne_bytes());
        b.extend_from_slice(&off.to_ne_bytes());
        b.extend_from_slice(&(reclen as u16).to_ne_bytes());
        b.push(ty);
        b.extend_from_slice(name.as_bytes());
        b.resize(start + reclen, 0);
    }
    b.extend_from_slice(&[1, 2, 3]);
    let e = parse_dirents(&b);
    assert_eq!(e.len(), 2);
    assert_eq!((e[1].ino, e[1].next, e[1].kind), (9, 2, 8));
    assert_eq!(e[1].name, b"file.log");
    assert_eq!(e[0].name, b".");
}

#[test]
fn names_are_single_components() {
    for bad in ["", ".", "..", "a/b", "/"] {
        assert_eq!(component(OsStr::new(bad)), Err(Errno::EINVAL), "{bad:?}");
    }
    assert!(component(OsStr::new("...")).is_ok());
    assert!(component(OsStr::new(".hidden")).is_ok());
}

#[test]
fn passthrough_over_a_temp_dir() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("f"), b"hello").unwrap();
    let root = nix::fcntl::open(
        d.path(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let p = Passthrough::new(root).unwrap();
    let me = Caller {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    };
    let (f, st) = p.lookup(1, OsStr::new("f")).unwrap();
    assert_eq!(st.st_size, 5);
    assert_eq!(p.path(f).unwrap(), PathBuf::from("f"));
    let fh = p.open(f, libc::O_RDWR).unwrap();
    assert_eq!(p.read(fh, 1, 10).unwrap(), b"ello");
    assert_eq!(p.write(fh, 5, b"!").unwrap(), 1);
    p.release(fh);
    assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"hello!");
    let (sub, st) = p.mkdir(1, OsStr::new("sub"), 0o750, me).unwrap();
    assert_eq!(st.st_mode & 0o777, 0o750);
    let (g, _, fh) = p
        .create(sub, OsStr::new("g"), 0o666, libc::O_WRONLY, me)
        .unwrap();
    let mode =
        std::os::unix::fs::MetadataExt::mode(&std::fs::metadata(d.path().join("sub/g")).unwrap());
    assert_eq!(mode, 0o100666, "faultd's umask is undone");
    p.release(fh);
    p.rename(1, OsStr::new("sub"), 1, OsStr::new("moved"), 0)
        .unwrap();
    assert_eq!(p.path(g).unwrap(), PathBuf::from("moved/g"));
    let dh = p.opendir(sub).unwrap();
    let names: Vec<Vec<u8>> = p
        .readdir(dh, 0, 4096)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&b"g".to_vec()), "{names:?}");
    p.release(dh);
    assert_eq!(p.handles(), 0);
    assert_eq!(
        p.lookup(1, OsStr::new("..")).unwrap_err(),
        Errno::EINVAL,
        "never above the volume"
    );
    p.unlink(sub, OsStr::new("g"), false).unwrap();
    p.forget(g, 1);
    assert!(!d.path().join("moved/g").exists());
    let (l, _) = p
        .symlink(1, OsStr::new("l"), std::path::Path::new("/etc/passwd"), me)
        .unwrap();
    assert_eq!(p.readlink(l).unwrap(), b"/etc/passwd");
    assert_eq!(p.getattr(l).unwrap().st_mode & libc::S_IFMT, libc::S_IFLNK);
}
