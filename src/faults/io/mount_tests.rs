use super::*;

const INFO: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 22 0:26 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
41 22 0:40 / /tmp/faultd-io\\040vol rw,relatime - tmpfs tmpfs rw,size=1024k
55 22 253:1 /var/lib/kubelet/pods/x/volumes/data /data rw,relatime master:1 - ext4 /dev/vda1 rw
57 55 0:61 / /data rw,nosuid,nodev,relatime - fuse.faultd faultd-io rw,user_id=0,group_id=0,default_permissions,allow_other
58 57 0:62 / /data rw,nosuid,nodev,relatime - fuse.faultd faultd-io rw,user_id=0,group_id=0,default_permissions,allow_other
60 22 0:63 / /logs rw,relatime shared:7 - tmpfs tmpfs rw
61 22 0:64 / /other ro,noexec,relatime - fuse.sshfs faultd-io rw
";

#[test]
fn parses_fields_optional_tags_and_escapes() {
    let e = parse_mountinfo(INFO);
    assert_eq!(e.len(), 8);
    assert_eq!(
        (e[0].id, e[0].parent, e[0].major, e[0].minor),
        (22, 1, 253, 1)
    );
    assert_eq!(e[0].shared_group(), Some(1));
    assert_eq!(e[2].mount_point, PathBuf::from("/tmp/faultd-io vol"));
    assert_eq!(e[2].shared_group(), None);
    assert!(e[2].optional.is_empty());
    assert_eq!(
        e[3].root,
        PathBuf::from("/var/lib/kubelet/pods/x/volumes/data")
    );
    assert_eq!(e[3].optional, vec!["master:1".to_string()]);
    assert_eq!(e[3].shared_group(), None, "a slave mount is not shared");
    assert_eq!(
        (e[4].fstype.as_str(), e[4].source.as_str()),
        (FSTYPE, SOURCE)
    );
    assert_eq!(e[4].dev(), "0:61");
    assert!(e[7].has_option("ro") && e[7].has_option("noexec") && !e[7].has_option("rw"));
    assert!(MountEntry::parse("garbage").is_none());
    assert!(
        MountEntry::parse("1 2 3:4 / /x rw shared:1").is_none(),
        "no separator"
    );
}

#[test]
fn ours_is_source_and_type() {
    let lines: Vec<&str> = INFO.lines().collect();
    assert!(is_ours(lines[4]) && is_ours(lines[5]));
    assert!(!is_ours(lines[3]), "the volume itself");
    assert!(!is_ours(lines[7]), "our source name on another type");
    assert!(!is_ours(""));
}

#[test]
fn the_top_mount_is_the_one_nothing_is_stacked_on() {
    let e = parse_mountinfo(INFO);
    assert_eq!(top_at(&e, Path::new("/data")).map(|m| m.id), Some(58));
    assert_eq!(top_at(&e, Path::new("/logs")).map(|m| m.id), Some(60));
    assert_eq!(top_at(&e, Path::new("/")).map(|m| m.id), Some(22));
    assert!(top_at(&e, Path::new("/nowhere")).is_none());
    // Order does not matter.
    let mut r = e.clone();
    r.reverse();
    assert_eq!(top_at(&r, Path::new("/data")).map(|m| m.id), Some(58));
}

#[test]
fn volume_paths_normalize_lexically() {
    let n = |p: &str| normalize_volume(Path::new(p));
    assert_eq!(n("/data"), Some(PathBuf::from("/data")));
    assert_eq!(n("/data/"), Some(PathBuf::from("/data")));
    assert_eq!(n("//var//run/./etcd"), Some(PathBuf::from("/var/run/etcd")));
    assert_eq!(n("/"), Some(PathBuf::from("/")));
    assert_eq!(n("data"), None);
    assert_eq!(n("/data/../etc"), None);
    assert_eq!(n(""), None);
}

#[test]
fn unescape_keeps_what_is_not_an_escape() {
    assert_eq!(unescape("a\\134b"), PathBuf::from("a\\b"));
    assert_eq!(unescape("a\\012"), PathBuf::from("a\n"));
    assert_eq!(unescape("a\\9"), PathBuf::from("a\\9"));
    assert_eq!(unescape("tail\\"), PathBuf::from("tail\\"));
    assert_eq!(unescape("\\777x"), PathBuf::from("\\777x"), "above a byte");
}
