//! The one total order over JSON values that comparisons, sorting and index keys share, and the
//! order-preserving byte encoding of index keys.
//!
//! Order (CouchDB's collation, with a missing field first):
//! missing < null < false < true < numbers < strings < arrays < objects.
//! Numbers compare by exact numeric value across integers and floats (`1 == 1.0`); strings by
//! Unicode code point; arrays element by element; objects by their (key, value) pairs in key order.

use std::cmp::Ordering;

use serde_json::{Number, Value};

/// The type bracket of a value: comparisons `<`, `>` only match values of the literal's bracket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bracket {
    Missing = 1,
    Null = 2,
    Bool = 3,
    Number = 5,
    String = 6,
    Array = 7,
    Object = 8,
}

impl Bracket {
    pub fn of(v: Option<&Value>) -> Bracket {
        match v {
            None => Bracket::Missing,
            Some(Value::Null) => Bracket::Null,
            Some(Value::Bool(_)) => Bracket::Bool,
            Some(Value::Number(_)) => Bracket::Number,
            Some(Value::String(_)) => Bracket::String,
            Some(Value::Array(_)) => Bracket::Array,
            Some(Value::Object(_)) => Bracket::Object,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bracket::Missing => "a missing field",
            Bracket::Null => "null",
            Bracket::Bool => "a boolean",
            Bracket::Number => "a number",
            Bracket::String => "a string",
            Bracket::Array => "an array",
            Bracket::Object => "an object",
        }
    }
}

/// Compares two possibly missing values in the total order.
pub fn compare_opt(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => compare(a, b),
        _ => Bracket::of(a).cmp(&Bracket::of(b)),
    }
}

/// Compares two values in the total order.
pub fn compare(a: &Value, b: &Value) -> Ordering {
    let (ba, bb) = (Bracket::of(Some(a)), Bracket::of(Some(b)));
    if ba != bb {
        return ba.cmp(&bb);
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => compare_numbers(x, y),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y) {
                let o = compare(p, q);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            let mut xs: Vec<_> = x.iter().collect();
            let mut ys: Vec<_> = y.iter().collect();
            xs.sort_by(|p, q| p.0.cmp(q.0));
            ys.sort_by(|p, q| p.0.cmp(q.0));
            for ((kx, vx), (ky, vy)) in xs.iter().zip(&ys) {
                let o = kx.cmp(ky).then_with(|| compare(vx, vy));
                if o != Ordering::Equal {
                    return o;
                }
            }
            xs.len().cmp(&ys.len())
        }
        _ => Ordering::Equal,
    }
}

/// Exact comparison of two JSON numbers, integers and floats alike.
pub fn compare_numbers(a: &Number, b: &Number) -> Ordering {
    match (as_int(a), as_int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(x), None) => compare_int_float(x, b.as_f64().unwrap_or(0.0)),
        (None, Some(y)) => compare_int_float(y, a.as_f64().unwrap_or(0.0)).reverse(),
        (None, None) => {
            let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

fn as_int(n: &Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        Some(i as i128)
    } else {
        n.as_u64().map(|u| u as i128)
    }
}

/// `i` against `f` exactly (JSON has no NaN or infinities).
fn compare_int_float(i: i128, f: f64) -> Ordering {
    // Every i64 / u64 lies within (-2^127, 2^127).
    const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f >= LIMIT {
        return Ordering::Less;
    }
    if f < -LIMIT {
        return Ordering::Greater;
    }
    let floor = f.floor();
    match i.cmp(&(floor as i128)) {
        Ordering::Equal if f > floor => Ordering::Less,
        o => o,
    }
}

/// Appends the order-preserving encoding of one (possibly missing) value to `out`: for values
/// `a <= b` in the total order, `encode(a) <= encode(b)` bytewise, and each encoding is
/// self-delimiting, so that the encodings of the columns of a compound key concatenate.
///
/// Numbers are encoded as f64, so integers beyond 2^53 may share a key with a neighbour: an
/// index is a superset of candidates, and every candidate is checked against the predicate.
/// Arrays and objects are encoded by their bracket only (the planner never uses an index to
/// look one up).
pub fn encode_key_value(v: Option<&Value>, out: &mut Vec<u8>) {
    let bracket = Bracket::of(v);
    match v {
        Some(Value::Bool(b)) => out.push(if *b { 4 } else { 3 }),
        Some(Value::Number(n)) => {
            out.push(bracket as u8);
            out.extend_from_slice(&encode_f64(n.as_f64().unwrap_or(0.0)));
        }
        Some(Value::String(s)) => {
            out.push(bracket as u8);
            push_escaped(s, out);
            out.extend_from_slice(&[0, 1]);
        }
        _ => out.push(bracket as u8),
    }
}

/// The encoding of a string's bytes without the terminator (the key prefix of every string that
/// starts with `s`).
pub fn encode_string_prefix(s: &str, out: &mut Vec<u8>) {
    out.push(Bracket::String as u8);
    push_escaped(s, out);
}

fn push_escaped(s: &str, out: &mut Vec<u8>) {
    for &b in s.as_bytes() {
        if b == 0 {
            out.extend_from_slice(&[0, 0xff]);
        } else {
            out.push(b);
        }
    }
}

fn encode_f64(f: f64) -> [u8; 8] {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let bits = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    bits.to_be_bytes()
}

/// The first byte of the keys of `bracket` and the first byte after them.
pub fn bracket_bounds(bracket: Bracket) -> (Vec<u8>, Vec<u8>) {
    match bracket {
        Bracket::Bool => (vec![3], vec![5]),
        b => (vec![b as u8], vec![b as u8 + 1]),
    }
}

/// The smallest byte string greater than every string starting with `prefix` (`None` when
/// there is none).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut out = prefix.to_vec();
    while let Some(last) = out.pop() {
        if last < 0xff {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// The order-preserving key of the values of `paths` in `doc` (a compound index key).
pub fn index_key(doc: &Value, paths: &[crate::Path]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        encode_key_value(p.resolve(doc), &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn brackets_order_types() {
        let ordered = [
            json!(null),
            json!(false),
            json!(true),
            json!(-5),
            json!(1),
            json!(1.5),
            json!(""),
            json!("a"),
            json!([]),
            json!([1]),
            json!({}),
        ];
        for w in ordered.windows(2) {
            assert_eq!(compare(&w[0], &w[1]), Ordering::Less, "{} < {}", w[0], w[1]);
        }
        assert_eq!(compare_opt(None, Some(&json!(null))), Ordering::Less);
    }

    #[test]
    fn numbers_compare_exactly_across_integers_and_floats() {
        let big = json!(9_007_199_254_740_993_u64);
        let float = json!(9_007_199_254_740_992.0_f64);
        assert_eq!(compare(&big, &float), Ordering::Greater);
        assert_eq!(compare(&json!(1), &json!(1.0)), Ordering::Equal);
        assert_eq!(compare(&json!(-1), &json!(-0.5)), Ordering::Less);
        assert_eq!(compare(&json!(u64::MAX), &json!(1e300)), Ordering::Less);
    }

    #[test]
    fn key_encoding_preserves_order() {
        let vals = [
            json!(null),
            json!(false),
            json!(true),
            json!(-1e10),
            json!(-1),
            json!(0),
            json!(0.5),
            json!(7),
            json!(""),
            json!("a"),
            json!("a\u{0}"),
            json!("ab"),
            json!("b"),
        ];
        for w in vals.windows(2) {
            let (mut a, mut b) = (vec![], vec![]);
            encode_key_value(Some(&w[0]), &mut a);
            encode_key_value(Some(&w[1]), &mut b);
            assert!(a < b, "{} < {}", w[0], w[1]);
        }
    }
}
