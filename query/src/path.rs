//! JSON pointers (RFC 6901) naming a field of a document: `/customer/id`, `/items/0/sku`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A parsed JSON pointer. The root (`""`) is not a field and is refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Path {
    text: String,
    segments: Vec<String>,
}

/// Why a string is not a path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("a path starts with '/'")]
    NoLeadingSlash,
    #[error("the document root is not a field")]
    Root,
    #[error("'~' must be followed by 0 or 1 at byte {0}")]
    BadEscape(usize),
    #[error("a path has at most {MAX_DEPTH} segments")]
    TooDeep,
}

/// Deepest path accepted.
pub const MAX_DEPTH: usize = 32;

impl Path {
    pub fn parse(text: &str) -> Result<Path, PathError> {
        if text.is_empty() {
            return Err(PathError::Root);
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PathError::NoLeadingSlash);
        };
        let mut segments = Vec::new();
        let mut offset = 1;
        for raw in rest.split('/') {
            let mut seg = String::with_capacity(raw.len());
            let mut chars = raw.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some((_, '0')) => seg.push('~'),
                        Some((_, '1')) => seg.push('/'),
                        _ => return Err(PathError::BadEscape(offset + i)),
                    }
                } else {
                    seg.push(c);
                }
            }
            offset += raw.len() + 1;
            segments.push(seg);
        }
        if segments.len() > MAX_DEPTH {
            return Err(PathError::TooDeep);
        }
        Ok(Path {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The value at this path in `doc`, `None` when it is missing. A segment indexes an array
    /// when it is a decimal index without leading zeros.
    pub fn resolve<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        let mut cur = doc;
        for seg in &self.segments {
            cur = match cur {
                Value::Object(map) => map.get(seg)?,
                Value::Array(items) => items.get(array_index(seg)?)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

fn array_index(seg: &str) -> Option<usize> {
    if seg.is_empty() || (seg.len() > 1 && seg.starts_with('0')) {
        return None;
    }
    if !seg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seg.parse().ok()
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Path {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Path {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Path, D::Error> {
        let text = String::deserialize(d)?;
        Path::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_objects_arrays_and_escapes() {
        let doc = json!({"a": {"b/c": [10, {"~x": 5}]}});
        assert_eq!(
            Path::parse("/a/b~1c/1/~0x").unwrap().resolve(&doc),
            Some(&json!(5))
        );
        assert_eq!(
            Path::parse("/a/b~1c/0").unwrap().resolve(&doc),
            Some(&json!(10))
        );
        assert_eq!(Path::parse("/a/b~1c/01").unwrap().resolve(&doc), None);
        assert_eq!(Path::parse("/a/missing").unwrap().resolve(&doc), None);
    }

    #[test]
    fn refuses_malformed_paths() {
        assert_eq!(Path::parse("a"), Err(PathError::NoLeadingSlash));
        assert_eq!(Path::parse(""), Err(PathError::Root));
        assert_eq!(Path::parse("/a~2"), Err(PathError::BadEscape(2)));
    }
}
