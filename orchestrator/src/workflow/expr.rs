//! The expressions of workflow definitions, evaluated by the `evalexpr` crate: arithmetic,
//! comparisons, `&&` / `||` / `!`, strings in double quotes, tuples, and a few built-in functions
//! (`len`, `str::to_lowercase`, `min`, `max`, …). It has no loops, no user functions and no way
//! to reach outside the values it is given, so every evaluation ends; the size of an expression
//! and of what it reads are bounded here too.
//!
//! Where expressions appear:
//! - `when = '<expr>'`: a step's condition, which must be a boolean;
//! - `${{ <expr> }}` inside any string of a step's inputs: a string that is only `${{ … }}` takes
//!   the expression's value (any JSON type); otherwise each `${{ … }}` is replaced by its value as
//!   text.
//!
//! What they read, as dotted names: `inputs.<name>` (the execution's inputs),
//! `steps.<id>.status` and `steps.<id>.output` (and `steps.<id>.output.<field>…`) of the steps
//! before, `execution.id`; in a `wait_event` filter, `event.type`, `event.subject`,
//! `event.data.<field>…`. Arrays are tuples; `null` is the empty value `()`.

use evalexpr::{ContextWithMutableVariables as _, DefaultNumericTypes, HashMapContext, Node, Value as EValue};
use serde_json::Value;

/// Longest expression accepted (characters).
pub const MAX_EXPRESSION: usize = 2048;

/// Most names an expression's scope may hold (each leaf of the inputs and outputs is one).
pub const MAX_SCOPE: usize = 10_000;

/// An expression that does not parse, or a value it cannot give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

/// A parsed expression.
#[derive(Debug)]
pub struct Expr {
    source: String,
    tree: Node<DefaultNumericTypes>,
}

impl Expr {
    pub fn parse(source: &str) -> Result<Expr, ExprError> {
        let text = source.trim();
        if text.is_empty() {
            return Err(ExprError("an empty expression".into()));
        }
        if text.len() > MAX_EXPRESSION {
            return Err(ExprError(format!("longer than {MAX_EXPRESSION} characters")));
        }
        let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(text)
            .map_err(|e| ExprError(format!("{text:?} is not a valid expression: {e}")))?;
        well_formed(&tree, true).map_err(|e| ExprError(format!("{text:?} is not a valid expression: {e}")))?;
        Ok(Expr { source: text.to_string(), tree })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The value of the expression over `scope` (a JSON object; its leaves become dotted names).
    pub fn eval(&self, scope: &Value) -> Result<Value, ExprError> {
        let context = context(scope)?;
        let value = self
            .tree
            .eval_with_context(&context)
            .map_err(|e| ExprError(format!("evaluating {:?}: {e}", self.source)))?;
        Ok(to_json(value))
    }

    /// The value as a condition: it must be a boolean.
    pub fn eval_bool(&self, scope: &Value) -> Result<bool, ExprError> {
        match self.eval(scope)? {
            Value::Bool(b) => Ok(b),
            other => Err(ExprError(format!("{:?} must be true or false, not {other}", self.source))),
        }
    }
}

/// Every operator has its operands, and nothing assigns: the parser leaves both to evaluation,
/// where a definition's mistake would show only when its step runs.
fn well_formed(node: &Node<DefaultNumericTypes>, top: bool) -> Result<(), String> {
    use evalexpr::Operator as O;
    let operands = node.children().len();
    let wanted = match node.operator() {
        O::RootNode if top => Some(1),
        O::RootNode | O::Tuple => None,
        O::Add | O::Sub | O::Mul | O::Div | O::Mod | O::Exp => Some(2),
        O::Eq | O::Neq | O::Gt | O::Lt | O::Geq | O::Leq | O::And | O::Or => Some(2),
        O::Neg | O::Not | O::FunctionIdentifier { .. } => Some(1),
        O::Const { .. } | O::VariableIdentifierRead { .. } => Some(0),
        O::Assign
        | O::AddAssign
        | O::SubAssign
        | O::MulAssign
        | O::DivAssign
        | O::ModAssign
        | O::ExpAssign
        | O::AndAssign
        | O::OrAssign
        | O::VariableIdentifierWrite { .. } => return Err("an expression cannot assign".into()),
        O::Chain => return Err("an expression is one value: no `;`".into()),
    };
    if let Some(wanted) = wanted
        && operands != wanted
    {
        return Err(format!("`{}` has {operands} operand(s), not {wanted}", node.operator()));
    }
    node.children().iter().try_for_each(|child| well_formed(child, false))
}

/// The names of `scope`: `a.b.c` for each leaf, arrays as tuples.
fn context(scope: &Value) -> Result<HashMapContext<DefaultNumericTypes>, ExprError> {
    fn add(
        context: &mut HashMapContext<DefaultNumericTypes>,
        name: String,
        value: &Value,
        count: &mut usize,
    ) -> Result<(), ExprError> {
        *count += 1;
        if *count > MAX_SCOPE {
            return Err(ExprError(format!("the values an expression reads have more than {MAX_SCOPE} names")));
        }
        if let Value::Object(map) = value {
            for (key, value) in map {
                let name = if name.is_empty() { key.clone() } else { format!("{name}.{key}") };
                add(context, name, value, count)?;
            }
            return Ok(());
        }
        if !name.is_empty() {
            context
                .set_value(name.clone(), to_evalexpr(value))
                .map_err(|e| ExprError(format!("the value of {name} cannot be read by an expression: {e}")))?;
        }
        Ok(())
    }
    let mut context = HashMapContext::new();
    add(&mut context, String::new(), scope, &mut 0)?;
    Ok(context)
}

fn to_evalexpr(value: &Value) -> EValue<DefaultNumericTypes> {
    match value {
        Value::Null => EValue::Empty,
        Value::Bool(b) => EValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => EValue::Int(i),
            None => EValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => EValue::String(s.clone()),
        Value::Array(items) => EValue::Tuple(items.iter().map(to_evalexpr).collect()),
        // Objects inside arrays are kept as their JSON text.
        Value::Object(_) => EValue::String(value.to_string()),
    }
}

fn to_json(value: EValue<DefaultNumericTypes>) -> Value {
    match value {
        EValue::Empty => Value::Null,
        EValue::Boolean(b) => Value::Bool(b),
        EValue::Int(i) => Value::from(i),
        EValue::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        EValue::String(s) => Value::String(s),
        EValue::Tuple(items) => Value::Array(items.into_iter().map(to_json).collect()),
    }
}

/// The `${{ … }}` parts of a string, in order, with the text around them.
#[derive(Debug, PartialEq, Eq)]
pub enum Part<'a> {
    Text(&'a str),
    Expr(&'a str),
}

/// Splits `text` into its literal parts and its `${{ … }}` expressions.
pub fn parts(text: &str) -> Result<Vec<Part<'_>>, ExprError> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            parts.push(Part::Text(&rest[..start]));
        }
        let after = &rest[start + 3..];
        let end = after.find("}}").ok_or_else(|| ExprError(format!("{text:?}: `${{{{` without its `}}}}`")))?;
        parts.push(Part::Expr(after[..end].trim()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(parts)
}

/// Every expression in a JSON value's strings (to check them when a definition is stored).
pub fn expressions_in(value: &serde_json::Value, out: &mut Vec<String>) -> Result<(), ExprError> {
    match value {
        serde_json::Value::String(s) => {
            for part in parts(s)? {
                if let Part::Expr(e) = part {
                    out.push(e.to_string());
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                expressions_in(item, out)?;
            }
        }
        serde_json::Value::Object(map) => {
            for item in map.values() {
                expressions_in(item, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Problems of the `${{ … }}` in `value`'s strings: an unclosed one, or one that does not parse.
pub fn template_problems(value: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    if let Err(e) = expressions_in(value, &mut found) {
        return vec![e.0];
    }
    found.into_iter().filter_map(|source| Expr::parse(&source).err().map(|e| e.0)).collect()
}

/// `value` with every `${{ … }}` replaced: a string that is one expression takes its value, other
/// strings get the values as text.
pub fn render(value: &serde_json::Value, scope: &serde_json::Value) -> Result<serde_json::Value, ExprError> {
    Ok(match value {
        serde_json::Value::String(s) => {
            let parts = parts(s)?;
            match parts.as_slice() {
                [Part::Expr(e)] => Expr::parse(e)?.eval(scope)?,
                _ if !parts.iter().any(|p| matches!(p, Part::Expr(_))) => value.clone(),
                _ => {
                    let mut text = String::new();
                    for part in parts {
                        match part {
                            Part::Text(t) => text.push_str(t),
                            Part::Expr(e) => match Expr::parse(e)?.eval(scope)? {
                                serde_json::Value::String(s) => text.push_str(&s),
                                other => text.push_str(&other.to_string()),
                            },
                        }
                    }
                    serde_json::Value::String(text)
                }
            }
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| render(v, scope)).collect::<Result<_, _>>()?)
        }
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter().map(|(k, v)| Ok((k.clone(), render(v, scope)?))).collect::<Result<_, ExprError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn expressions_read_inputs_and_earlier_steps() {
        let scope = json!({ "inputs": { "crashes": 4, "service": "api" },
                            "steps": { "check": { "status": "succeeded", "output": { "code": 200 } } } });
        assert!(Expr::parse("inputs.crashes >= 3").unwrap().eval_bool(&scope).unwrap());
        assert!(
            Expr::parse(r#"steps.check.output.code == 200 && steps.check.status == "succeeded""#)
                .unwrap()
                .eval_bool(&scope)
                .unwrap()
        );
        assert_eq!(Expr::parse(r#"inputs.service + "-canary""#).unwrap().eval(&scope).unwrap(), json!("api-canary"));
    }

    #[test]
    fn bad_expressions_are_refused_with_a_reason() {
        assert!(Expr::parse("inputs.crashes >=").unwrap_err().0.contains("not a valid expression"));
        for bad in ["(", ")", "1 +", "a ==", "\"open", "((((", "&& ||", "a = 1; b", "f(", ",,", "1..2"] {
            // Whatever the text, an error or a value: never a panic.
            let _ = Expr::parse(bad).map(|e| e.eval(&json!({})));
        }
        assert!(Expr::parse("inputs.x = 1").unwrap_err().0.contains("cannot assign"));
        assert!(Expr::parse("1; 2").unwrap_err().0.contains("one value"));
        assert!(Expr::parse("len(\"abc\") == 3").unwrap().eval_bool(&json!({})).unwrap(), "built-in functions work");
        assert!(Expr::parse("").is_err());
        assert!(Expr::parse(&"1 + ".repeat(1000)).unwrap_err().0.contains("longer than"));
        let not_bool = Expr::parse("1 + 1").unwrap().eval_bool(&json!({})).unwrap_err();
        assert!(not_bool.0.contains("must be true or false"), "{not_bool}");
        let unknown = Expr::parse("nope.x == 1").unwrap().eval(&json!({})).unwrap_err();
        assert!(unknown.0.contains("evaluating"), "{unknown}");
    }

    #[test]
    fn strings_with_expressions_are_rendered() {
        let scope = json!({ "inputs": { "service": "api", "n": 3 } });
        let value = json!({ "service": "${{ inputs.service }}", "count": "${{ inputs.n }}",
                            "why": "restart ${{ inputs.service }} after ${{ inputs.n }} crashes", "plain": "x" });
        assert_eq!(
            render(&value, &scope).unwrap(),
            json!({ "service": "api", "count": 3, "why": "restart api after 3 crashes", "plain": "x" })
        );
        assert!(parts("${{ unclosed").is_err());
        let mut found = Vec::new();
        expressions_in(&value, &mut found).unwrap();
        found.sort();
        assert_eq!(found, ["inputs.n", "inputs.n", "inputs.service", "inputs.service"]);
    }
}
