//! Which rules match a request or a response (chaos-tproxy
//! `chaos-tproxy-proxy/src/handler/http/selector.rs`: `select_request`, `select_response`).
//!
//! Every field present must match; an absent field matches anything.
//! - `port`: the original destination port of the connection.
//! - `path`: a wildcard pattern over the URI path without the query ([`Pattern`]).
//! - `method`: exact, case-sensitive comparison (`http::Method` equality; `get` is an
//!   extension method, not `GET`).
//! - `code`: the response status; Response rules only.
//! - `request_headers` / `response_headers` (the latter Response rules only): for each
//!   `name: value`, some occurrence of the header (name case-insensitive) has exactly that
//!   value (case-sensitive, the whole field value; `a, b` on one line is one value).
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// A rule's selector, validated.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub port: Option<u16>,
    pub path: Option<Pattern>,
    pub method: Option<Method>,
    pub code: Option<StatusCode>,
    pub request_headers: Vec<(HeaderName, HeaderValue)>,
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
}

/// What a selector sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The original destination port.
    pub port: u16,
    pub method: &'a Method,
    /// The URI path, without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

impl Selector {
    /// Whether a Request rule with this selector applies (`code` and `response_headers` are
    /// not looked at, as upstream).
    pub fn matches_request(&self, req: RequestView<'_>) -> bool {
        self.port.is_none_or(|p| p == req.port)
            && self.path.as_ref().is_none_or(|p| p.matches(req.path))
            && self.method.as_ref().is_none_or(|m| m == req.method)
            && headers_match(&self.request_headers, req.headers)
    }

    /// Whether a Response rule with this selector applies: the request part is matched
    /// against the request as it was forwarded.
    pub fn matches_response(
        &self,
        req: RequestView<'_>,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> bool {
        self.matches_request(req)
            && self.code.is_none_or(|c| c == status)
            && headers_match(&self.response_headers, headers)
    }
}

fn headers_match(wanted: &[(HeaderName, HeaderValue)], have: &HeaderMap) -> bool {
    wanted
        .iter()
        .all(|(name, value)| have.get_all(name).iter().any(|v| v == value))
}

/// A path pattern as `wildmatch` 2 reads it (upstream's matcher): `*` matches any run of
/// characters (also empty, also across `/`), `?` exactly one character, everything else
/// itself, case-sensitive; no escapes, no character classes. The whole path must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pattern: Vec<char>,
    source: String,
}

impl Pattern {
    pub fn new(pattern: &str) -> Pattern {
        Pattern {
            pattern: pattern.chars().collect(),
            source: pattern.to_string(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Linear-space matching with one backtrack point (the last `*`), as wildmatch does.
    pub fn matches(&self, text: &str) -> bool {
        let p = &self.pattern;
        let t: Vec<char> = text.chars().collect();
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(method: &'a Method, path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            port: 8080,
            method,
            path,
            headers,
        }
    }

    #[test]
    fn wildcard_paths_as_upstream() {
        // chaos-tproxy's own cases (selector.rs `test_select_request`).
        assert!(!Pattern::new("/src").matches("/src/"));
        assert!(!Pattern::new("src").matches("/src/"));
        assert!(Pattern::new("/src/").matches("/src/"));
        assert!(Pattern::new("/src*").matches("/src/"));
        assert!(Pattern::new("/src?").matches("/src/"));
        // `*` crosses `/`, matches empty; `?` is exactly one character.
        assert!(Pattern::new("/api/*").matches("/api/v1/users"));
        assert!(Pattern::new("/api/*").matches("/api/"));
        assert!(!Pattern::new("/api/*").matches("/api"));
        assert!(Pattern::new("*").matches("/"));
        assert!(Pattern::new("/*/users").matches("/v1/v2/users"));
        assert!(!Pattern::new("/?").matches("/ab"));
        assert!(Pattern::new("/?b").matches("/ab"));
        assert!(Pattern::new("/é?").matches("/éé"));
        assert!(!Pattern::new("/API").matches("/api"));
        assert!(Pattern::new("/a*b*c").matches("/aXXbYYbc"));
        assert!(!Pattern::new("/a*b*c").matches("/aXXbYYb"));
        assert!(Pattern::new("**").matches(""));
        assert!(!Pattern::new("").matches("/"));
    }

    #[test]
    fn request_fields_all_must_match() {
        let mut h = HeaderMap::new();
        h.append("x-user", "alice".parse().unwrap());
        h.append("x-user", "bob".parse().unwrap());
        h.insert("x-list", "a, b".parse().unwrap());
        let get = Method::GET;
        let sel = Selector {
            port: Some(8080),
            path: Some(Pattern::new("/api/*")),
            method: Some(Method::GET),
            request_headers: vec![("x-user".parse().unwrap(), "bob".parse().unwrap())],
            ..Selector::default()
        };
        assert!(sel.matches_request(view(&get, "/api/x", &h)));
        assert!(!sel.matches_request(RequestView {
            port: 80,
            ..view(&get, "/api/x", &h)
        }));
        assert!(!sel.matches_request(view(&Method::POST, "/api/x", &h)));
        assert!(!sel.matches_request(view(&get, "/other", &h)));
        // Exact value, case-sensitive; a comma-joined line is one value.
        let want = |v: &str| Selector {
            request_headers: vec![("X-List".parse().unwrap(), v.parse().unwrap())],
            ..Selector::default()
        };
        assert!(want("a, b").matches_request(view(&get, "/", &h)));
        assert!(!want("a").matches_request(view(&get, "/", &h)));
        let bob = Selector {
            request_headers: vec![("X-USER".parse().unwrap(), "Bob".parse().unwrap())],
            ..Selector::default()
        };
        assert!(!bob.matches_request(view(&get, "/", &h)));
        // A lowercase method is another method.
        let lower = Selector {
            method: Some(Method::from_bytes(b"get").unwrap()),
            ..Selector::default()
        };
        assert!(!lower.matches_request(view(&get, "/", &h)));
    }

    #[test]
    fn code_and_response_headers_count_for_responses_only() {
        let h = HeaderMap::new();
        let mut rh = HeaderMap::new();
        rh.insert("content-type", "application/json".parse().unwrap());
        let sel = Selector {
            code: Some(StatusCode::NOT_FOUND),
            response_headers: vec![(
                "content-type".parse().unwrap(),
                "application/json".parse().unwrap(),
            )],
            ..Selector::default()
        };
        let get = Method::GET;
        assert!(sel.matches_request(view(&get, "/", &h)));
        assert!(sel.matches_response(view(&get, "/", &h), StatusCode::NOT_FOUND, &rh));
        assert!(!sel.matches_response(view(&get, "/", &h), StatusCode::OK, &rh));
        assert!(!sel.matches_response(
            view(&get, "/", &h),
            StatusCode::NOT_FOUND,
            &HeaderMap::new()
        ));
    }
}
