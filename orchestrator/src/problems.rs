//! Problems found in a document a person wrote (a stack manifest, a workflow definition): each
//! named by its field and, when known, its line; all of them reported at once; and on the wire
//! one `validation_failed` error that lists them, the first one's field as its `field`.

use serde::Serialize;

/// One problem of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where: `services.api.depends_on.db`, `steps.check.retry.attempts`.
    pub field: String,
    /// The line of the table the field is in (or of the TOML error), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// Everything wrong with a document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
pub struct Problems {
    /// What the document is (`manifest`, `workflow`): in the message, and the field of an error
    /// with no problem of its own.
    #[serde(skip)]
    pub document: &'static str,
    pub problems: Vec<Problem>,
}

impl Problems {
    /// A document with one problem.
    pub fn one(
        document: &'static str,
        field: impl Into<String>,
        line: Option<usize>,
        message: impl Into<String>,
    ) -> Problems {
        Problems { document, problems: vec![Problem { field: field.into(), line, message: message.into() }] }
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.problems.len();
        writeln!(f, "the {} has {n} problem{}:", self.document, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// A refused document on the wire: every problem in the message, the first one's field as the
/// error's `field`.
impl From<Problems> for orch_protocol::ProtocolError {
    fn from(e: Problems) -> Self {
        let field = e.problems.first().map_or_else(|| e.document.to_string(), |p| p.field.clone());
        let message = e.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        orch_protocol::ProtocolError::field(orch_protocol::ErrorCode::ValidationFailed, field, message)
    }
}

/// The line (from 1) of byte `offset` of `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}
