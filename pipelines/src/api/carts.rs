//! Carts (Gateway mode): an entity's site sends the citizen to pagoPA Checkout with 1 to 5 of
//! its notices. The hub checks the notices against the registry, opens the cart at Checkout
//! (`POST /carts`, checkout_v2.json), keeps it, and reports its state from the positions and
//! their receipts.

use super::{blocking, cut, decode_body, read_json, Api, Caller, Entered, Problem, Reply};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use snodo_connectors::call::CallError;
use snodo_core::dovuto::RejectCode;
use snodo_core::payment::PositionStatus;
use snodo_core::NoticeNumber;
use snodo_store::{Cart, NewCart};
use std::sync::Arc;

/// Checkout takes 1 to 5 notices.
const MAX_NOTICES: usize = 5;
const MAX_ID: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Request {
    notice_numbers: Vec<String>,
    return_urls: ReturnUrls,
    email_notice: Option<String>,
    id_cart: Option<String>,
}

#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ReturnUrls {
    return_ok_url: String,
    return_cancel_url: String,
    return_error_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    return_waiting_url: Option<String>,
}

/// `POST /entities/{ipa}/carts`.
pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    scope: Entered,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let (bytes, value) = match read_json(&api, &headers, body).await {
        Ok(b) => b,
        Err(p) => return p.into_response(),
    };
    let seed = headers
        .get("idempotency-key")
        .and_then(|k| k.to_str().ok())
        .map(|k| format!("{ipa}|cart|{k}"));
    let api2 = api.clone();
    let who2 = who.clone();
    api.once(&who2, "POST carts", &headers, &bytes, || async move {
        match open(&api2, &who, value, seed).await {
            Ok(r) => r,
            Err(p) => p.into(),
        }
    })
    .await
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", detail).field(field)
}

fn url_ok(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://"))
        && u.len() <= 2048
        && !u.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub(crate) async fn open(
    api: &Arc<Api>,
    who: &Caller,
    value: Value,
    seed: Option<String>,
) -> Result<Reply, Problem> {
    let plan = api.plan();
    let Some(checkout) = &plan.checkout else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "carts need pagoPA Checkout, which this hub does not configure ([pagopa.checkout])",
        ));
    };
    let req: Request = decode_body(&value)?;
    let n = req.notice_numbers.len();
    if n == 0 || n > MAX_NOTICES {
        return Err(invalid(
            "noticeNumbers",
            format!("a cart has 1 to {MAX_NOTICES} notices, this one {n}"),
        ));
    }
    for (name, u) in [
        (
            "returnUrls.returnOkUrl",
            Some(&req.return_urls.return_ok_url),
        ),
        (
            "returnUrls.returnCancelUrl",
            Some(&req.return_urls.return_cancel_url),
        ),
        (
            "returnUrls.returnErrorUrl",
            Some(&req.return_urls.return_error_url),
        ),
        (
            "returnUrls.returnWaitingUrl",
            req.return_urls.return_waiting_url.as_ref(),
        ),
    ] {
        if u.is_some_and(|u| !url_ok(u)) {
            return Err(invalid(name, "must be an http(s) URL"));
        }
    }
    if let Some(e) = &req.email_notice {
        if e.len() > 256 || !e.contains('@') || e.contains(char::is_whitespace) {
            return Err(invalid(
                "emailNotice",
                format!("{e:?} is not an e-mail address"),
            ));
        }
    }
    let id = match (&req.id_cart, &seed) {
        (Some(id), _) => {
            if id.is_empty()
                || id.len() > MAX_ID
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(invalid(
                    "idCart",
                    format!("1 to {MAX_ID} letters, digits, '-', '_' or '.'"),
                ));
            }
            id.clone()
        }
        (None, Some(seed)) => {
            use sha2::Digest;
            format!(
                "C{}",
                &hex::encode(sha2::Sha256::digest(seed.as_bytes()))[..31]
            )
        }
        (None, None) => {
            use sha2::Digest;
            let material = format!(
                "{:?}|{}|{:?}",
                std::time::SystemTime::now(),
                std::process::id(),
                req.notice_numbers
            );
            format!(
                "C{}",
                &hex::encode(sha2::Sha256::digest(material.as_bytes()))[..31]
            )
        }
    };
    let entity = who.entity.clone();
    // The same cart again (a retry with the same idCart): it is the answer.
    {
        let (store, ipa, id) = (api.store.clone(), entity.ipa_code.clone(), id.clone());
        if let Some(cart) = blocking(move || store.cart(&ipa, &id)).await? {
            return Ok(Reply::ok(StatusCode::OK, state(api, who, cart).await?));
        }
    }
    let mut notices = Vec::with_capacity(n);
    let mut payment_notices = Vec::with_capacity(n);
    for (i, raw) in req.notice_numbers.iter().enumerate() {
        let field = format!("noticeNumbers[{i}]");
        let notice =
            NoticeNumber::parse(raw).map_err(|e| invalid(&field, format!("{raw:?}: {e}")))?;
        if notices.contains(&notice) {
            return Err(invalid(&field, format!("{raw} is in the cart twice")));
        }
        let (store, ipa, nn) = (api.store.clone(), entity.ipa_code.clone(), notice.clone());
        let position = blocking(move || store.position_by_notice(&ipa, &nn)).await?;
        let Some(p) = position.filter(|p| p.status == PositionStatus::Active) else {
            return Err(invalid(
                &field,
                format!("{raw} is not an active position of {}", entity.ipa_code),
            )
            .code(RejectCode::DovutoNonPresente.as_str()));
        };
        payment_notices.push(json!({
            "noticeNumber": notice.as_str(),
            "fiscalCode": entity.fiscal_code.as_str(),
            "amount": p.dovuto.amount.cents(),
            "companyName": cut(&entity.name, 140),
            "description": cut(&p.dovuto.causale, 140),
        }));
        notices.push(notice);
    }
    let mut return_urls = req.return_urls.clone();
    if return_urls.return_waiting_url.is_none() {
        return_urls.return_waiting_url = Some(return_urls.return_ok_url.clone());
    }
    let mut cart_request = json!({
        "paymentNotices": payment_notices,
        "returnUrls": return_urls,
        "idCart": id,
    });
    if let Some(e) = &req.email_notice {
        cart_request["emailNotice"] = Value::String(e.clone());
    }
    let url = format!("{}/carts", checkout.url);
    let answer = api
        .caller
        .post_json(
            &url,
            &[("Ocp-Apim-Subscription-Key", &checkout.subscription_key)],
            cart_request.to_string().into_bytes(),
            checkout.timeout,
        )
        .await
        .map_err(|e| match e {
            CallError::Timeout(t) => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream",
                format!("pagoPA Checkout did not answer within {t:?}; retry later"),
            ),
            CallError::Failed(why) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream",
                format!("pagoPA Checkout cannot be reached: {why}"),
            ),
        })?;
    let redirect = match (answer.status, answer.location) {
        (300..=399, Some(l)) if !l.is_empty() => l,
        (status, _) => {
            let excerpt: String = String::from_utf8_lossy(&answer.body)
                .chars()
                .take(300)
                .collect();
            tracing::warn!(entity = %entity.ipa_code, status, "Checkout refused a cart: {excerpt}");
            return Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "upstream",
                format!("pagoPA Checkout answered HTTP {status} instead of a redirect: {excerpt}"),
            ));
        }
    };
    let numbers: Vec<String> = notices.iter().map(|n| n.as_str().to_string()).collect();
    let return_urls_text = serde_json::to_string(&return_urls).unwrap_or_default();
    let store = api.store.clone();
    let (ipa, id2) = (entity.ipa_code.clone(), id.clone());
    let cart = blocking(move || {
        store.create_cart(&NewCart {
            id: &id2,
            entity: &ipa,
            notice_numbers: &numbers,
            redirect_url: &redirect,
            return_urls: &return_urls_text,
        })
    })
    .await?;
    tracing::info!(key = %who.key_id, cart = %cart.id, "cart opened at Checkout");
    Ok(Reply {
        status: StatusCode::CREATED,
        body: state(api, who, cart).await?,
        location: Some(format!(
            "{}/entities/{}/carts/{}",
            super::BASE,
            entity.ipa_code,
            id
        )),
    })
}

/// A cart with each notice's position status and receipt.
async fn state(api: &Arc<Api>, who: &Caller, cart: Cart) -> Result<Value, Problem> {
    let store = api.store.clone();
    let ipa = who.entity.ipa_code.clone();
    let numbers = cart.notice_numbers.clone();
    let rows = blocking(move || {
        let mut out = Vec::new();
        for n in &numbers {
            let position = match NoticeNumber::parse(n) {
                Ok(nn) => store.position_by_notice(&ipa, &nn)?,
                Err(_) => None,
            };
            let receipt = store.receipt_for_notice(&ipa, n)?;
            out.push((n.clone(), position, receipt));
        }
        Ok(out)
    })
    .await?;
    let paid = rows
        .iter()
        .filter(|(_, p, _)| p.as_ref().is_some_and(|p| p.status == PositionStatus::Paid))
        .count();
    let state = match paid {
        0 => "open",
        n if n == rows.len() => "paid",
        _ => "partially_paid",
    };
    let notices: Vec<Value> = rows
        .iter()
        .map(|(n, p, r)| {
            json!({
                "noticeNumber": n,
                "amountCents": p.as_ref().map(|p| p.dovuto.amount.cents()),
                "status": p.as_ref().map(|p| p.status.as_str()),
                "receiptId": r.as_ref().map(|r| r.receipt_id.clone()),
            })
        })
        .collect();
    Ok(json!({
        "id": cart.id,
        "redirectUrl": cart.redirect_url,
        "state": state,
        "createdAt": cart.created_at,
        "notices": notices,
    }))
}

/// `GET /entities/{ipa}/carts/{id}`.
pub(crate) async fn read(State(api): State<Arc<Api>>, scope: Entered) -> Response {
    let who = scope.who.clone();
    let ipa = scope.param("ipa");
    let id = scope.param("id");
    let answer = async {
        let store = api.store.clone();
        let (ipa2, id2) = (ipa.clone(), id.clone());
        match blocking(move || store.cart(&ipa2, &id2)).await? {
            Some(cart) => state(&api, &who, cart).await,
            None => Err(Problem::new(
                StatusCode::NOT_FOUND,
                "not-found",
                format!("no cart {id:?} for {ipa}"),
            )),
        }
    };
    match answer.await {
        Ok(v) => Reply::ok(StatusCode::OK, v).into_response(),
        Err(p) => p.into_response(),
    }
}
