//! The `fmrt.null_condition` metadata value: a number for a model's only extra
//! input (`3`), or an object giving each named input a number or `"zeros"`
//! (`{"label": 3, "mu": "zeros", "text": -1}`), written in JSON's syntax.
//!
//! Only that small part of JSON is read here, so the library needs no JSON
//! crate: numbers, and one flat object of numbers or `"zeros"` keyed by
//! strings.

/// A number as written in the metadata.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum NullNumber {
    /// Written without a fraction or exponent (`3`, `-1`).
    Integer(i64),
    /// Any other finite number (`0.5`, `1e-3`, `3.0`).
    Real(f64),
}

impl NullNumber {
    /// The value for an int64 input: only numbers written as integers.
    pub(crate) fn as_i64(self) -> Option<i64> {
        match self {
            NullNumber::Integer(v) => Some(v),
            NullNumber::Real(_) => None,
        }
    }

    /// The value for a float input.
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            NullNumber::Integer(v) => v as f64,
            NullNumber::Real(v) => v,
        }
    }
}

/// One input's value in the object form.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum NullEntry {
    /// The input filled with this number.
    Number(NullNumber),
    /// The input's zeros (`"zeros"`).
    Zeros,
}

/// A parsed `fmrt.null_condition`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum NullCondition {
    /// One number, for the model's only extra input.
    Single(NullNumber),
    /// A value per named extra input, in the order written.
    PerInput(Vec<(String, NullEntry)>),
}

/// Parses the metadata text; the error says what is wrong with it.
pub(crate) fn parse(raw: &str) -> Result<NullCondition, String> {
    let text = raw.trim();
    if let Some(body) = text.strip_prefix('{') {
        return parse_object(body).map(NullCondition::PerInput);
    }
    number(text).map(NullCondition::Single)
}

const NOT_NUMBER_OR_OBJECT: &str = "not a number or a JSON object";

fn number(token: &str) -> Result<NullNumber, String> {
    let json_number = !token.is_empty()
        && token
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
        && token.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    if !json_number {
        return Err(format!("`{token}` is {NOT_NUMBER_OR_OBJECT}"));
    }
    if let Ok(v) = token.parse::<i64>() {
        return Ok(NullNumber::Integer(v));
    }
    match token.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(NullNumber::Real(v)),
        _ => Err(format!("`{token}` is {NOT_NUMBER_OR_OBJECT}")),
    }
}

/// The entries of an object whose opening `{` is already consumed.
fn parse_object(mut rest: &str) -> Result<Vec<(String, NullEntry)>, String> {
    let mut entries = Vec::new();
    rest = rest.trim_start();
    if let Some(after) = rest.strip_prefix('}') {
        return end(after, entries);
    }
    loop {
        let (name, after) = string(rest.trim_start())?;
        let after = after
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| format!("expected `:` after \"{name}\""))?
            .trim_start();
        let after = if after.starts_with('"') {
            let (word, tail) = string(after)?;
            if word != "zeros" {
                return Err(format!(
                    "\"{name}\": \"{word}\" is not a null value (a number or \"zeros\")"
                ));
            }
            entries.push((name, NullEntry::Zeros));
            tail.trim_start()
        } else {
            let len = after
                .find(|c: char| c == ',' || c == '}' || c.is_whitespace())
                .unwrap_or(after.len());
            entries.push((name, NullEntry::Number(number(&after[..len])?)));
            after[len..].trim_start()
        };
        if let Some(next) = after.strip_prefix(',') {
            rest = next;
        } else if let Some(tail) = after.strip_prefix('}') {
            return end(tail, entries);
        } else {
            return Err("expected `,` or `}` in the object".to_string());
        }
    }
}

fn end(tail: &str, entries: Vec<(String, NullEntry)>) -> Result<Vec<(String, NullEntry)>, String> {
    if tail.trim().is_empty() {
        Ok(entries)
    } else {
        Err(format!("unexpected `{}` after the object", tail.trim()))
    }
}

/// A JSON string at the start of `text` and what follows it.
fn string(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or_else(|| "expected an input name in double quotes".to_string())?;
    let mut name = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((name, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, c @ ('"' | '\\' | '/'))) => name.push(c),
                Some((_, 'n')) => name.push('\n'),
                Some((_, 't')) => name.push('\t'),
                _ => return Err("unsupported escape in an input name".to_string()),
            },
            c => name.push(c),
        }
    }
    Err("unterminated input name".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_objects() {
        assert_eq!(
            parse(" 3 "),
            Ok(NullCondition::Single(NullNumber::Integer(3)))
        );
        assert_eq!(
            parse("0.5"),
            Ok(NullCondition::Single(NullNumber::Real(0.5)))
        );
        assert_eq!(
            parse("3.0").unwrap(),
            NullCondition::Single(NullNumber::Real(3.0))
        );
        assert_eq!(
            parse(r#"{"label": 3, "mask" : 0.0}"#),
            Ok(NullCondition::PerInput(vec![
                ("label".into(), NullEntry::Number(NullNumber::Integer(3))),
                ("mask".into(), NullEntry::Number(NullNumber::Real(0.0))),
            ]))
        );
        assert_eq!(
            parse(r#"{"mu": "zeros", "text": -1}"#),
            Ok(NullCondition::PerInput(vec![
                ("mu".into(), NullEntry::Zeros),
                ("text".into(), NullEntry::Number(NullNumber::Integer(-1))),
            ]))
        );
        assert_eq!(parse("{}"), Ok(NullCondition::PerInput(vec![])));
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in [
            "",
            "abc",
            "true",
            "[1]",
            "\"3\"",
            "1e999",
            "{",
            "{\"a\" 1}",
            "{\"a\": }",
            "{\"a\": 1,}",
            "{\"a\": 1} x",
            "{a: 1}",
            "--1",
            "{\"a\": \"ones\"}",
            "zeros",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
