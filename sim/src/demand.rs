//! The node asking an entity for a notice of a catalogue service (`paDemandPaymentNotice`), as
//! when a citizen pays the car tax at a PSP without a notice in hand: `snodo sim --demand`.
//! The notice it gets is then paid by [`crate::run`] like any other.

use crate::{endpoint_url, http_client, NoticeTarget, SimError, SimOptions};
use reqwest::header::CONTENT_TYPE;
pub use snodo_adapters::car_tax::{CarTax, VehicleType};
use snodo_adapters::pagopa::{self as soap, DemandRequest, Outcome, Request, Response};

/// What to ask for.
#[derive(Debug, Clone)]
pub struct DemandAsk {
    /// `idPA`: the entity offering the service.
    pub fiscal_code: String,
    /// `idServizio` in pagoPA's catalogue.
    pub service: String,
    /// `idSoggettoServizio`.
    pub provider: String,
    /// The car tax's service data (`TassaAutomobilistica_1_1_0`).
    pub data: CarTax,
}

/// The notice the entity issued, and what it said of it.
#[derive(Debug, Clone)]
pub struct Demanded {
    pub notice: NoticeTarget,
    /// `paymentList`'s amount, as on the wire.
    pub amount: String,
    pub description: Option<String>,
}

/// Sends one `paDemandPaymentNotice` to the hub of `opts`; a KO answer is an error naming its
/// fault code and description.
pub async fn demand(opts: &SimOptions, ask: &DemandAsk) -> Result<Demanded, SimError> {
    let endpoint = endpoint_url(&opts.url)?;
    let client = http_client(opts, 1)?;
    let body = soap::render_request(&Request::Demand(DemandRequest {
        id_pa: ask.fiscal_code.clone(),
        id_broker_pa: opts.broker_fiscal_code.clone(),
        id_station: opts.station.clone(),
        id_servizio: ask.service.clone(),
        id_soggetto_servizio: ask.provider.clone(),
        dati_specifici_servizio: ask.data.to_base64(),
    }));
    let (status, bytes) =
        crate::post_soap_once(&client, &endpoint, "paDemandPaymentNotice", body).await?;
    let refused = |why: String| SimError::Demand(why);
    let r = match soap::parse_response(&bytes) {
        Ok(Response::Demand(r)) => r,
        Ok(other) => {
            return Err(refused(format!(
                "answered {} instead of paDemandPaymentNoticeResponse",
                other.operation().response_element()
            )))
        }
        Err(e) => return Err(refused(format!("HTTP {status}, unreadable answer: {e}"))),
    };
    if r.outcome != Outcome::Ok {
        let f = r.fault.unwrap_or_default();
        return Err(refused(format!(
            "{} {}",
            f.fault_code,
            f.description.unwrap_or(f.fault_string)
        )));
    }
    let (Some(qr), Some(option)) = (r.qr_code, r.payment_option) else {
        return Err(refused("OK without qrCode or paymentList".into()));
    };
    Ok(Demanded {
        notice: NoticeTarget {
            fiscal_code: qr.fiscal_code,
            notice_number: qr.notice_number,
        },
        amount: option.amount,
        description: r.payment_description,
    })
}

/// The car tax of the entity-system stand-in, by vehicle type, in cents.
pub const DEMO_CAR_TAX_CENTS: [(VehicleType, i64); 3] = [
    (VehicleType::Car, 18750),
    (VehicleType::Trailer, 4500),
    (VehicleType::Motorcycle, 2900),
];

/// The entity-system stand-in for a debt type priced by the entity (`demand.url`), served by
/// `snodo sim --serve` at `POST /demand/<anything>`: it reads the hub's JSON request and answers
/// the demo rule. A plate starting with `NF` owes nothing (404), one starting with `ER` is an
/// error (500); any other owes [`DEMO_CAR_TAX_CENTS`] for its vehicle type, causale
/// `Tassa automobilistica <plate>`, payer the external stand-in's demo payer, due 2099-12-31.
/// With a token (`--external-token`), a request without it is 401.
pub fn router(token: Option<String>) -> axum::Router {
    axum::Router::new()
        .route("/demand/{*path}", axum::routing::post(priced))
        .with_state(std::sync::Arc::new(token))
}

async fn priced(
    axum::extract::State(token): axum::extract::State<std::sync::Arc<Option<String>>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use serde_json::{json, Value};
    let answer = |status: StatusCode, body: Value| {
        (
            status,
            [(CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    };
    if let Some(t) = token.as_ref() {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given.map(str::trim) != Some(t.as_str()) {
            return answer(StatusCode::UNAUTHORIZED, json!({"status": 401}));
        }
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"status": 400, "detail": e.to_string()}),
            )
        }
    };
    let plate = request["data"]["plate"].as_str().unwrap_or_default();
    let kind = request["data"]["vehicleType"].as_str().unwrap_or_default();
    if plate.starts_with("NF") {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"status": 404, "plate": plate}),
        );
    }
    if plate.starts_with("ER") {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"status": 500, "plate": plate}),
        );
    }
    let Some(&(_, cents)) = DEMO_CAR_TAX_CENTS.iter().find(|(v, _)| v.name() == kind) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"status": 400, "detail": format!("unknown vehicleType {kind:?}")}),
        );
    };
    let (id, name) = crate::external::DEMO_PAYER;
    answer(
        StatusCode::OK,
        json!({
            "amountCents": cents,
            "causale": format!("Tassa automobilistica {plate}"),
            "payer": {"type": "F", "id": id, "name": name},
            "dueDate": crate::external::DEMO_DUE_DATE,
        }),
    )
}
