//! The OpenAPI schemas of the console's JSON: the spend summary, live stats, top wallets, config.

use serde_json::{Value, json};

use super::shapes::{all, array, opt, string, uint, wallet};

fn totals() -> Value {
    all(json!({
        "calls": uint(), "errors": uint(), "credits": uint(), "prompt_tokens": uint(),
        "completion_tokens": uint(),
    }))
}

/// One model's or key's series: its total and its credits and calls per bucket.
fn series(name: &str, extra: Option<(&str, Value)>) -> Value {
    let mut p = json!({"total": totals(), "credits": array(uint()), "calls": array(uint())});
    p[name] = opt(string());
    if let Some((k, v)) = extra {
        p[k] = v;
    }
    all(p)
}

/// The component schemas the console routes answer with.
pub fn schemas() -> Vec<(&'static str, Value)> {
    let config_section = json!({"type": "object"});
    vec![
        (
            "UsageSummary",
            all(json!({
                "wallet_address": wallet(), "bucket": {"enum": ["hour", "day"]},
                "bucket_seconds": uint(), "from": uint(), "to": uint(), "hourly_from": uint(),
                "starts": array(uint()), "buckets": array(totals()), "total": totals(),
                "by_model": array(series("model", None)),
                "by_key": array(series("key_id", Some(("key_name", opt(string()))))),
            })),
        ),
        (
            "AdminStats",
            all(json!({
                "at_ms": uint(), "uptime_seconds": uint(),
                "requests": all(json!({
                    "total": uint(), "server_errors": uint(),
                    "by_class": {"type": "object", "additionalProperties": uint()},
                })),
                "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                "latency_ms": all(json!({
                    "p50": opt(json!({"type": "number"})), "p99": opt(json!({"type": "number"})),
                    "sum": {"type": "number"},
                })),
                "latency_buckets": array(all(json!({
                    "le": {"anyOf": [{"type": "number"}, {"const": "+Inf"}]}, "count": uint(),
                }))),
                "streams_in_flight": uint(), "credits_held": uint(), "open_holds": uint(),
                "effects_running": uint(), "wallets_with_history": uint(),
            })),
        ),
        (
            "TopWallets",
            all(json!({
                "wallets": array(all(json!({
                    "wallet": wallet(), "spent": uint(), "calls": uint(), "errors": uint(),
                    "prompt_tokens": uint(), "completion_tokens": uint(), "topped_up": uint(),
                    "granted": uint(), "refunded": uint(), "credits": uint(), "held": uint(),
                    "available": uint(), "last_ts_ms": uint(),
                }))),
                "credits_held": uint(), "tracked_wallets": uint(),
            })),
        ),
        (
            "AdminConfig",
            all(json!({
                "server": config_section, "store": config_section, "upstream": config_section,
                "billing": config_section, "auth": config_section, "limits": config_section,
                "x402": config_section, "memory": config_section, "agents": config_section,
                "media": config_section,
            })),
        ),
    ]
}
