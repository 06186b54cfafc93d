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
