//! A constraint on a node's labels, as a manifest writes it: one string per constraint.
//!
//! | written               | a node matches when                                  |
//! |-----------------------|------------------------------------------------------|
//! | `zone == a`           | its label `zone` is `a`                              |
//! | `zone != a`           | its label `zone` is not `a`, or it has no `zone`     |
//! | `disk in ssd, nvme`   | its label `disk` is one of the values                |
//! | `disk not in hdd`     | its label `disk` is none of them, or it has no `disk`|
//! | `gpu`                 | it has a label `gpu`, whatever its value             |
//! | `!gpu`                | it has no label `gpu`                                |
//!
//! The negative forms match a node without the label: such a node certainly is not `a`, and a
//! constraint that keeps services off some nodes should not also keep them off unlabelled ones
//! (write `zone` beside it to require the label).
//!
//! A constraint prints back in one canonical form (single spaces, list values sorted and without
//! repeats), so two spellings of one constraint compare, serialize and count as one.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use orch_protocol::resources::{is_label_key, is_label_value};
use serde::{Deserialize, Serialize};

/// How each form is written, for error messages.
const FORMS: &str = "write `label == value`, `label != value`, `label in a, b`, `label not in a, b`, `label` \
                     (present) or `!label` (absent)";

/// One constraint on node labels; see the module documentation for its forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Constraint {
    Equals {
        label: String,
        value: String,
    },
    NotEquals {
        label: String,
        value: String,
    },
    /// `values` sorted, without repeats, never empty.
    In {
        label: String,
        values: Vec<String>,
    },
    /// `values` sorted, without repeats, never empty.
    NotIn {
        label: String,
        values: Vec<String>,
    },
    Present {
        label: String,
    },
    Absent {
        label: String,
    },
}

impl Constraint {
    /// Parses one constraint; the error names the constraint and what is wrong with it.
    pub fn parse(text: &str) -> Result<Constraint, String> {
        let written = text.trim();
        if written.is_empty() {
            return Err(format!("an empty constraint: {FORMS}"));
        }
        let fail = |what: String| Err(format!("constraint `{written}`: {what}"));

        // A label name holds neither '=' nor '!', so the first operator found is the one meant,
        // whatever the value holds.
        let equals = written.find("==").map(|at| (at, false));
        let not_equals = written.find("!=").map(|at| (at, true));
        if let Some((at, negated)) = [equals, not_equals].into_iter().flatten().min() {
            let label = label(written, written[..at].trim())?;
            let value = written[at + 2..].trim();
            let op = if negated { "!=" } else { "==" };
            if value.is_empty() {
                return fail(format!("no value after `{op}`"));
            }
            let value = label_value(written, value)?;
            return Ok(if negated {
                Constraint::NotEquals { label, value }
            } else {
                Constraint::Equals { label, value }
            });
        }
        if let Some(rest) = written.strip_prefix('!') {
            return Ok(Constraint::Absent { label: label(written, rest.trim())? });
        }

        let (name, rest) = match written.split_once(char::is_whitespace) {
            None => return Ok(Constraint::Present { label: label(written, written)? }),
            Some((name, rest)) => (name, rest.trim_start()),
        };
        let label = label(written, name)?;
        let (negated, list) = if let Some(list) = keyword(rest, "in") {
            (false, list)
        } else if let Some(list) = keyword(rest, "not").and_then(|after| keyword(after, "in")) {
            (true, list)
        } else {
            let op = rest.split_whitespace().next().unwrap_or(rest);
            return fail(format!("`{op}` is not an operator after the label `{label}`; {FORMS}"));
        };
        let op = if negated { "not in" } else { "in" };
        if list.trim().is_empty() {
            return fail(format!("no values after `{op}`"));
        }
        let mut values = Vec::new();
        for value in list.split(',').map(str::trim) {
            if value.is_empty() {
                return fail(format!("an empty value in the list after `{op}` (values are separated by commas)"));
            }
            values.push(label_value(written, value)?);
        }
        values.sort();
        values.dedup();
        Ok(if negated { Constraint::NotIn { label, values } } else { Constraint::In { label, values } })
    }

    /// The label the constraint is about.
    pub fn label(&self) -> &str {
        match self {
            Constraint::Equals { label, .. }
            | Constraint::NotEquals { label, .. }
            | Constraint::In { label, .. }
            | Constraint::NotIn { label, .. }
            | Constraint::Present { label }
            | Constraint::Absent { label } => label,
        }
    }

    /// Whether a node with these labels satisfies the constraint. One map look-up, nothing copied:
    /// the scheduler calls it for every node and every replica.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let found = labels.get(self.label()).map(String::as_str);
        match self {
            Constraint::Equals { value, .. } => found == Some(value.as_str()),
            Constraint::NotEquals { value, .. } => found != Some(value.as_str()),
            Constraint::In { values, .. } => found.is_some_and(|f| values.iter().any(|v| v == f)),
            Constraint::NotIn { values, .. } => found.is_none_or(|f| values.iter().all(|v| v != f)),
            Constraint::Present { .. } => found.is_some(),
            Constraint::Absent { .. } => found.is_none(),
        }
    }
}

/// What follows the word `word` at the start of `rest` (a whole word: `inside` is not `in`).
fn keyword<'a>(rest: &'a str, word: &str) -> Option<&'a str> {
    let after = rest.strip_prefix(word)?;
    (after.is_empty() || after.starts_with(char::is_whitespace)).then(|| after.trim_start())
}

fn label(written: &str, name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err(format!("constraint `{written}`: no label name; {FORMS}"));
    }
    if !is_label_key(name) {
        return Err(format!(
            "constraint `{written}`: `{name}` is not a label name (1-63 characters of a-z, A-Z, 0-9, '-', '_', '.', '/')"
        ));
    }
    Ok(name.to_string())
}

fn label_value(written: &str, value: &str) -> Result<String, String> {
    if !is_label_value(value) || value.contains(',') {
        return Err(format!(
            "constraint `{written}`: `{value}` is not a label value (at most 63 characters, no commas, no control \
             characters)"
        ));
    }
    Ok(value.to_string())
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Constraint::Equals { label, value } => write!(f, "{label} == {value}"),
            Constraint::NotEquals { label, value } => write!(f, "{label} != {value}"),
            Constraint::In { label, values } => write!(f, "{label} in {}", values.join(", ")),
            Constraint::NotIn { label, values } => write!(f, "{label} not in {}", values.join(", ")),
            Constraint::Present { label } => write!(f, "{label}"),
            Constraint::Absent { label } => write!(f, "!{label}"),
        }
    }
}

impl FromStr for Constraint {
    type Err = String;
    fn from_str(text: &str) -> Result<Constraint, String> {
        Constraint::parse(text)
    }
}

impl TryFrom<String> for Constraint {
    type Error = String;
    fn try_from(text: String) -> Result<Constraint, String> {
        Constraint::parse(&text)
    }
}

impl From<Constraint> for String {
    fn from(constraint: Constraint) -> String {
        constraint.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[track_caller]
    fn parsed(text: &str) -> Constraint {
        Constraint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn each_form_parses_and_prints_back() {
        for (written, canonical) in [
            ("zone == a", "zone == a"),
            ("zone==a", "zone == a"),
            ("  zone   !=  a ", "zone != a"),
            ("disk in ssd, nvme", "disk in nvme, ssd"),
            ("disk in ssd,nvme,ssd", "disk in nvme, ssd"),
            ("disk not in hdd", "disk not in hdd"),
            ("disk  not   in  hdd ,  tape", "disk not in hdd, tape"),
            ("gpu", "gpu"),
            ("!gpu", "!gpu"),
            ("! gpu", "!gpu"),
            ("topology/zone == eu-1a", "topology/zone == eu-1a"),
            ("rack == row 3", "rack == row 3"),
        ] {
            let c = parsed(written);
            assert_eq!(c.to_string(), canonical, "{written}");
            assert_eq!(parsed(canonical), c, "the canonical form of {written} parses back to it");
        }
        assert_eq!(parsed("zone == a"), Constraint::Equals { label: "zone".into(), value: "a".into() });
        assert_eq!(parsed("disk not in hdd"), Constraint::NotIn { label: "disk".into(), values: vec!["hdd".into()] });
    }

    #[test]
    fn matches_labels() {
        let node = labels(&[("zone", "a"), ("disk", "ssd"), ("gpu", "")]);
        let bare = labels(&[]);
        for (text, on_node, on_bare) in [
            ("zone == a", true, false),
            ("zone == b", false, false),
            ("zone != a", false, true),
            ("zone != b", true, true),
            ("disk in nvme, ssd", true, false),
            ("disk in hdd", false, false),
            ("disk not in ssd", false, true),
            ("disk not in hdd, tape", true, true),
            ("gpu", true, false),
            ("!gpu", false, true),
        ] {
            let c = parsed(text);
            assert_eq!(c.matches(&node), on_node, "{text} on the labelled node");
            assert_eq!(c.matches(&bare), on_bare, "{text} on a node without labels");
        }
    }

    #[test]
    fn errors_name_the_constraint_and_the_fault() {
        for (text, expected) in [
            ("", "an empty constraint"),
            ("   ", "an empty constraint"),
            ("zone ==", "`zone ==`: no value after `==`"),
            ("zone != ", "`zone !=`: no value after `!=`"),
            ("== a", "`== a`: no label name"),
            ("zo ne == a", "`zo ne` is not a label name"),
            ("zone ~ a", "`~` is not an operator after the label `zone`"),
            ("zone is a", "`is` is not an operator"),
            ("zone in", "`zone in`: no values after `in`"),
            ("zone in  ", "`zone in`: no values after `in`"),
            ("zone inside", "`inside` is not an operator"),
            ("disk in ssd,,nvme", "an empty value in the list after `in`"),
            ("disk not in", "no values after `not in`"),
            ("disk not", "`not` is not an operator"),
            ("disk not in ,", "an empty value in the list after `not in`"),
            ("!", "`!`: no label name"),
            ("!zo ne", "`zo ne` is not a label name"),
            ("zone == a,b", "`a,b` is not a label value"),
        ] {
            let err = Constraint::parse(text).expect_err(text);
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let long = format!("zone == {}", "x".repeat(64));
        assert!(Constraint::parse(&long).unwrap_err().contains("is not a label value"));
    }

    #[test]
    fn serde_is_the_string() {
        let c = parsed("disk in ssd, nvme");
        assert_eq!(serde_json::to_value(&c).unwrap(), serde_json::json!("disk in nvme, ssd"));
        let back: Vec<Constraint> = serde_json::from_value(serde_json::json!(["zone == a", "!gpu"])).unwrap();
        assert_eq!(back, vec![parsed("zone == a"), parsed("!gpu")]);
        let err = serde_json::from_value::<Constraint>(serde_json::json!("zone ~ a")).unwrap_err();
        assert!(err.to_string().contains("`~` is not an operator"), "{err}");

        #[derive(Deserialize)]
        struct Spec {
            constraints: Vec<Constraint>,
        }
        let spec: Spec = toml::from_str(r#"constraints = ["zone == a", "disk not in hdd"]"#).unwrap();
        assert_eq!(spec.constraints[1], parsed("disk not in hdd"));
    }
}
