//! Errors as RFC 9457 problem details, with the MyPay code and the field when a record's rule is
//! broken, so an entity's system can show its user exactly what to fix.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use snodo_core::dovuto::{RejectCode, Rejection};

/// Where problem types are described.
const TYPE_BASE: &str = "https://snodo.eu/problems/";

#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub detail: String,
    pub code: Option<String>,
    pub field: Option<String>,
    /// Every rule broken, when there are several.
    pub errors: Vec<Value>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            detail: detail.into(),
            code: None,
            field: None,
            errors: Vec::new(),
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// A record refused by the MyPay rules: the status says which kind of refusal, the first
    /// rule is the headline, `errors` lists them all. `rename` maps a MyPay field to the name the
    /// caller used (spontaneous payments have their own body).
    pub fn rejected(rejections: &[Rejection], rename: &dyn Fn(&str) -> String) -> Self {
        let Some(first) = rejections.first() else {
            return Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "the record was refused",
            );
        };
        let (status, slug) = match first.code {
            RejectCode::SintassiCsv => (StatusCode::BAD_REQUEST, "malformed"),
            RejectCode::DovutoNonPresente => (StatusCode::NOT_FOUND, "not-found"),
            RejectCode::DovutoInPagamento => (StatusCode::CONFLICT, "payment-in-progress"),
            RejectCode::IudDuplicato
            | RejectCode::IuvDuplicato
            | RejectCode::TipoDovutoNonModificabile => (StatusCode::CONFLICT, "conflict"),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        };
        let errors = rejections
            .iter()
            .map(|r| {
                let mut e = json!({ "code": r.code.as_str(), "detail": r.message });
                if let Some(f) = r.field() {
                    e["field"] = Value::String(rename(f));
                }
                e
            })
            .collect();
        Self {
            status,
            slug,
            detail: first.message.clone(),
            code: Some(first.code.as_str().to_string()),
            field: first.field().map(rename),
            errors,
        }
    }

    fn title(&self) -> &'static str {
        match self.slug {
            "unauthorized" => "Not authenticated",
            "forbidden" => "Not allowed for this key",
            "not-found" | "no-route" => "Not found",
            "rate-limited" => "Too many requests",
            "body-too-large" => "Body too large",
            "unsupported-media-type" => "Unsupported media type",
            "malformed" => "Malformed request",
            "invalid" => "A rule of the record is broken",
            "conflict" => "Conflicts with the registry",
            "idempotency-key-reused" => "Idempotency-Key reused",
            "upstream" => "pagoPA did not accept the request",
            "unavailable" => "Temporarily unavailable",
            _ => "Error",
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "type": format!("{TYPE_BASE}{}", self.slug),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(c) = &self.code {
            v["code"] = Value::String(c.clone());
        }
        if let Some(f) = &self.field {
            v["field"] = Value::String(f.clone());
        }
        if !self.errors.is_empty() {
            v["errors"] = Value::Array(self.errors.clone());
        }
        v
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            self.to_json().to_string(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_record_names_code_and_field() {
        let p = Problem::rejected(
            &[
                Rejection::new(RejectCode::Importo, "amount must be greater than 0"),
                Rejection::new(RejectCode::CodFisc, "bad fiscal code"),
            ],
            &|f| f.to_string(),
        );
        assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
        let v = p.to_json();
        assert_eq!(v["code"], "PAA_IMPORT_IMPORTO");
        assert_eq!(v["field"], "importoDovuto");
        assert_eq!(v["errors"][1]["field"], "codiceIdentificativoUnivoco");
        assert_eq!(v["type"], "https://snodo.eu/problems/invalid");
    }

    #[test]
    fn duplicates_conflict_and_missing_positions_are_not_found() {
        let dup = Problem::rejected(&[Rejection::new(RejectCode::IudDuplicato, "dup")], &|f| {
            f.to_string()
        });
        assert_eq!(dup.status, StatusCode::CONFLICT);
        let gone = Problem::rejected(
            &[Rejection::new(RejectCode::DovutoNonPresente, "none")],
            &|f| f.to_string(),
        );
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    }
}
