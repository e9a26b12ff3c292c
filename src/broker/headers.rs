//! Headers exchange matching (STUB: being written).

use warren_protocol::types::FieldTable;

/// The match rule of one headers-exchange binding, parsed from its arguments.
#[derive(Debug, Clone)]
pub struct HeadersMatch {
    _private: (),
}

impl HeadersMatch {
    /// Parses a binding's arguments; an invalid `x-match` is an error message for a 406.
    pub fn parse(arguments: &FieldTable) -> Result<HeadersMatch, String> {
        let _ = arguments;
        Ok(HeadersMatch { _private: () })
    }

    /// Whether a message with these `headers` (None: no headers property) matches.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let _ = headers;
        false
    }
}
