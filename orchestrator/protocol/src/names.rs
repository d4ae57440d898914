//! Service names and instance ids: the identifiers every payload shares (registrations, health
//! requests, priorities, managed services), with their checks. Both are subject tokens, so they can
//! never hold `.`, `*`, `>` or white space.

use crate::error::ProtocolError;

/// Longest service name.
pub const NAME_MAX: usize = 63;
/// Longest instance id.
pub const ID_MAX: usize = 128;

/// True for a service name: 1-63 of `a-z 0-9 - _`, starting and ending with a letter or digit.
/// Names are subject tokens, so they can never hold `.`, `*`, `>` or white space.
pub fn is_valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= NAME_MAX
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// True for an instance id: 1-128 of `A-Z a-z 0-9 - _` (a subject token in `orch.hb.<id>`).
pub fn is_valid_instance_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= ID_MAX && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

pub fn validate_instance_id(field: &str, id: &str) -> Result<(), ProtocolError> {
    if is_valid_instance_id(id) {
        Ok(())
    } else {
        Err(ProtocolError::invalid(
            field,
            format!("instance id must be 1-{} characters of letters, digits, '-' or '_' (got {id:?})", ID_MAX),
        ))
    }
}

/// Refuses anything but a service name, naming `field`.
pub fn validate_name(field: &str, name: &str) -> Result<(), ProtocolError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(ProtocolError::invalid(
            field,
            format!(
                "service name must be 1-{} characters of lower-case letters, digits, '-' or '_', \
                 starting and ending with a letter or digit (got {name:?})",
                NAME_MAX
            ),
        ))
    }
}
