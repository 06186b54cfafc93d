//! Durations as a config writes them: `500ms`, `30s`, `5m`, `1h` (a whole number and one unit).
//!
//! Config structs hold a [`HumanDuration`]: parsed once when the config is read. A value that
//! does not parse is kept with its problem instead of failing the whole table, so that
//! `snodo validate` lists it beside every other problem of that table (serde would stop at the
//! first); the connector's `check` reports it with the key's path.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// Parses durations such as `500ms`, `30s`, `5m`, `1h`. The grammar is deliberately narrow
/// (no days, no compound values): a config reads the same to every operator.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m, h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "duration {s:?}: unknown unit {unit:?} (ms, s, m, h)"
            ))
        }
    };
    let ms = n
        .checked_mul(per)
        .ok_or_else(|| format!("duration {s:?} is too long"))?;
    Ok(Duration::from_millis(ms))
}

/// A duration from the config, with the text it was written as (messages quote it as given).
#[derive(Clone, PartialEq, Eq)]
pub struct HumanDuration {
    text: String,
    value: Result<Duration, String>,
}

impl HumanDuration {
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let value = parse_duration(&text);
        Self { text, value }
    }

    /// The duration, or why the text is not one.
    pub fn get(&self) -> Result<Duration, String> {
        self.value.clone()
    }

    /// The duration; zero if it did not parse (only after `check` found no problem).
    pub fn value(&self) -> Duration {
        self.value.clone().unwrap_or_default()
    }

    /// As written in the config.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Why the value is not a duration, prefixed with the key (`"timeout: duration ..."`).
    pub fn problem(&self, key: &str) -> Option<String> {
        self.value.as_ref().err().map(|e| format!("{key}: {e}"))
    }
}

impl From<&str> for HumanDuration {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for HumanDuration {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl PartialEq<&str> for HumanDuration {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<str> for HumanDuration {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.text, f)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_problems() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 2m "), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            parse_duration("10"),
            Err("duration \"10\" needs a unit (ms, s, m, h)".into())
        );
        assert_eq!(
            parse_duration("2d"),
            Err("duration \"2d\": unknown unit \"d\" (ms, s, m, h)".into())
        );
        let d = HumanDuration::from("1x");
        assert_eq!(d, "1x");
        assert_eq!(
            d.problem("retry.initial").as_deref(),
            Some("retry.initial: duration \"1x\": unknown unit \"x\" (ms, s, m, h)")
        );
        let d: HumanDuration = serde_json::from_value(serde_json::json!("30s")).unwrap();
        assert_eq!(d.get(), Ok(Duration::from_secs(30)));
        assert!(serde_json::from_value::<HumanDuration>(serde_json::json!(30)).is_err());
    }
}
