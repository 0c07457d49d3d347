//! Path normalisation, done once per request and used both for matching and forwarding.

/// Why a request path is refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form path (must start with `/`).
    #[error("path must start with /")]
    NotAbsolute,
    /// A `%` not followed by two hex digits, or an encoded NUL.
    #[error("invalid percent-encoding")]
    BadEncoding,
}

/// Normalises a request path (without the query).
pub fn normalise(raw: &str) -> Result<String, PathError> {
    let _ = raw;
    unimplemented!()
}
