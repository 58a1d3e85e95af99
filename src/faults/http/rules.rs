//! `ApplyHttpChaosRequest.rules`: a JSON list of Chaos Mesh `PodHttpChaosBaseRule`
//! (`api/v1alpha1/podhttpchaos_types.go`, marshalled by `controllers/podhttpchaos/controller.go`),
//! parsed and validated in full before anything is applied.
//!
//! The wire form, as the controller writes it (Go `encoding/json`: optional fields omitted or
//! `null`, maps with sorted keys, `[]byte` as standard base64):
//!
//! ```json
//! [{"target":"Request",
//!   "selector":{"port":8080,"path":"/api/*","method":"GET","code":200,
//!               "request_headers":{"X-A":"1"},"response_headers":{"X-B":"2"}},
//!   "actions":{"abort":true,"delay":"1.5s",
//!              "replace":{"path":"/p","method":"PUT","code":503,"body":"aGk=",
//!                         "queries":{"k":"v"},"headers":{"X-C":"3"}},
//!              "patch":{"body":{"type":"JSON","value":"{\"a\":1}"},
//!                       "queries":[["k","v"]],"headers":[["X-D","4"]]}}}]
//! ```
//!
//! `replace.body` may also be `{"type":"TEXT"|"BASE64","value":"…"}`, the form chaos-daemon's
//! `pkg/chaosdaemon/tproxyconfig/config.go` accepts besides the base64 string. `selector` and
//! `actions` may be missing (empty); `target` may not. Unknown fields are ignored, as Go does.
//! `""`, `"null"` and `"[]"` are the empty rule set.
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use serde_json::{Map, Value};

use super::action::{Actions, Patch, Replace};
use super::selector::{Pattern, Selector};
use super::HttpError;
use crate::faults::json_list::{self, type_name};

/// Whether a rule acts on the request or on the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Request,
    Response,
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub target: Target,
    pub selector: Selector,
    pub actions: Actions,
}

/// Parses and validates the rules; any error names the rule (by index) and the field.
pub fn parse_rules(json: &str) -> Result<Vec<Rule>, HttpError> {
    let list = json_list::items(json, "rules").map_err(HttpError::RulesJson)?;
    list.iter()
        .enumerate()
        .map(|(index, v)| parse_rule(index, v))
        .collect()
}

fn parse_rule(index: usize, v: &Value) -> Result<Rule, HttpError> {
    let rule = Obj::root(index, v)?;
    let target = match rule.str("target")? {
        Some("Request") => Target::Request,
        Some("Response") => Target::Response,
        Some(other) => {
            return Err(rule.err(
                "target",
                format!("{other:?} is neither \"Request\" nor \"Response\""),
            ))
        }
        None => return Err(rule.err("target", "missing (\"Request\" or \"Response\")")),
    };
    Ok(Rule {
        target,
        selector: parse_selector(&rule.obj("selector")?)?,
        actions: parse_actions(&rule.obj("actions")?)?,
    })
}

fn parse_selector(s: &Obj) -> Result<Selector, HttpError> {
    Ok(Selector {
        port: s
            .int("port")?
            .map(|p| u16::try_from(p).map_err(|_| s.err("port", format!("{p} is not a port"))))
            .transpose()?,
        path: s.str("path")?.map(Pattern::new),
        method: s
            .str("method")?
            .map(|m| method(s, "method", m))
            .transpose()?,
        code: s.int("code")?.map(|c| status(s, "code", c)).transpose()?,
        request_headers: headers(s, "request_headers", s.string_map("request_headers")?)?,
        response_headers: headers(s, "response_headers", s.string_map("response_headers")?)?,
    })
}

fn parse_actions(a: &Obj) -> Result<Actions, HttpError> {
    let delay = a
        .str("delay")?
        .map(|d| go_duration(d).map_err(|why| a.err("delay", why)))
        .transpose()?;
    let replace = match a.get("replace") {
        None => None,
        Some(_) => Some(parse_replace(&a.obj("replace")?)?),
    };
    let patch = match a.get("patch") {
        None => None,
        Some(_) => Some(parse_patch(&a.obj("patch")?)?),
    };
    Ok(Actions {
        abort: a.bool("abort")?.unwrap_or(false),
        delay,
        replace,
        patch,
    })
}

fn parse_replace(r: &Obj) -> Result<Replace, HttpError> {
    let path = match r.str("path")? {
        None => None,
        Some("") => Some("/".to_string()),
        Some(p) => {
            let ok = p.starts_with('/')
                && PathAndQuery::try_from(p).is_ok_and(|pq| pq.query().is_none())
                && !p.contains('#');
            if !ok {
                return Err(r.err(
                    "path",
                    format!("{p:?} is not a URI path starting with / (no query, no fragment)"),
                ));
            }
            Some(p.to_string())
        }
    };
    let body = match r.get("body") {
        None => None,
        Some(Value::String(b64)) => Some(base64(b64).map_err(|why| r.err("body", why))?),
        Some(Value::Object(_)) => {
            let b = r.obj("body")?;
            let value = b.str("value")?.unwrap_or("");
            match b.str("type")? {
                Some("TEXT") => Some(Bytes::copy_from_slice(value.as_bytes())),
                Some("BASE64") => Some(base64(value).map_err(|why| b.err("value", why))?),
                other => {
                    return Err(b.err(
                        "type",
                        format!("{other:?}: expected \"TEXT\" or \"BASE64\""),
                    ))
                }
            }
        }
        Some(other) => {
            return Err(r.err(
                "body",
                format!(
                    "expected a base64 string or {{\"type\",\"value\"}}, got {}",
                    type_name(other)
                ),
            ))
        }
    };
    Ok(Replace {
        path,
        method: r
            .str("method")?
            .map(|m| method(r, "method", m))
            .transpose()?,
        code: r.int("code")?.map(|c| status(r, "code", c)).transpose()?,
        body,
        queries: r.string_map("queries")?,
        headers: headers(r, "headers", r.string_map("headers")?)?,
    })
}

fn parse_patch(p: &Obj) -> Result<Patch, HttpError> {
    let body = match p.get("body") {
        None => None,
        Some(_) => {
            let b = p.obj("body")?;
            match b.str("type")? {
                Some("JSON") => {}
                other => {
                    return Err(b.err(
                        "type",
                        format!("{other:?}: only \"JSON\" (a merge patch, RFC 7396) is supported"),
                    ))
                }
            }
            let value = b.str("value")?.unwrap_or("");
            let patch: Value = serde_json::from_str(value)
                .map_err(|e| b.err("value", format!("not JSON: {e}")))?;
            Some(patch)
        }
    };
    Ok(Patch {
        body,
        queries: p.pairs("queries")?,
        headers: headers(p, "headers", p.pairs("headers")?)?,
    })
}

fn method(o: &Obj, key: &str, m: &str) -> Result<Method, HttpError> {
    Method::from_bytes(m.as_bytes()).map_err(|_| o.err(key, format!("{m:?} is not an HTTP method")))
}

fn status(o: &Obj, key: &str, c: i64) -> Result<StatusCode, HttpError> {
    u16::try_from(c)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| o.err(key, format!("{c} is not an HTTP status code (100-999)")))
}

fn headers(
    o: &Obj,
    key: &str,
    pairs: Vec<(String, String)>,
) -> Result<Vec<(HeaderName, HeaderValue)>, HttpError> {
    pairs
        .into_iter()
        .map(|(name, value)| {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| o.err(key, format!("{name:?} is not a header name")))?;
            let v = HeaderValue::from_str(&value)
                .map_err(|_| o.err(key, format!("{name}: {value:?} is not a header value")))?;
            Ok((n, v))
        })
        .collect()
}

fn base64(s: &str) -> Result<Bytes, String> {
    const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    B64.decode(s)
        .map(Bytes::from)
        .map_err(|e| format!("not base64: {e}"))
}

/// A delay in Go's `time.ParseDuration` syntax (what the HTTPChaos webhook validates `delay`
/// with: `300ms`, `1.5s`, `2h45m`, `100us`, `0`); negative delays are refused.
pub fn go_duration(s: &str) -> Result<Duration, String> {
    match crate::duration::parse_signed_nanos(s)? {
        n if n < 0 => Err(format!("{s:?}: a delay cannot be negative")),
        n => Ok(Duration::from_nanos(n as u64)),
    }
}

/// A JSON object of a rule (or the rule itself) and its path for error messages. A missing
/// or `null` object is an empty one, and a `null` field is a missing one (Go's pointers).
pub(super) struct Obj<'a> {
    map: Option<&'a Map<String, Value>>,
    index: usize,
    path: String,
}

impl<'a> Obj<'a> {
    fn root(index: usize, v: &'a Value) -> Result<Obj<'a>, HttpError> {
        match v {
            Value::Object(map) => Ok(Obj {
                map: Some(map),
                index,
                path: String::new(),
            }),
            other => Err(HttpError::Rule {
                index,
                field: "(rule)".into(),
                reason: format!("expected an object, got {}", type_name(other)),
            }),
        }
    }

    fn field(&self, key: &str) -> String {
        json_list::field(&self.path, key)
    }

    fn err(&self, key: &str, reason: impl Into<String>) -> HttpError {
        HttpError::Rule {
            index: self.index,
            field: self.field(key),
            reason: reason.into(),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map?.get(key).filter(|v| !v.is_null())
    }

    fn obj(&self, key: &str) -> Result<Obj<'a>, HttpError> {
        let map = match self.get(key) {
            None => None,
            Some(Value::Object(m)) => Some(m),
            Some(other) => {
                return Err(self.err(key, format!("expected an object, got {}", type_name(other))))
            }
        };
        Ok(Obj {
            map,
            index: self.index,
            path: self.field(key),
        })
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, HttpError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.err(key, format!("expected a string, got {}", type_name(other))))
            }
        }
    }

    fn int(&self, key: &str) -> Result<Option<i64>, HttpError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .filter(|n| i32::try_from(*n).is_ok())
                .map(Some)
                .ok_or_else(|| self.err(key, format!("{n} is not a 32-bit integer"))),
            Some(other) => Err(self.err(
                key,
                format!("expected an integer, got {}", type_name(other)),
            )),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, HttpError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(self.err(
                key,
                format!("expected true or false, got {}", type_name(other)),
            )),
        }
    }

    /// A `map[string]string`, in the order Go wrote it (sorted by key).
    fn string_map(&self, key: &str) -> Result<Vec<(String, String)>, HttpError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Err(self.err(
                        key,
                        format!("{k:?}: expected a string, got {}", type_name(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.err(
                key,
                format!("expected an object of strings, got {}", type_name(other)),
            )),
        }
    }

    /// A `[][]string` of `[key, value]` pairs.
    fn pairs(&self, key: &str) -> Result<Vec<(String, String)>, HttpError> {
        let list = match self.get(key) {
            None => return Ok(Vec::new()),
            Some(Value::Array(l)) => l,
            Some(other) => {
                return Err(self.err(
                    key,
                    format!(
                        "expected a list of [key, value] pairs, got {}",
                        type_name(other)
                    ),
                ))
            }
        };
        list.iter()
            .enumerate()
            .map(|(i, pair)| match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(k), Value::String(v)]) => Ok((k.clone(), v.clone())),
                _ => Err(self.err(
                    &format!("{key}[{i}]"),
                    format!("expected [key, value] (two strings), got {pair}"),
                )),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        parse_rules(json).unwrap_err().to_string()
    }

    #[test]
    fn empty_rule_sets() {
        for empty in ["", "  ", "null", "[]", " [ ] "] {
            assert!(parse_rules(empty).unwrap().is_empty(), "{empty:?}");
        }
    }

    #[test]
    fn controller_fixtures() {
        // What controllers/podhttpchaos/controller.go marshals for the upstream e2e cases
        // (e2e-test/e2e/chaos/httpchaos/*.go): delay, abort, replace (with the []byte body as
        // base64), patch, TLS delay on 8081.
        let json = r#"[
          {"target":"Request","selector":{"port":8080},"actions":{"delay":"1s"}},
          {"target":"Request","selector":{"port":8080,"path":"/api/*","method":"GET"},"actions":{"abort":true}},
          {"target":"Request","selector":{"port":8080},"actions":{"replace":{"body":"SGVsbG8gQ2hhb3MgTWVzaA==","headers":{"Secret":"Foo!"}}}},
          {"target":"Request","selector":{"port":8080},"actions":{"patch":{"body":{"type":"JSON","value":"{\"msg\":\"Hello Chaos Mesh\"}"},"headers":[["Secret","Bar!"]]}}},
          {"target":"Response","selector":{"port":8081,"code":200,"request_headers":{"X-A":"1"},"response_headers":{"Content-Type":"application/json"}},"actions":{"replace":{"code":503,"body":{"type":"TEXT","value":"down"}},"patch":{"queries":[["a","b"]]}}}
        ]"#;
        let rules = parse_rules(json).unwrap();
        assert_eq!(rules.len(), 5);
        assert_eq!(rules[0].target, Target::Request);
        assert_eq!(rules[0].selector.port, Some(8080));
        assert_eq!(rules[0].actions.delay, Some(Duration::from_secs(1)));
        assert!(!rules[0].actions.abort);
        assert!(rules[1].actions.abort);
        assert_eq!(rules[1].selector.method, Some(Method::GET));
        assert!(rules[1].selector.path.as_ref().unwrap().matches("/api/x"));
        let r = rules[2].actions.replace.as_ref().unwrap();
        assert_eq!(r.body.as_deref(), Some(&b"Hello Chaos Mesh"[..]));
        assert_eq!(
            r.headers,
            [("secret".parse().unwrap(), "Foo!".parse().unwrap())]
        );
        let p = rules[3].actions.patch.as_ref().unwrap();
        assert_eq!(p.body, Some(serde_json::json!({"msg":"Hello Chaos Mesh"})));
        assert_eq!(p.headers.len(), 1);
        let resp = &rules[4];
        assert_eq!(resp.target, Target::Response);
        assert_eq!(resp.selector.code, Some(StatusCode::OK));
        assert_eq!(resp.selector.request_headers.len(), 1);
        assert_eq!(resp.selector.response_headers.len(), 1);
        let r = resp.actions.replace.as_ref().unwrap();
        assert_eq!(r.code, Some(StatusCode::SERVICE_UNAVAILABLE));
        assert_eq!(r.body.as_deref(), Some(&b"down"[..]));
        let q = &resp.actions.patch.as_ref().unwrap().queries;
        assert_eq!(q, &[("a".to_string(), "b".to_string())]);
    }

    #[test]
    fn go_nulls_missing_sections_and_unknown_fields() {
        let json = r#"[{"target":"Response","selector":null,"source":"ns/name","port":80,
            "actions":{"abort":null,"delay":null,"replace":null,"patch":{"body":null,"queries":null}}},
            {"target":"Request"}]"#;
        let rules = parse_rules(json).unwrap();
        assert!(rules[0].selector.port.is_none());
        assert!(rules[0].actions.replace.is_none());
        let p = rules[0].actions.patch.as_ref().unwrap();
        assert!(p.body.is_none() && p.queries.is_empty());
        assert!(!rules[1].actions.abort);
        // Replace body as {"type":"BASE64"} and an empty replace path.
        let rules = parse_rules(
            r#"[{"target":"Request","actions":{"replace":{"path":"","body":{"type":"BASE64","value":"aGk="}}}}]"#,
        )
        .unwrap();
        let r = rules[0].actions.replace.as_ref().unwrap();
        assert_eq!(r.path.as_deref(), Some("/"));
        assert_eq!(r.body.as_deref(), Some(&b"hi"[..]));
    }

    #[test]
    fn errors_name_rule_and_field() {
        let cases = [
            (r#"{"target":"Request"}"#, "rules: expected a JSON list of rules, got an object"),
            (r#"[{"target":"Request"},"x"]"#, "rules[1].(rule): expected an object, got a string"),
            ("[{]", "rules: key must be a string"),
            (r#"[{}]"#, "rules[0].target: missing"),
            (r#"[{"target":"request"}]"#, "rules[0].target: \"request\" is neither"),
            (r#"[{"target":"Request","selector":{"port":"80"}}]"#, "rules[0].selector.port: expected an integer, got a string"),
            (r#"[{"target":"Request","selector":{"port":70000}}]"#, "rules[0].selector.port: 70000 is not a port"),
            (r#"[{"target":"Request","selector":{"port":1.5}}]"#, "rules[0].selector.port: 1.5 is not a 32-bit integer"),
            (r#"[{"target":"Request","selector":{"method":"GE T"}}]"#, "rules[0].selector.method: \"GE T\" is not an HTTP method"),
            (r#"[{"target":"Request","selector":{"method":""}}]"#, "rules[0].selector.method: \"\" is not an HTTP method"),
            (r#"[{"target":"Response","selector":{"code":99}}]"#, "rules[0].selector.code: 99 is not an HTTP status code"),
            (r#"[{"target":"Request","selector":{"request_headers":{"X A":"1"}}}]"#, "rules[0].selector.request_headers: \"X A\" is not a header name"),
            (r#"[{"target":"Request","selector":{"response_headers":{"X-A":"a\nb"}}}]"#, "rules[0].selector.response_headers: X-A: \"a\\nb\" is not a header value"),
            (r#"[{"target":"Request","selector":{"request_headers":{"X-A":1}}}]"#, "rules[0].selector.request_headers: \"X-A\": expected a string, got a number"),
            (r#"[{"target":"Request","actions":{"delay":"10"}}]"#, "rules[0].actions.delay: \"10\": missing unit"),
            (r#"[{"target":"Request","actions":{"delay":"1x"}}]"#, "rules[0].actions.delay: \"1x\": unknown unit \"x\""),
            (r#"[{"target":"Request","actions":{"delay":"-1s"}}]"#, "rules[0].actions.delay: \"-1s\": a delay cannot be negative"),
            (r#"[{"target":"Request","actions":{"abort":"yes"}}]"#, "rules[0].actions.abort: expected true or false"),
            (r#"[{"target":"Request","actions":{"replace":{"code":1000}}}]"#, "rules[0].actions.replace.code: 1000 is not an HTTP status code"),
            (r#"[{"target":"Request","actions":{"replace":{"method":"a b"}}}]"#, "rules[0].actions.replace.method"),
            (r#"[{"target":"Request","actions":{"replace":{"path":"api"}}}]"#, "rules[0].actions.replace.path: \"api\" is not a URI path"),
            (r#"[{"target":"Request","actions":{"replace":{"path":"/a?b"}}}]"#, "rules[0].actions.replace.path"),
            (r#"[{"target":"Request","actions":{"replace":{"body":"%%%"}}}]"#, "rules[0].actions.replace.body: not base64"),
            (r#"[{"target":"Request","actions":{"replace":{"body":{"type":"HEX","value":"00"}}}}]"#, "rules[0].actions.replace.body.type: Some(\"HEX\")"),
            (r#"[{"target":"Request","actions":{"replace":{"body":{"type":"BASE64","value":"!"}}}}]"#, "rules[0].actions.replace.body.value: not base64"),
            (r#"[{"target":"Request","actions":{"replace":{"headers":{"X-A":"\u0000"}}}}]"#, "rules[0].actions.replace.headers: X-A"),
            (r#"[{"target":"Request","actions":{"patch":{"body":{"type":"XML","value":"<a/>"}}}}]"#, "rules[0].actions.patch.body.type: Some(\"XML\"): only \"JSON\""),
            (r#"[{"target":"Request","actions":{"patch":{"body":{"type":"JSON","value":"{nope"}}}}]"#, "rules[0].actions.patch.body.value: not JSON"),
            (r#"[{"target":"Request","actions":{"patch":{"queries":[["a"]]}}}]"#, "rules[0].actions.patch.queries[0]: expected [key, value] (two strings), got [\"a\"]"),
            (r#"[{"target":"Request","actions":{"patch":{"headers":[["a","b","c"]]}}}]"#, "rules[0].actions.patch.headers[0]"),
            (r#"[{"target":"Request","actions":{"patch":{"headers":[["bad name","b"]]}}}]"#, "rules[0].actions.patch.headers: \"bad name\" is not a header name"),
            (r#"[{"target":"Request"},{"target":"Request","actions":{"patch":"x"}}]"#, "rules[1].actions.patch: expected an object, got a string"),
        ];
        for (json, want) in cases {
            let got = err(json);
            assert!(got.starts_with(want), "{json}\n got: {got}\nwant: {want}…");
        }
        let e = parse_rules("[{}]").unwrap_err();
        assert_eq!(
            crate::failure::Failure::failure(&e),
            crate::failure::FailureKind::InvalidArgument
        );
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("300ms", Duration::from_millis(300)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("1m30.25s", Duration::from_millis(90_250)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("100μs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("+1s", Duration::from_secs(1)),
            ("0.000000001s", Duration::from_nanos(1)),
        ];
        for (s, want) in ok {
            assert_eq!(go_duration(s), Ok(want), "{s}");
        }
        for bad in [
            "",
            "1",
            "s",
            ".s",
            "1.5",
            "1 s",
            "-1s",
            "1d",
            "10x",
            "9999999999h",
            "1s2",
        ] {
            assert!(go_duration(bad).is_err(), "{bad}");
        }
    }
}
