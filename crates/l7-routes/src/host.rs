//! Host normalisation: what a request's `Host` / `:authority` is matched as.

/// Lower case, without the port, without a trailing dot; `None` when it is not a valid host.
pub fn normalise(authority: &str) -> Option<String> {
    let _ = authority;
    unimplemented!()
}
