//! Parsing and validation of the container ids and pod UIDs that arrive over the wire.
//!
//! Ids come from the pod status (`containerd://<64 hex>`, `cri-o://…`, `docker://…`). They end up
//! in URL paths (Docker, CRI-O), gRPC requests (containerd) and cgroup path matching, so anything
//! that could escape those contexts (`/`, `..`, NUL, whitespace, `?`, `%`, quotes) is rejected.
use std::fmt;

use super::{RuntimeError, RuntimeKind};

/// Longest id accepted (containerd's own limit is lower; CRI ids are 64 hex digits).
pub const MAX_ID_LEN: usize = 128;

/// A validated `<runtime>://<id>` container reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId {
    kind: RuntimeKind,
    id: String,
}

impl ContainerId {
    /// Parses `containerd://<id>`, `cri-o://<id>` or `docker://<id>`.
    ///
    /// containerd ids may be names (`ctr run … web-1`): `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}` without
    /// `..`. Docker and CRI-O ids must be 1..=128 hex digits (what the kubelet reports).
    pub fn parse(input: &str) -> Result<Self, RuntimeError> {
        let bad = |reason: &str| RuntimeError::InvalidId {
            input: input.into(),
            reason: reason.into(),
        };
        if input.is_empty() {
            return Err(bad("empty container id"));
        }
        let (kind, rest) = RuntimeKind::ALL
            .iter()
            .find_map(|k| input.strip_prefix(k.prefix()).map(|r| (*k, r)))
            .ok_or_else(|| {
                bad("expected a containerd://, cri-o:// or docker:// prefix (the pod status containerID)")
            })?;
        if rest.is_empty() {
            return Err(bad("empty id after the runtime prefix"));
        }
        if rest.len() > MAX_ID_LEN {
            return Err(bad(&format!("id longer than {MAX_ID_LEN} characters")));
        }
        match kind {
            RuntimeKind::Containerd => {
                let first_ok = rest.as_bytes()[0].is_ascii_alphanumeric();
                let all_ok = rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
                if !first_ok || !all_ok {
                    return Err(bad(
                        "containerd ids are [A-Za-z0-9][A-Za-z0-9_.-]* (no '/', whitespace or other characters)",
                    ));
                }
                if rest.contains("..") {
                    return Err(bad("id contains '..'"));
                }
            }
            RuntimeKind::Crio | RuntimeKind::Docker => {
                if !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(&format!("{kind} container ids are hexadecimal")));
                }
            }
        }
        Ok(ContainerId {
            kind,
            id: rest.to_string(),
        })
    }

    /// The runtime named by the prefix.
    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }

    /// The id without its prefix, as the runtime knows it.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.prefix(), self.id)
    }
}

/// Validates a Kubernetes pod UID (a UUID in practice): 1..=64 of `[A-Za-z0-9-]`. It is embedded
/// in a containerd filter expression and a Docker label filter, so nothing else is allowed.
pub fn validate_pod_uid(uid: &str) -> Result<(), RuntimeError> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::InvalidPodUid { input: uid.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ErrorKind;

    const HEX64: &str = "4c8a3a7b2f0e9d1c6b5a4e3f2d1c0b9a8f7e6d5c4b3a29180716253443526170";

    fn invalid(input: &str) {
        let e = ContainerId::parse(input).expect_err(input);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{input:?}: {e}");
    }

    #[test]
    fn accepts_the_three_runtimes() {
        let c = ContainerId::parse(&format!("containerd://{HEX64}")).unwrap();
        assert_eq!((c.kind(), c.id()), (RuntimeKind::Containerd, HEX64));
        assert_eq!(c.to_string(), format!("containerd://{HEX64}"));
        let c = ContainerId::parse(&format!("cri-o://{HEX64}")).unwrap();
        assert_eq!(c.kind(), RuntimeKind::Crio);
        let c = ContainerId::parse(&format!("docker://{HEX64}")).unwrap();
        assert_eq!(c.kind(), RuntimeKind::Docker);
        // containerd names as created by `ctr run`.
        for ok in ["c1", "web-1", "a.b_c-d", "X", &"a".repeat(128)] {
            let c = ContainerId::parse(&format!("containerd://{ok}")).unwrap();
            assert_eq!(c.id(), ok);
        }
        ContainerId::parse(&format!("docker://{}", "F".repeat(128))).unwrap();
    }

    #[test]
    fn rejects_empty_and_prefix_only() {
        invalid("");
        invalid("containerd://");
        invalid("docker://");
        invalid("cri-o://");
    }

    #[test]
    fn rejects_unknown_or_malformed_prefix() {
        invalid(HEX64);
        invalid(&format!("crio://{HEX64}"));
        invalid(&format!("containerd:/{HEX64}"));
        invalid(&format!("CONTAINERD://{HEX64}"));
        invalid(&format!("podman://{HEX64}"));
        invalid(&format!(" containerd://{HEX64}"));
        let e = ContainerId::parse("rkt://abc").unwrap_err();
        assert!(e.to_string().contains("rkt://abc"), "{e}");
    }

    #[test]
    fn rejects_path_characters() {
        for bad in [
            "containerd://../etc",
            "containerd://a/b",
            "containerd://a..b",
            "containerd://..",
            "containerd://.hidden",
            "containerd://-dash",
            "containerd://_x",
            "containerd://a\0b",
            "containerd://a b",
            "containerd://a\tb",
            "containerd://a\n",
            "containerd://a?x=1",
            "containerd://a%2fb",
            "containerd://a\"b",
            "docker://abc/../def",
            "docker://abc%2F",
            "cri-o://abc?x",
        ] {
            invalid(bad);
        }
    }

    #[test]
    fn rejects_non_hex_for_docker_and_crio() {
        invalid("docker://my-container");
        invalid("cri-o://cx1");
        invalid("docker://abcdefg");
    }

    #[test]
    fn rejects_unicode() {
        invalid("containerd://café");
        invalid("containerd://ａｂｃ"); // fullwidth letters
        invalid("docker://٤٢"); // Arabic-Indic digits
        invalid("containerd://a\u{200b}b"); // zero-width space
        invalid("containerd://a\u{2215}b"); // division slash
    }

    #[test]
    fn rejects_too_long() {
        invalid(&format!("containerd://{}", "a".repeat(129)));
        invalid(&format!("docker://{}", "a".repeat(129)));
        invalid(&format!("cri-o://{}", "0".repeat(4096)));
    }

    #[test]
    fn pod_uids() {
        validate_pod_uid("0f3c1a9e-7c1d-4a0e-9d59-1f3e1d2c3b4a").unwrap();
        for bad in ["", "a,b", "a\"b", "a b", "a/b", "ü", &"a".repeat(65)] {
            let e = validate_pod_uid(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        }
    }
}
