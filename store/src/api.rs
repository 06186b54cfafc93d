//! What the entity API keeps: responses for `Idempotency-Key` replays, and Checkout carts.

use crate::db::{args, Access, Conn, Driver, Row};
use crate::ops::{self, now};
use crate::*;

pub trait ApiStore {
    /// The response kept for (scope, key), if any.
    fn saved_response(&self, scope: &str, key: &str) -> Result<Option<SavedResponse>>;
    /// Keeps `response` for (scope, key) unless one is kept already, and returns the one kept:
    /// the first writer wins, also between processes racing on the same key.
    fn save_response(
        &self,
        scope: &str,
        key: &str,
        response: &SavedResponse,
    ) -> Result<SavedResponse>;
    /// Forgets responses kept before `before` (RFC 3339, UTC); returns how many.
    fn prune_saved_responses(&self, before: &str) -> Result<u64>;
}

/// What MyPay's SOAP services booked (an uploaded import flow, an asked export), by the
/// request token they answered.
pub trait WsRequestStore {
    /// Records a request; `false` when the entity already has one with this token (a token
    /// serves once), race-free between processes.
    fn create_ws_request(&self, r: &NewWsRequest<'_>) -> Result<bool>;
    /// The entity's request with this token.
    fn ws_request(&self, entity: &str, token: &str) -> Result<Option<WsRequest>>;
    /// Moves a request to `state`, with its error code or its outcome (JSON).
    fn update_ws_request(
        &self,
        entity: &str,
        token: &str,
        state: &str,
        error_code: Option<&str>,
        outcome: Option<&str>,
    ) -> Result<()>;
    /// Requests of `kind` in one of `states` (work a hub left unfinished), oldest first.
    fn ws_requests_in(&self, kind: &str, states: &[&str], limit: u32) -> Result<Vec<WsRequest>>;
    /// A payment made outside pagoPA (MyPay's `paaSILRegistraPagamento`) recorded against the
    /// entity's live position with this IUV, in one transaction: the position paid (only from
    /// active or expired, so a receipt committing at the same time wins or loses whole), its
    /// history, the payment's data kept as the request `payment:<position id>` (state `PAGATO`),
    /// a `position.paid` event. Nothing is written unless the answer is [`OutsidePaid::Paid`].
    fn record_outside_payment(&self, p: &OutsidePayment<'_>) -> Result<OutsidePaid>;
}

/// A payment made outside pagoPA, as the entity reports it.
#[derive(Debug, Clone)]
pub struct OutsidePayment<'a> {
    pub entity: &'a str,
    pub iuv: &'a str,
    pub amount_cents: i64,
    /// Who reports it (`mypay:paaSILRegistraPagamento`): the history's source.
    pub source: &'a str,
    /// The payment's data as reported (JSON object), kept and put in the event.
    pub details: serde_json::Value,
}

/// What recording a payment made outside pagoPA did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutsidePaid {
    /// The position is paid now.
    Paid { position: i64, iud: String },
    /// It was paid already (a receipt, or this same report before): nothing written.
    AlreadyPaid { position: i64, iud: String },
    /// No position of the entity has this IUV.
    Unknown,
    /// The position was annulled.
    Annulled { position: i64 },
    /// The amount is not the position's.
    AmountMismatch { expected_cents: i64 },
}

/// The request token a payment made outside pagoPA is kept under.
pub fn outside_payment_token(position: i64) -> String {
    format!("payment:{position}")
}

/// A request to record.
#[derive(Debug, Clone)]
pub struct NewWsRequest<'a> {
    pub entity: &'a str,
    pub token: &'a str,
    /// `import`, `export`, ...
    pub kind: &'a str,
    pub state: &'a str,
    /// What was asked (JSON).
    pub params: &'a str,
}

/// A recorded request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WsRequest {
    pub entity: String,
    pub token: String,
    pub kind: String,
    pub state: String,
    pub error_code: Option<String>,
    pub params: String,
    pub outcome: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const WS_REQUEST: &str = "SELECT entity, token, kind, state, error_code, params, outcome, created_at, updated_at FROM ws_requests";

fn ws_request_from(r: &dyn Row) -> Result<WsRequest> {
    Ok(WsRequest {
        entity: r.get(0)?,
        token: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        error_code: r.get(4)?,
        params: r.get(5)?,
        outcome: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

impl<D: Driver> WsRequestStore for D {
    fn create_ws_request(&self, r: &NewWsRequest<'_>) -> Result<bool> {
        let ts = now();
        self.run(Access::Write, |c| {
            c.execute(
                "INSERT INTO ws_requests (entity, token, kind, state, params, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
                args!(r.entity, r.token, r.kind, r.state, r.params, &ts),
            )
            .map(|n| n > 0)
        })
    }

    fn ws_request(&self, entity: &str, token: &str) -> Result<Option<WsRequest>> {
        let sql = format!("{WS_REQUEST} WHERE entity = $1 AND token = $2");
        self.read(|c| c.one(&sql, args!(entity, token), ws_request_from))
    }

    fn update_ws_request(
        &self,
        entity: &str,
        token: &str,
        state: &str,
        error_code: Option<&str>,
        outcome: Option<&str>,
    ) -> Result<()> {
        let ts = now();
        self.run(Access::Write, |c| {
            c.execute(
                "UPDATE ws_requests SET state = $3, error_code = $4, outcome = $5, updated_at = $6
                 WHERE entity = $1 AND token = $2",
                args!(entity, token, state, error_code, outcome, &ts),
            )
            .map(|_| ())
        })
    }

    fn ws_requests_in(&self, kind: &str, states: &[&str], limit: u32) -> Result<Vec<WsRequest>> {
        let mut out = Vec::new();
        for state in states {
            let sql =
                format!("{WS_REQUEST} WHERE kind = $1 AND state = $2 ORDER BY created_at LIMIT $3");
            out.extend(
                self.read(|c| c.all(&sql, args!(kind, *state, i64::from(limit)), ws_request_from))?,
            );
        }
        Ok(out)
    }

    fn record_outside_payment(&self, p: &OutsidePayment<'_>) -> Result<OutsidePaid> {
        self.tx(|c| {
            let target = |c: &mut dyn Conn, annulled: bool| {
                let sql = if annulled {
                    "SELECT id, iud, status, amount_cents FROM positions
                     WHERE entity = $1 AND iuv = $2 AND status = 'annulled' ORDER BY id DESC"
                } else {
                    "SELECT id, iud, status, amount_cents FROM positions
                     WHERE entity = $1 AND iuv = $2 AND status <> 'annulled'"
                };
                c.one(sql, args!(p.entity, p.iuv), |r| {
                    Ok((
                        r.get::<i64>(0)?,
                        r.get::<String>(1)?,
                        r.get::<String>(2)?,
                        r.get::<i64>(3)?,
                    ))
                })
            };
            let Some((id, iud, status, amount)) = target(c, false)? else {
                return Ok(match target(c, true)? {
                    Some((position, ..)) => OutsidePaid::Annulled { position },
                    None => OutsidePaid::Unknown,
                });
            };
            if status == PositionStatus::Paid.as_str() {
                return Ok(OutsidePaid::AlreadyPaid { position: id, iud });
            }
            if amount != p.amount_cents {
                return Ok(OutsidePaid::AmountMismatch {
                    expected_cents: amount,
                });
            }
            let ts = now();
            // Guarded on the state read: a receipt that paid it meanwhile leaves 0 rows here.
            let changed = c.execute(
                "UPDATE positions SET status = 'paid', version = version + 1, updated_at = $2
                 WHERE id = $1 AND status IN ('active', 'expired')",
                args!(id, &ts),
            )?;
            if changed == 0 {
                return Ok(OutsidePaid::AlreadyPaid { position: id, iud });
            }
            c.execute(
                "INSERT INTO position_history (position_id, action, source, flow_id, at, previous_data)
                 VALUES ($1, 'P', $2, NULL, $3, NULL)",
                args!(id, p.source, &ts),
            )?;
            let details = p.details.to_string();
            let token = outside_payment_token(id);
            c.execute(
                "INSERT INTO ws_requests (entity, token, kind, state, params, created_at, updated_at)
                 VALUES ($1, $2, 'payment', 'PAGATO', $3, $4, $4)",
                args!(p.entity, &token, &details, &ts),
            )?;
            let touch = crate::Touch {
                iuv: Some(p.iuv),
                ..crate::Touch::default()
            };
            crate::reconcile::mark(c, p.entity, &touch)?;
            c.new_event(
                &NewEvent {
                    kind: "position.paid",
                    entity: p.entity,
                    subject: &iud,
                    payload: serde_json::json!({
                        "iud": iud,
                        "iuv": p.iuv,
                        "amount_cents": p.amount_cents,
                        "outside_pagopa": p.details,
                        "source": p.source,
                    }),
                    correlation: None,
                },
                &ts,
            )?;
            Ok(OutsidePaid::Paid { position: id, iud })
        })
    }
}

pub trait CartStore {
    /// Records a cart with its `cart.opened` event; when (entity, id) exists already, returns
    /// the existing one unchanged (a retry opens nothing new), race-free between processes.
    fn create_cart(&self, cart: &NewCart<'_>) -> Result<Cart>;
    /// The entity's cart with this id, if any.
    fn cart(&self, entity: &str, id: &str) -> Result<Option<Cart>>;
}

fn saved(c: &mut dyn Conn, scope: &str, key: &str) -> Result<Option<SavedResponse>> {
    c.one(
        "SELECT request_sha256, status, body FROM api_responses WHERE scope = $1 AND key = $2",
        args!(scope, key),
        |r| {
            Ok(SavedResponse {
                request_sha256: r.get(0)?,
                status: ops::http_status(r.get(1)?)?,
                body: r.get(2)?,
            })
        },
    )
}

const CART: &str = "SELECT id, entity, notice_numbers, redirect_url, return_urls, created_at
     FROM carts WHERE entity = $1 AND id = $2";

fn cart_from(r: &dyn Row) -> Result<Cart> {
    let id: String = r.get(0)?;
    Ok(Cart {
        notice_numbers: ops::cart_notices(&id, &r.get::<String>(2)?)?,
        id,
        entity: r.get(1)?,
        redirect_url: r.get(3)?,
        return_urls: r.get(4)?,
        created_at: r.get(5)?,
    })
}

impl<D: Driver> ApiStore for D {
    fn saved_response(&self, scope: &str, key: &str) -> Result<Option<SavedResponse>> {
        self.read(|c| saved(c, scope, key))
    }

    fn save_response(
        &self,
        scope: &str,
        key: &str,
        response: &SavedResponse,
    ) -> Result<SavedResponse> {
        self.run(Access::Write, |c| {
            // The primary key decides between processes: a concurrent second insert waits for
            // the first, inserts nothing, and the select (a statement of its own) returns the
            // first one's response.
            c.execute(
                "INSERT INTO api_responses (scope, key, request_sha256, status, body, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                args!(
                    scope,
                    key,
                    &response.request_sha256,
                    i64::from(response.status),
                    &response.body,
                    &now()
                ),
            )?;
            saved(c, scope, key)?.ok_or_else(|| {
                StoreError::Conflict(format!("kept response {scope}/{key} vanished after saving"))
            })
        })
    }

    fn prune_saved_responses(&self, before: &str) -> Result<u64> {
        let sql = "DELETE FROM api_responses WHERE created_at < $1";
        self.run(Access::Write, |c| c.execute(sql, args!(before)))
    }
}

impl<D: Driver> CartStore for D {
    fn create_cart(&self, cart: &NewCart<'_>) -> Result<Cart> {
        let notices = ops::cart_notices_text(cart.notice_numbers)?;
        self.tx(|c| {
            let ts = now();
            // Of two processes opening the same cart, the second inserts nothing (after waiting
            // for the first to commit) and finds the first's.
            let inserted = c.execute(
                "INSERT INTO carts (entity, id, notice_numbers, redirect_url, return_urls, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                args!(
                    cart.entity,
                    cart.id,
                    &notices,
                    cart.redirect_url,
                    cart.return_urls,
                    &ts
                ),
            )?;
            if inserted > 0 {
                c.new_event(&ops::cart_opened(cart), &ts)?;
            }
            c.one(CART, args!(cart.entity, cart.id), cart_from)?
                .ok_or_else(|| StoreError::Conflict(format!("cart {} vanished", cart.id)))
        })
    }

    fn cart(&self, entity: &str, id: &str) -> Result<Option<Cart>> {
        self.read(|c| c.one(CART, args!(entity, id), cart_from))
    }
}
