//! Which JSON Schema a key's value must satisfy, and whether it does: the schema of the longest
//! prefix that covers the key (`web.db` over `web` for `web.db.url`). Pure: the compiled schemas
//! in, problems out.

use orch_protocol::ProtocolError;
use orch_protocol::config_store::under;
use serde_json::Value;

/// Most problems one refusal names.
const PROBLEMS_SHOWN: usize = 5;

/// The compiled schemas, by prefix.
#[derive(Default)]
pub struct Schemas {
    compiled: Vec<(String, jsonschema::Validator)>,
}

impl Schemas {
    /// Compiles `schema`; a schema that is not one says why, naming `schema`.
    pub fn compile(schema: &Value) -> Result<jsonschema::Validator, ProtocolError> {
        jsonschema::validator_for(schema)
            .map_err(|e| ProtocolError::invalid("schema", format!("not a valid JSON Schema: {e}")))
    }

    pub fn set(&mut self, prefix: &str, validator: jsonschema::Validator) {
        self.compiled.retain(|(p, _)| p != prefix);
        self.compiled.push((prefix.to_string(), validator));
    }

    pub fn remove(&mut self, prefix: &str) {
        self.compiled.retain(|(p, _)| p != prefix);
    }

    /// The prefix whose schema governs `key`, if any.
    pub fn governing(&self, key: &str) -> Option<&str> {
        self.rule(key).map(|(prefix, _)| prefix)
    }

    fn rule(&self, key: &str) -> Option<(&str, &jsonschema::Validator)> {
        self.compiled
            .iter()
            .filter(|(prefix, _)| under(key, prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(prefix, validator)| (prefix.as_str(), validator))
    }

    /// Checks `value` for `key`: `validation_failed` on `value` naming the schema's prefix and
    /// each problem with where in the value it is (`/port: 70000 is greater than …`).
    pub fn check(&self, key: &str, value: &Value) -> Result<(), ProtocolError> {
        let Some((prefix, validator)) = self.rule(key) else { return Ok(()) };
        let problems: Vec<String> = validator
            .iter_errors(value)
            .take(PROBLEMS_SHOWN)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() { e.to_string() } else { format!("{at}: {e}") }
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        let shown = if prefix.is_empty() { "every key".to_string() } else { format!("{prefix:?}") };
        Err(ProtocolError::invalid("value", format!("refused by the schema of {shown}: {}", problems.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schemas() -> Schemas {
        let mut s = Schemas::default();
        s.set("web", Schemas::compile(&json!({"type": "object"})).unwrap());
        let port = json!({"type": "object", "properties": {"port": {"type": "integer", "maximum": 65535}}, "required": ["port"]});
        s.set("web.db", Schemas::compile(&port).unwrap());
        s
    }

    #[test]
    fn the_longest_covering_prefix_decides() {
        let s = schemas();
        assert_eq!(s.governing("web.db.url"), Some("web.db"));
        assert_eq!(s.governing("web.dbx"), Some("web"));
        assert_eq!(s.governing("api.x"), None);
        assert!(s.check("api.x", &json!(3)).is_ok(), "no schema, anything goes");
        assert!(s.check("web.dbx", &json!({"any": 1})).is_ok());
        assert!(s.check("web.db.main", &json!({"port": 5432})).is_ok());
        let e = s.check("web.db.main", &json!({"port": 70000})).unwrap_err();
        assert_eq!(e.0.field.as_deref(), Some("value"));
        assert!(e.0.message.starts_with("refused by the schema of \"web.db\": /port: 70000"), "{}", e.0.message);
        let e = s.check("web.db.main", &json!({})).unwrap_err();
        assert!(e.0.message.contains("\"port\" is a required property"), "{}", e.0.message);
    }

    #[test]
    fn a_schema_that_is_not_one_is_refused() {
        let e = Schemas::compile(&json!({"type": "no-such-type"})).err().unwrap();
        assert_eq!(e.0.field.as_deref(), Some("schema"));
    }

    #[test]
    fn a_removed_schema_no_longer_applies() {
        let mut s = schemas();
        s.remove("web.db");
        assert!(s.check("web.db.main", &json!({"port": 70000})).is_ok());
        assert!(s.check("web.db.main", &json!(1)).is_err(), "web's schema applies again");
    }
}
