//! What a 402 offers: `exact` USDC requirements for a quote on every configured network, both versions.
//!
//! A quote is in credits, and 1 credit = 1 atomic USDC, so the quote is the amount as written.
//! Each configured network yields one entry: scheme `exact`, the network (v1 name or CAIP-2 id),
//! the amount as a decimal string, that network's USDC, our `payTo`, `maxTimeoutSeconds`, and
//! `extra = {name, version}`, the token's EIP-712 domain ("USD Coin" on Base, "USDC" on Base
//! Sepolia), without which clients sign for the wrong domain.

use serde_json::json;

use super::types::{
    PaymentRequiredV1, PaymentRequiredV2, RequirementsV1, RequirementsV2, ResourceInfo,
};
use crate::config::{Network, X402Config};
use crate::crypto::to_checksum;

/// The only scheme offered.
pub const SCHEME_EXACT: &str = "exact";
/// The MIME type of every paid answer.
pub const MIME_JSON: &str = "application/json";

/// The resource a 402 is about.
#[derive(Debug, Clone, Copy)]
pub struct Resource<'a> {
    /// The full URL of the route (`https://api.example.com/v1/chat/completions`).
    pub url: &'a str,
    pub description: &'a str,
}

/// The x402 price of a call: its worst-case cost, but never less than `min_quote` (the
/// facilitator's practical minimum, $0.001 by default).
pub fn quote_floor(worst_case_credits: u64, min_quote: u64) -> u64 {
    worst_case_credits.max(min_quote)
}

/// The token's EIP-712 domain, as `extra`.
fn extra(net: &Network) -> serde_json::Value {
    json!({"name": &*net.eip712_name, "version": &*net.eip712_version})
}

/// One version 1 requirement.
pub fn v1_requirement(
    cfg: &X402Config,
    net: &Network,
    amount: u64,
    resource: Resource<'_>,
) -> RequirementsV1 {
    RequirementsV1 {
        scheme: SCHEME_EXACT.into(),
        network: net.name.to_string(),
        max_amount_required: amount.to_string(),
        resource: resource.url.into(),
        description: resource.description.into(),
        mime_type: MIME_JSON.into(),
        output_schema: None,
        pay_to: to_checksum(&cfg.pay_to),
        max_timeout_seconds: cfg.max_timeout_s,
        asset: to_checksum(&net.asset),
        extra: Some(extra(net)),
    }
}

/// One version 2 requirement.
pub fn v2_requirement(cfg: &X402Config, net: &Network, amount: u64) -> RequirementsV2 {
    RequirementsV2 {
        scheme: SCHEME_EXACT.into(),
        network: net.caip2.to_string(),
        amount: amount.to_string(),
        asset: to_checksum(&net.asset),
        pay_to: to_checksum(&cfg.pay_to),
        max_timeout_seconds: cfg.max_timeout_s,
        extra: Some(extra(net)),
    }
}

/// The version 1 JSON body of a 402: every network, `error` as given.
pub fn payment_required_v1(
    cfg: &X402Config,
    quote: u64,
    resource: Resource<'_>,
    error: &str,
) -> PaymentRequiredV1 {
    PaymentRequiredV1 {
        x402_version: 1,
        error: error.into(),
        accepts: cfg
            .networks
            .iter()
            .map(|n| v1_requirement(cfg, n, quote, resource))
            .collect(),
    }
}

/// The version 2 `PaymentRequired` object (for the `PAYMENT-REQUIRED` header).
pub fn payment_required_v2(
    cfg: &X402Config,
    quote: u64,
    resource: Resource<'_>,
    error: &str,
) -> PaymentRequiredV2 {
    PaymentRequiredV2 {
        x402_version: 2,
        error: Some(error.into()),
        resource: ResourceInfo {
            url: resource.url.into(),
            description: Some(resource.description.into()),
            mime_type: Some(MIME_JSON.into()),
        },
        accepts: cfg
            .networks
            .iter()
            .map(|n| v2_requirement(cfg, n, quote))
            .collect(),
        extensions: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::known_network;
    use std::time::Duration;

    pub(crate) fn cfg() -> X402Config {
        X402Config {
            own: None,
            networks: vec![
                known_network("base-sepolia").unwrap(),
                known_network("base").unwrap(),
            ],
            pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
                .parse()
                .unwrap(),
            facilitator_url: None,
            allow_simulated_facilitator_with_real_upstream: false,
            min_quote: 1_000,
            max_timeout_s: 300,
            verifier_threads: 1,
            settle_concurrency: 4,
            settle_timeout: Duration::from_secs(2),
            settle_retries: 1,
            settle_pending_wait: Duration::from_secs(2),
        }
    }

    const RES: Resource<'static> = Resource {
        url: "http://localhost:8080/v1/chat/completions",
        description: "chat completion",
    };

    #[test]
    fn floors_the_quote() {
        assert_eq!(quote_floor(12, 1_000), 1_000);
        assert_eq!(quote_floor(1_234, 1_000), 1_234);
    }

    #[test]
    fn v1_body_shape() {
        let body = serde_json::to_value(payment_required_v1(
            &cfg(),
            4_200,
            RES,
            "X-PAYMENT header is required",
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "x402Version": 1,
                "error": "X-PAYMENT header is required",
                "accepts": [
                    {
                        "scheme": "exact",
                        "network": "base-sepolia",
                        "maxAmountRequired": "4200",
                        "resource": "http://localhost:8080/v1/chat/completions",
                        "description": "chat completion",
                        "mimeType": "application/json",
                        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                        "maxTimeoutSeconds": 300,
                        "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                        "extra": {"name": "USDC", "version": "2"}
                    },
                    {
                        "scheme": "exact",
                        "network": "base",
                        "maxAmountRequired": "4200",
                        "resource": "http://localhost:8080/v1/chat/completions",
                        "description": "chat completion",
                        "mimeType": "application/json",
                        "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                        "maxTimeoutSeconds": 300,
                        "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
                        "extra": {"name": "USD Coin", "version": "2"}
                    }
                ]
            })
        );
    }

    #[test]
    fn v2_object_shape() {
        let pr = serde_json::to_value(payment_required_v2(
            &cfg(),
            4_200,
            RES,
            "PAYMENT-SIGNATURE header is required",
        ))
        .unwrap();
        assert_eq!(pr["x402Version"], 2);
        assert_eq!(pr["resource"]["url"], RES.url);
        assert_eq!(pr["resource"]["mimeType"], "application/json");
        assert_eq!(
            pr["accepts"][0],
            json!({
                "scheme": "exact",
                "network": "eip155:84532",
                "amount": "4200",
                "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
                "payTo": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                "maxTimeoutSeconds": 300,
                "extra": {"name": "USDC", "version": "2"}
            })
        );
        assert_eq!(pr["accepts"][1]["network"], "eip155:8453");
        assert_eq!(pr["accepts"][1]["extra"]["name"], "USD Coin");
    }
}
