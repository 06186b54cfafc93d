//! Spontaneous payments ("Base" mode): a debt type a citizen may pay without a position made by
//! the entity first. The entity declares the amount rule and the causale template with its
//! fields; the hub checks what a citizen portal sends and renders the causale.

use crate::Amount;
use chrono::NaiveDate;
use serde::Serialize;
use std::collections::BTreeMap;

/// Longest causale pagoPA accepts.
pub const CAUSALE_MAX: usize = 140;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AmountRule {
    Fixed {
        #[serde(rename = "fixedCents")]
        cents: i64,
    },
    Range {
        #[serde(rename = "minCents")]
        min: i64,
        #[serde(rename = "maxCents")]
        max: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldKind {
    String,
    Integer,
    Date,
    Enum,
}

impl FieldKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => Self::String,
            "integer" => Self::Integer,
            "date" => Self::Date,
            "enum" => Self::Enum,
            _ => return None,
        })
    }
}

/// A value the citizen gives, as declared by the entity.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDef {
    pub name: String,
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub kind: FieldKind,
    pub required: bool,
    pub pattern: Option<String>,
    pub values: Option<Vec<String>>,
    pub max_length: Option<usize>,
    #[serde(skip)]
    regex: Option<regex_lite::Regex>,
}

/// A debt type's spontaneous payment rule, checked when the configuration is read.
#[derive(Debug, Clone, Serialize)]
pub struct SpontaneousRule {
    pub amount: AmountRule,
    pub causale: String,
    pub fields: Vec<FieldDef>,
}

/// One thing wrong with a spontaneous payment request: the field (`fields.<name>`,
/// `amountCents`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The `{name}` placeholders of a template, in order; `Err` for an unclosed or empty one.
fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
        let name = &after[..close];
        if name.is_empty() || name.contains('{') {
            return Err(format!("bad placeholder {{{name}}} in {template:?}"));
        }
        out.push(name);
        rest = &after[close + 1..];
    }
    Ok(out)
}

impl FieldDef {
    /// A field as configured; `Err` says what is wrong with the declaration.
    pub fn new(
        name: &str,
        label: Option<String>,
        kind: &str,
        required: bool,
        pattern: Option<String>,
        values: Vec<String>,
        max_length: Option<usize>,
    ) -> Result<Self, String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "field name {name:?} must be letters, digits and '_'"
            ));
        }
        let kind = FieldKind::parse(kind).ok_or_else(|| {
            format!("field {name}: type {kind:?} is not one of string, integer, date, enum")
        })?;
        if kind == FieldKind::Enum && values.is_empty() {
            return Err(format!("field {name}: an enum needs `values`"));
        }
        if kind != FieldKind::Enum && !values.is_empty() {
            return Err(format!("field {name}: `values` is only for enum fields"));
        }
        let regex = match &pattern {
            Some(p) => Some(
                regex_lite::Regex::new(p)
                    .map_err(|e| format!("field {name}: pattern {p:?}: {e}"))?,
            ),
            None => None,
        };
        Ok(Self {
            name: name.to_string(),
            label,
            kind,
            required,
            pattern,
            values: (kind == FieldKind::Enum).then_some(values),
            max_length,
            regex,
        })
    }

    fn check(&self, value: &str) -> Result<(), String> {
        match self.kind {
            FieldKind::String => {}
            FieldKind::Integer => {
                if value.parse::<i64>().is_err() {
                    return Err(format!("{value:?} is not an integer"));
                }
            }
            FieldKind::Date => {
                if NaiveDate::parse_from_str(value, "%Y-%m-%d").is_err() {
                    return Err(format!("{value:?} is not a date (YYYY-MM-DD)"));
                }
            }
            FieldKind::Enum => {
                let values = self.values.as_deref().unwrap_or_default();
                if !values.iter().any(|v| v == value) {
                    return Err(format!("{value:?} is not one of {values:?}"));
                }
            }
        }
        if let Some(max) = self.max_length {
            let n = value.chars().count();
            if n > max {
                return Err(format!("{n} characters, at most {max} allowed"));
            }
        }
        if let (Some(re), Some(p)) = (&self.regex, &self.pattern) {
            if !re.is_match(value) {
                return Err(format!("{value:?} does not match {p:?}"));
            }
        }
        if value.chars().any(char::is_control) {
            return Err("control characters are not allowed".into());
        }
        Ok(())
    }
}

impl SpontaneousRule {
    /// A rule as configured; `Err` says what is wrong (unknown placeholders, bad amounts).
    pub fn new(amount: AmountRule, causale: &str, fields: Vec<FieldDef>) -> Result<Self, String> {
        match amount {
            AmountRule::Fixed { cents } if cents < 1 || cents > Amount::MYPAY_MAX.cents() => {
                return Err(format!("fixed amount {cents} cents is out of range"))
            }
            AmountRule::Range { min, max }
                if min < 1 || max < min || max > Amount::MYPAY_MAX.cents() =>
            {
                return Err(format!(
                    "amount range {min}..{max} cents must have 1 <= min <= max"
                ))
            }
            _ => {}
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|o| o.name == f.name) {
                return Err(format!("field {} is declared twice", f.name));
            }
        }
        for name in placeholders(causale)? {
            if !fields.iter().any(|f| f.name == name) {
                return Err(format!(
                    "causale uses {{{name}}}, which is not a declared field"
                ));
            }
        }
        if causale.trim().is_empty() {
            return Err("causale must not be empty".into());
        }
        Ok(Self {
            amount,
            causale: causale.to_string(),
            fields,
        })
    }

    /// Checks a request and gives the amount and the rendered causale, or every problem found.
    pub fn apply(
        &self,
        amount_cents: Option<i64>,
        values: &BTreeMap<String, String>,
    ) -> Result<(Amount, String), Vec<FieldError>> {
        let mut errors = Vec::new();
        for name in values.keys() {
            if !self.fields.iter().any(|f| &f.name == name) {
                errors.push(FieldError::new(
                    format!("fields.{name}"),
                    "is not a field of this payment",
                ));
            }
        }
        for f in &self.fields {
            match values.get(&f.name).map(|v| v.trim()) {
                None | Some("") if f.required => {
                    errors.push(FieldError::new(format!("fields.{}", f.name), "is required"))
                }
                None | Some("") => {}
                Some(v) => {
                    if let Err(m) = f.check(v) {
                        errors.push(FieldError::new(format!("fields.{}", f.name), m));
                    }
                }
            }
        }
        let amount = match (self.amount, amount_cents) {
            (AmountRule::Fixed { cents }, None) => Some(cents),
            (AmountRule::Fixed { cents }, Some(given)) if given == cents => Some(cents),
            (AmountRule::Fixed { cents }, Some(given)) => {
                errors.push(FieldError::new(
                    "amountCents",
                    format!("this payment is {cents} cents, not {given} (leave it out)"),
                ));
                None
            }
            (AmountRule::Range { .. }, None) => {
                errors.push(FieldError::new("amountCents", "is required"));
                None
            }
            (AmountRule::Range { min, max }, Some(given)) if given < min || given > max => {
                errors.push(FieldError::new(
                    "amountCents",
                    format!("{given} is outside {min}..{max} cents"),
                ));
                None
            }
            (AmountRule::Range { .. }, Some(given)) => Some(given),
        };
        let causale = self.render(values);
        if causale.chars().count() > CAUSALE_MAX {
            errors.push(FieldError::new(
                "fields",
                format!(
                    "the causale would be longer than {CAUSALE_MAX} characters: shorten the values"
                ),
            ));
        }
        match amount {
            Some(cents) if errors.is_empty() => Ok((Amount::from_cents(cents), causale)),
            _ => Err(errors),
        }
    }

    fn render(&self, values: &BTreeMap<String, String>) -> String {
        let mut out = String::with_capacity(self.causale.len() + 32);
        let mut rest = self.causale.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let name = &after[..close];
            out.push_str(values.get(name).map(|v| v.trim()).unwrap_or(""));
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mensa() -> SpontaneousRule {
        SpontaneousRule::new(
            AmountRule::Range {
                min: 100,
                max: 50_000,
            },
            "Mensa {anno_scolastico} - {alunno}",
            vec![
                FieldDef::new(
                    "anno_scolastico",
                    None,
                    "string",
                    true,
                    Some("^[0-9]{4}/[0-9]{2}$".into()),
                    vec![],
                    None,
                )
                .expect("field"),
                FieldDef::new("alunno", None, "string", true, None, vec![], Some(20))
                    .expect("field"),
                FieldDef::new("note", None, "string", false, None, vec![], None).expect("field"),
            ],
        )
        .expect("rule")
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_the_causale_from_declared_fields() {
        let (amount, causale) = mensa()
            .apply(
                Some(4500),
                &values(&[("anno_scolastico", "2026/27"), ("alunno", "Luca Rossi")]),
            )
            .expect("valid");
        assert_eq!(amount.cents(), 4500);
        assert_eq!(causale, "Mensa 2026/27 - Luca Rossi");
    }

    #[test]
    fn names_every_bad_or_missing_field() {
        let errors = mensa()
            .apply(
                Some(10),
                &values(&[("anno_scolastico", "2026"), ("colore", "blu")]),
            )
            .expect_err("invalid");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "fields.colore",
                "fields.anno_scolastico",
                "fields.alunno",
                "amountCents"
            ]
        );
    }

    #[test]
    fn fixed_amounts_and_typed_fields() {
        let rule = SpontaneousRule::new(
            AmountRule::Fixed { cents: 1600 },
            "Bollo {giorno} {tipo}",
            vec![
                FieldDef::new("giorno", None, "date", true, None, vec![], None).expect("field"),
                FieldDef::new(
                    "tipo",
                    None,
                    "enum",
                    true,
                    None,
                    vec!["A".into(), "B".into()],
                    None,
                )
                .expect("field"),
            ],
        )
        .expect("rule");
        let ok = values(&[("giorno", "2026-11-26"), ("tipo", "B")]);
        assert_eq!(rule.apply(None, &ok).expect("valid").0.cents(), 1600);
        assert_eq!(
            rule.apply(Some(1700), &ok).expect_err("amount")[0].field,
            "amountCents"
        );
        let bad = values(&[("giorno", "26/11/2026"), ("tipo", "C")]);
        assert_eq!(rule.apply(None, &bad).expect_err("bad").len(), 2);
    }

    #[test]
    fn a_template_may_only_use_declared_fields() {
        let err = SpontaneousRule::new(AmountRule::Fixed { cents: 100 }, "X {y}", vec![])
            .expect_err("undeclared");
        assert!(err.contains("{y}"), "{err}");
        assert!(SpontaneousRule::new(AmountRule::Fixed { cents: 100 }, "X {y", vec![]).is_err());
        assert!(SpontaneousRule::new(AmountRule::Range { min: 10, max: 5 }, "X", vec![]).is_err());
        assert!(FieldDef::new("a b", None, "string", false, None, vec![], None).is_err());
        assert!(FieldDef::new("e", None, "enum", false, None, vec![], None).is_err());
    }
}
