//! `${NAME}` interpolation over the parsed TOML tree, before it is deserialized.

use super::ConfigError;

/// Replaces `${NAME}` in every string of `value` with the environment variable `NAME`
/// (looked up through `lookup`). Each unset or malformed reference becomes an error with
/// the key path of the string that holds it.
pub fn interpolate(
    value: &mut toml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match value {
        toml::Value::String(s) if s.contains("${") => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => errors.push(ConfigError::new(path, message)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                interpolate(item, &child, lookup, errors);
            }
        }
        _ => {}
    }
}

fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    let mut missing = Vec::new();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated `${` in string".into());
        };
        let name = &after[..end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable reference"
            ));
        }
        match lookup(name) {
            Some(v) => out.push_str(&v),
            None => missing.push(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    match missing.len() {
        0 => Ok(out),
        1 => Err(format!("environment variable {} is not set", missing[0])),
        _ => Err(format!(
            "environment variables {} are not set",
            missing.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "TOKEN").then(|| "s3cret".to_string())
    }

    #[test]
    fn expands_and_reports_missing() {
        assert_eq!(expand("Bearer ${TOKEN}", &env).unwrap(), "Bearer s3cret");
        assert_eq!(expand("no refs", &env).unwrap(), "no refs");
        let err = expand("${NOPE}-${TOKEN}", &env).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
        assert!(expand("${TOKEN", &env).is_err());
        assert!(expand("${BAD-NAME}", &env).is_err());
    }
}
