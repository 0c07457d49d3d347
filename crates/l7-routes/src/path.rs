//! Path normalisation, done once per request and used both for matching and forwarding.
//!
//! Rules of [`normalise`], applied to the path without its query, in this order:
//! 1. The path must start with `/` (origin form), else [`PathError::NotAbsolute`].
//! 2. Percent-escapes: every `%` must be followed by two hex digits, and `%00` is refused,
//!    else [`PathError::BadEncoding`]. An escape of an unreserved character (`A-Z a-z 0-9 - .
//!    _ ~`) is decoded (`%7Efoo` is `~foo`); every other escape is kept with upper-case hex
//!    (`%2f` is `%2F`). An encoded slash therefore never splits segments.
//! 3. Runs of `/` become one (`/a//b` is `/a/b`).
//! 4. Dot segments are removed as in RFC 3986 section 5.2.4, after the decoding of step 2
//!    (`%2E%2E` is `..`): `.` is dropped, `..` drops the segment before it and never climbs
//!    above the root (`/../a` is `/a`). A path ending in `/`, `/.` or `/..` keeps a trailing
//!    slash (`/a/b/` stays `/a/b/`, `/a/b/..` is `/a/`); the root is `/`.
//!
//! Other bytes are kept as they are; matching is case-sensitive.

use std::borrow::Cow;

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
pub fn normalise(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if already_normal(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// Whether no rule changes `raw` (no escape, no empty, `.` or `..` segment inside): the
/// common case, told without building anything.
fn already_normal(raw: &str) -> bool {
    !raw.contains('%') && !raw.contains("//") && raw.split('/').all(|s| s != "." && s != "..")
}

/// Step 2: decodes escapes of unreserved characters, upper-cases the others.
fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest
            .get(at + 1..at + 3)
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(PathError::BadEncoding)?;
        let byte = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEncoding)?;
        match byte {
            0 => return Err(PathError::BadEncoding),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => out.push(char::from(b)),
            _ => {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Steps 3 and 4 on a path that starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = matches!(segment, "" | "." | "..");
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            _ => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_told_normal_are_what_the_rules_make_of_them() {
        let paths = [
            "/",
            "/a",
            "/a/",
            "/a/b/c",
            "/.well-known/x",
            "/a.b/..c/",
            "/a/./b",
            "/a/../b",
            "/a//b",
            "//",
            "/a/.",
            "/a/..",
            "/%7e",
            "/a%2fb",
            "/..",
            "/.",
            "/a b",
            "/a;b=.",
        ];
        for raw in paths {
            let by_rules = remove_dot_segments(&decode_unreserved(raw).unwrap());
            if already_normal(raw) {
                assert_eq!(by_rules, raw, "{raw}");
            }
            assert_eq!(normalise(raw).unwrap(), by_rules, "{raw}");
        }
        assert!(already_normal("/api/items"));
        assert!(!already_normal("/a/../b"));
    }
}
