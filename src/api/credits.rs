//! Credit balance of the caller's own wallet.

use http::{Response, StatusCode};
use serde_json::json as j;

use super::Ctx;
use crate::auth::AuthError;
use crate::error::Error;
use crate::http::{Body, json};

/// `GET /v1/credits/me`: `credits` is the balance; `held` and `available` show open reservations.
pub fn me(ctx: &Ctx) -> Result<Response<Body>, Error> {
    let p = ctx
        .principal
        .as_ref()
        .ok_or(AuthError::MissingCredentials)?;
    let b = ctx.state.billing.balance(&p.wallet);
    Ok(json(
        StatusCode::OK,
        &j!({"wallet_address": p.wallet, "credits": b.balance, "held": b.held, "available": b.available}),
    ))
}
