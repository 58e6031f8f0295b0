//! Placement labels (`zone=a`, `disk=ssd`): what a node carries (`--labels`) and what a database
//! requires of the nodes that hold its replicas.

use std::collections::BTreeMap;

/// Labels by key.
pub type Labels = BTreeMap<String, String>;

const MAX_LEN: usize = 63;

fn valid_part(s: &str, what: &str, allow_slash: bool) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_LEN {
        return Err(format!("label {what} must have 1 to {MAX_LEN} characters"));
    }
    let ok = s.chars().all(|c| {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (allow_slash && c == '/')
    });
    if !ok {
        return Err(format!(
            "label {what} {s:?} may only hold letters, digits, '-', '_', '.'{}",
            if allow_slash { " and '/'" } else { "" }
        ));
    }
    Ok(())
}

/// Checks one label.
pub fn check(key: &str, value: &str) -> Result<(), String> {
    valid_part(key, "key", true)?;
    valid_part(value, "value", false)
}

/// Parses `key=value`.
pub fn parse(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not of the form key=value"))?;
    let (k, v) = (k.trim(), v.trim());
    check(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// Checks every label of a map (from the API).
pub fn check_all<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    labels.into_iter().try_for_each(|(k, v)| check(k, v))
}

/// `zone=a,disk=ssd`, or `-` when empty.
pub fn display(labels: &Labels) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_bad_ones_are_refused_with_a_reason() {
        assert_eq!(parse("zone=a"), Ok(("zone".into(), "a".into())));
        assert_eq!(
            parse("topology.kubernetes.io/zone = eu-1a"),
            Ok(("topology.kubernetes.io/zone".into(), "eu-1a".into()))
        );
        assert!(parse("zone").unwrap_err().contains("key=value"));
        assert!(parse("=a").unwrap_err().contains("key"));
        assert!(parse("zone=").unwrap_err().contains("value"));
        assert!(parse("zone=a b").unwrap_err().contains("may only hold"));
        assert!(parse(&format!("k={}", "v".repeat(64))).is_err());
        let l: Labels = [("a".to_string(), "1".to_string()), ("b".into(), "2".into())].into();
        assert_eq!(display(&l), "a=1,b=2");
        assert_eq!(display(&Labels::new()), "-");
    }
}
