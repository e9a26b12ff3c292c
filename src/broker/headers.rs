//! Headers exchange matching: a binding's arguments, parsed once into a rule that is checked
//! against each message's `headers` property, as RabbitMQ's `rabbit_exchange_type_headers` does.
//!
//! The `x-match` argument picks the rule: `all` (the default) needs every criterion to match,
//! `any` at least one. The criteria are the other arguments, except that arguments named `x-…`
//! count only in the `all-with-x` and `any-with-x` variants; `x-match` itself never does.
//! A criterion whose value is void asks only for the header to be present; any other value asks
//! for an equal one (see [`same_value`]).
//!
//! This module owns that parsing and matching; it knows nothing of exchanges or queues, and must
//! never allocate while matching a message.

use super::values::{integer, type_name};
use warren_protocol::types::{AMQPValue, FieldTable, ShortString};

/// The match rule of one headers-exchange binding, parsed from its arguments.
#[derive(Debug, Clone)]
pub struct HeadersMatch {
    x_match: XMatch,
    /// The (header name, expected value) pairs a message is checked against.
    criteria: Vec<(ShortString, AMQPValue)>,
}

/// The `x-match` binding argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl XMatch {
    /// Accepts a long or a short string (RabbitMQ itself sees only long strings on the wire).
    fn parse(value: &AMQPValue) -> Option<XMatch> {
        let name: &[u8] = match value {
            AMQPValue::LongString(s) => s.as_bytes(),
            AMQPValue::ShortString(s) => s.as_str().as_bytes(),
            _ => return None,
        };
        match name {
            b"all" => Some(XMatch::All),
            b"any" => Some(XMatch::Any),
            b"all-with-x" => Some(XMatch::AllWithX),
            b"any-with-x" => Some(XMatch::AnyWithX),
            _ => None,
        }
    }

    fn needs_all(self) -> bool {
        matches!(self, XMatch::All | XMatch::AllWithX)
    }

    /// Whether binding arguments named `x-…` (other than `x-match`) are criteria.
    fn counts_x_arguments(self) -> bool {
        matches!(self, XMatch::AllWithX | XMatch::AnyWithX)
    }
}

impl HeadersMatch {
    /// Parses a binding's arguments; an invalid `x-match` is an error message for a 406.
    ///
    /// The message is RabbitMQ's: `Invalid x-match field value <<"some">>; …` for an unknown
    /// string, `Invalid x-match field type signedint (value 1); expected longstr` for another type.
    pub fn parse(arguments: &FieldTable) -> Result<HeadersMatch, String> {
        let x_match = match arguments.inner().get("x-match") {
            None => XMatch::All,
            Some(value) => XMatch::parse(value).ok_or_else(|| invalid_x_match(value))?,
        };
        let criteria = arguments
            .into_iter()
            .filter(|(name, _)| {
                let name = name.as_str();
                name != "x-match" && (x_match.counts_x_arguments() || !name.starts_with("x-"))
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Ok(HeadersMatch { x_match, criteria })
    }

    /// Whether a message with these `headers` (None: no headers property) matches.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let satisfied = |(name, expected): &(ShortString, AMQPValue)| {
            headers
                .and_then(|headers| headers.inner().get(name))
                .is_some_and(|actual| same_value(expected, actual))
        };
        if self.x_match.needs_all() {
            self.criteria.iter().all(satisfied)
        } else {
            self.criteria.iter().any(satisfied)
        }
    }
}

/// Whether a header's `actual` value satisfies a criterion's `expected` one.
///
/// RabbitMQ compares the two values with Erlang's `==`, ignoring their field types, and so does
/// this: a void criterion is satisfied by any value (the header need only be present); integers
/// of every width and signedness, and timestamps, compare as numbers, and so do floats and
/// doubles, with each other and with integers (`1 == 1.0`); long strings, short strings and byte
/// arrays compare as bytes; booleans and decimals (scale and value) compare as themselves. Field
/// arrays and tables compare structurally, their elements including their field types (as in
/// RabbitMQ, where nested values keep their type tags); nested tables compare as maps, where
/// RabbitMQ would also compare their order on the wire. An empty array equals an empty table
/// (both are Erlang's `[]`). A void header satisfies only a void criterion.
fn same_value(expected: &AMQPValue, actual: &AMQPValue) -> bool {
    use AMQPValue as V;
    match (expected, actual) {
        (V::Void, _) => true,
        (V::Boolean(a), V::Boolean(b)) => a == b,
        (V::DecimalValue(a), V::DecimalValue(b)) => a == b,
        (V::FieldArray(a), V::FieldArray(b)) => a == b,
        (V::FieldTable(a), V::FieldTable(b)) => a == b,
        (V::FieldArray(array), V::FieldTable(table))
        | (V::FieldTable(table), V::FieldArray(array)) => {
            array.as_slice().is_empty() && table.inner().is_empty()
        }
        _ => match (number(expected), number(actual)) {
            (Some(a), Some(b)) => a.equals(b),
            _ => matches!((bytes(expected), bytes(actual)), (Some(a), Some(b)) if a == b),
        },
    }
}

/// A numeric field value.
#[derive(Clone, Copy)]
enum Number {
    Integer(i128),
    Float(f64),
}

impl Number {
    fn equals(self, other: Number) -> bool {
        match (self, other) {
            (Number::Integer(a), Number::Integer(b)) => a == b,
            (Number::Float(a), Number::Float(b)) => a == b,
            (Number::Integer(i), Number::Float(f)) | (Number::Float(f), Number::Integer(i)) => {
                // Exactly equal: `f` is whole (not NaN or infinite) and converts to `i`.
                f.fract() == 0.0 && f as i128 == i
            }
        }
    }
}

fn number(value: &AMQPValue) -> Option<Number> {
    match value {
        AMQPValue::Float(f) => Some(Number::Float(f64::from(*f))),
        AMQPValue::Double(f) => Some(Number::Float(*f)),
        AMQPValue::Timestamp(t) => Some(Number::Integer(i128::from(*t))),
        other => integer(other).map(Number::Integer),
    }
}

fn bytes(value: &AMQPValue) -> Option<&[u8]> {
    match value {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        AMQPValue::ByteArray(b) => Some(b.as_slice()),
        _ => None,
    }
}

/// A value for an error message: a string in double quotes, anything else as its Debug form.
fn invalid_x_match(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(_) | AMQPValue::ShortString(_) => format!(
            "Invalid x-match field value <<{:?}>>; expected all, any, all-with-x, or any-with-x",
            String::from_utf8_lossy(bytes(value).unwrap_or_default())
        ),
        other => {
            let shown = match integer(other) {
                Some(n) => n.to_string(),
                None => format!("{other:?}"),
            };
            format!(
                "Invalid x-match field type {} (value {shown}); expected longstr",
                type_name(other)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_protocol::types::{DecimalValue, LongString};

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (name, value) in entries {
            table.insert(ShortString::from(*name), value.clone());
        }
        table
    }

    fn parsed(entries: &[(&str, AMQPValue)]) -> HeadersMatch {
        match HeadersMatch::parse(&table(entries)) {
            Ok(rule) => rule,
            Err(e) => panic!("{e}"),
        }
    }

    fn matches(rule: &HeadersMatch, headers: &[(&str, AMQPValue)]) -> bool {
        rule.matches(Some(&table(headers)))
    }

    #[test]
    fn x_match_defaults_to_all() {
        let rule = parsed(&[("a", long("1")), ("b", long("2"))]);
        assert!(matches(&rule, &[("a", long("1")), ("b", long("2"))]));
        assert!(!matches(&rule, &[("a", long("1"))]));
    }

    #[test]
    fn all_needs_every_criterion() {
        let rule = parsed(&[("x-match", long("all")), ("a", long("1")), ("b", long("2"))]);
        assert!(matches(
            &rule,
            &[("a", long("1")), ("b", long("2")), ("c", long("3"))]
        ));
        assert!(!matches(&rule, &[("a", long("1")), ("b", long("3"))]));
        assert!(!matches(&rule, &[]));
        assert!(!rule.matches(None));
    }

    #[test]
    fn all_without_criteria_matches_every_message() {
        let rule = parsed(&[("x-match", long("all")), ("x-other", long("1"))]);
        assert!(rule.matches(None));
        assert!(matches(&rule, &[]));
        assert!(matches(&rule, &[("a", long("1"))]));
    }

    #[test]
    fn any_needs_one_criterion() {
        let rule = parsed(&[("x-match", long("any")), ("a", long("1")), ("b", long("2"))]);
        assert!(matches(&rule, &[("a", long("1"))]));
        assert!(matches(&rule, &[("a", long("0")), ("b", long("2"))]));
        assert!(!matches(&rule, &[("a", long("0")), ("c", long("1"))]));
        assert!(!rule.matches(None));
    }

    #[test]
    fn any_without_criteria_matches_nothing() {
        let rule = parsed(&[("x-match", long("any"))]);
        assert!(!rule.matches(None));
        assert!(!matches(&rule, &[("a", long("1"))]));
    }

    #[test]
    fn x_arguments_are_not_criteria_without_with_x() {
        let all = parsed(&[("x-match", long("all")), ("x-a", long("1"))]);
        assert!(matches(&all, &[]));
        let any = parsed(&[
            ("x-match", long("any")),
            ("x-a", long("1")),
            ("b", long("2")),
        ]);
        assert!(!matches(&any, &[("x-a", long("1"))]));
        assert!(matches(&any, &[("b", long("2"))]));
    }

    #[test]
    fn x_arguments_are_criteria_with_x() {
        let all = parsed(&[("x-match", long("all-with-x")), ("x-a", long("1"))]);
        assert!(!matches(&all, &[]));
        assert!(matches(&all, &[("x-a", long("1"))]));
        let any = parsed(&[
            ("x-match", long("any-with-x")),
            ("x-a", long("1")),
            ("b", long("2")),
        ]);
        assert!(matches(&any, &[("x-a", long("1"))]));
        assert!(!matches(&any, &[("x-a", long("2"))]));
    }

    #[test]
    fn x_match_is_never_a_criterion() {
        let all = parsed(&[("x-match", long("all-with-x"))]);
        assert!(matches(&all, &[]));
        let any = parsed(&[("x-match", long("any-with-x"))]);
        assert!(!matches(&any, &[("x-match", long("any-with-x"))]));
    }

    #[test]
    fn invalid_x_match_is_refused() {
        let expect = |value: AMQPValue, message: &str| {
            let error = HeadersMatch::parse(&table(&[("x-match", value)])).err();
            assert_eq!(error.as_deref(), Some(message));
        };
        let expected = "expected all, any, all-with-x, or any-with-x";
        expect(
            long("some"),
            &format!("Invalid x-match field value <<\"some\">>; {expected}"),
        );
        expect(
            long("ALL"),
            &format!("Invalid x-match field value <<\"ALL\">>; {expected}"),
        );
        expect(
            AMQPValue::LongInt(1),
            "Invalid x-match field type signedint (value 1); expected longstr",
        );
    }

    #[test]
    fn x_match_may_be_a_short_string() {
        let value = AMQPValue::ShortString(ShortString::from("any"));
        let rule = parsed(&[("x-match", value), ("a", long("1")), ("b", long("2"))]);
        assert!(matches(&rule, &[("b", long("2"))]));
    }

    #[test]
    fn void_criterion_needs_only_presence() {
        let rule = parsed(&[("a", AMQPValue::Void)]);
        assert!(matches(&rule, &[("a", long("anything"))]));
        assert!(matches(&rule, &[("a", AMQPValue::Void)]));
        assert!(matches(&rule, &[("a", AMQPValue::Boolean(false))]));
        assert!(!matches(&rule, &[("b", long("1"))]));
        assert!(!rule.matches(None));
    }

    #[test]
    fn void_header_satisfies_only_void() {
        let rule = parsed(&[("a", long(""))]);
        assert!(!matches(&rule, &[("a", AMQPValue::Void)]));
    }

    #[test]
    fn integers_compare_across_types() {
        let rule = parsed(&[("n", AMQPValue::ShortShortUInt(5))]);
        for value in [
            AMQPValue::ShortShortInt(5),
            AMQPValue::ShortInt(5),
            AMQPValue::ShortUInt(5),
            AMQPValue::LongInt(5),
            AMQPValue::LongUInt(5),
            AMQPValue::LongLongInt(5),
            AMQPValue::Timestamp(5),
            AMQPValue::Double(5.0),
        ] {
            assert!(matches(&rule, &[("n", value.clone())]), "{value:?}");
        }
        assert!(!matches(&rule, &[("n", AMQPValue::LongInt(-5))]));
        assert!(!matches(&rule, &[("n", AMQPValue::Double(5.5))]));
        assert!(!matches(&rule, &[("n", long("5"))]));
        let negative = parsed(&[("n", AMQPValue::ShortShortInt(-1))]);
        assert!(!matches(
            &negative,
            &[("n", AMQPValue::Timestamp(u64::MAX))]
        ));
        assert!(matches(&negative, &[("n", AMQPValue::LongLongInt(-1))]));
    }

    #[test]
    fn floats_compare_as_numbers() {
        let rule = parsed(&[("f", AMQPValue::Float(1.5))]);
        assert!(matches(&rule, &[("f", AMQPValue::Double(1.5))]));
        assert!(!matches(&rule, &[("f", AMQPValue::Double(1.25))]));
        let nan = parsed(&[("f", AMQPValue::Double(f64::NAN))]);
        assert!(!matches(&nan, &[("f", AMQPValue::Double(f64::NAN))]));
        let infinite = parsed(&[("f", AMQPValue::Double(f64::INFINITY))]);
        assert!(!matches(
            &infinite,
            &[("f", AMQPValue::LongLongInt(i64::MAX))]
        ));
    }

    #[test]
    fn strings_compare_as_bytes() {
        let rule = parsed(&[("s", long("abc"))]);
        assert!(matches(
            &rule,
            &[("s", AMQPValue::ShortString("abc".into()))]
        ));
        assert!(matches(
            &rule,
            &[("s", AMQPValue::ByteArray(b"abc".to_vec().into()))]
        ));
        assert!(!matches(&rule, &[("s", long("abd"))]));
        assert!(!matches(&rule, &[("s", long("ABC"))]));
    }

    #[test]
    fn booleans_and_decimals_compare_as_themselves() {
        let yes = parsed(&[("b", AMQPValue::Boolean(true))]);
        assert!(matches(&yes, &[("b", AMQPValue::Boolean(true))]));
        assert!(!matches(&yes, &[("b", AMQPValue::Boolean(false))]));
        assert!(!matches(&yes, &[("b", AMQPValue::ShortShortUInt(1))]));
        let decimal = |scale, value| AMQPValue::DecimalValue(DecimalValue { scale, value });
        let rule = parsed(&[("d", decimal(1, 10))]);
        assert!(matches(&rule, &[("d", decimal(1, 10))]));
        assert!(!matches(&rule, &[("d", decimal(0, 1))]));
        assert!(!matches(&rule, &[("d", AMQPValue::LongInt(10))]));
    }

    #[test]
    fn arrays_and_tables_compare_structurally() {
        let array = |values: Vec<AMQPValue>| AMQPValue::FieldArray(values.into());
        let rule = parsed(&[("a", array(vec![long("x"), AMQPValue::LongInt(1)]))]);
        assert!(matches(
            &rule,
            &[("a", array(vec![long("x"), AMQPValue::LongInt(1)]))]
        ));
        assert!(!matches(&rule, &[("a", array(vec![long("x")]))]));
        // Nested values keep their field types, as in RabbitMQ.
        assert!(!matches(
            &rule,
            &[("a", array(vec![long("x"), AMQPValue::LongLongInt(1)]))]
        ));

        let nested = AMQPValue::FieldTable(table(&[("k", long("v"))]));
        let rule = parsed(&[("t", nested.clone())]);
        assert!(matches(&rule, &[("t", nested)]));
        let other = AMQPValue::FieldTable(table(&[("k", long("w"))]));
        assert!(!matches(&rule, &[("t", other)]));
    }

    #[test]
    fn empty_array_equals_empty_table() {
        let empty_table = AMQPValue::FieldTable(FieldTable::default());
        let rule = parsed(&[("e", AMQPValue::FieldArray(Vec::new().into()))]);
        assert!(matches(&rule, &[("e", empty_table)]));
        let one = AMQPValue::FieldTable(table(&[("k", long("v"))]));
        assert!(!matches(&rule, &[("e", one)]));
    }

    #[test]
    fn no_headers_is_an_empty_table() {
        for entries in [
            vec![("x-match", long("all")), ("a", long("1"))],
            vec![("x-match", long("any")), ("a", AMQPValue::Void)],
            vec![("x-match", long("all"))],
            vec![("x-match", long("any"))],
        ] {
            let rule = parsed(&entries);
            assert_eq!(rule.matches(None), matches(&rule, &[]), "{entries:?}");
        }
    }
}
