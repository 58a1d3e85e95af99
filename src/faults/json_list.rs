//! What the fault kinds whose request body is a JSON list (HTTPChaos rules, IOChaos actions)
//! read the same way, as chaos-daemon's `json.Unmarshal` does: `""` and `null` are an empty
//! list, anything but a list is refused; and the names of JSON types and dotted field paths
//! their errors show.
use serde_json::Value;

/// The items of a JSON list; `what` names them in the error (`"rules"`).
pub fn items(json: &str, what: &str) -> Result<Vec<Value>, String> {
    let json = json.trim();
    if json.is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str(json).map_err(|e| e.to_string())? {
        Value::Null => Ok(Vec::new()),
        Value::Array(list) => Ok(list),
        other => Err(format!(
            "expected a JSON list of {what}, got {}",
            type_name(&other)
        )),
    }
}

/// `a number`, `an object`, ... for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `key` under `path` (`selector.port`; just `key` at the top).
pub fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_null_and_lists_are_read_as_go_does() {
        assert!(items("", "rules").unwrap().is_empty());
        assert!(items(" null ", "rules").unwrap().is_empty());
        assert_eq!(items("[1, {}]", "rules").unwrap().len(), 2);
        assert_eq!(
            items("{}", "rules").unwrap_err(),
            "expected a JSON list of rules, got an object"
        );
        assert!(items("[", "rules").is_err());
        assert_eq!(field("", "port"), "port");
        assert_eq!(field("selector", "port"), "selector.port");
    }
}
