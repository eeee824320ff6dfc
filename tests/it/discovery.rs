//! Discovery documents: generated from the route table and the live config, served with the right
//! content types and ETags, and complete with respect to the Vectorway reference.

use http::{Method, StatusCode};
use serde_json::Value;
use vectorway::api::ROUTES;

use crate::harness::{Env, fast_knobs};

/// Every endpoint of the Vectorway reference (seeds 000, the llms.txt, and 002, the full
/// reference, list the same sixteen).
const REFERENCE: &[(&str, &str)] = &[
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/auth/agent-onboard"),
    ("POST", "/v1/auth/siwe/challenge"),
    ("POST", "/v1/auth/siwe/verify"),
    ("POST", "/v1/auth/refresh"),
    ("POST", "/v1/auth/revoke"),
    ("GET", "/v1/me"),
    ("GET", "/v1/usage"),
    ("POST", "/v1/credits/purchase"),
    ("GET", "/v1/credits/me"),
    ("GET", "/v1/credits/ledger"),
    ("POST", "/v1/api-keys"),
    ("GET", "/v1/api-keys"),
    ("DELETE", "/v1/api-keys/{key_id}"),
    ("GET", "/v1/memory"),
    ("DELETE", "/v1/memory/{memory_id}"),
];

/// The documents the reference's llms.txt (seed 000) links, served by the gateway itself. Its
/// one other link, `https://vectorway.io/sitemap.xml`, is a page of the marketing site, not of
/// the API, and is not served here.
const RESOURCES: &[&str] = &[
    "/skill.md",
    "/llms-full.txt",
    "/docs.md",
    "/openapi.json",
    "/docs",
    "/status",
];

/// The seed documents, beside the repository (`../shared/seeds`, there in CI).
const SEEDS: &[&str] = &["000_f02bdd92edd74e49.txt", "002_7b50ecc814aad377.txt"];

#[test]
fn the_reference_lists_here_cover_the_seed_documents() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seeds");
    for seed in SEEDS {
        let Ok(text) = std::fs::read_to_string(dir.join(seed)) else {
            eprintln!(
                "note: {seed} not found under {}; checked the lists alone",
                dir.display()
            );
            continue;
        };
        let mut endpoints = 0;
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            for (i, _) in text.match_indices(&format!("`{method} /")) {
                let path: String = text[i + method.len() + 2..]
                    .chars()
                    .take_while(|c| *c != '`')
                    .collect();
                assert!(
                    REFERENCE.contains(&(method, path.as_str())),
                    "{seed}: `{method} {path}` is not in REFERENCE"
                );
                endpoints += 1;
            }
        }
        assert!(
            endpoints >= REFERENCE.len(),
            "{seed}: only {endpoints} endpoints found"
        );
        for (i, _) in text.match_indices("https://vectorway.io/") {
            let path: String = text[i + "https://vectorway.io".len()..]
                .chars()
                .take_while(|c| !matches!(c, ')' | ' ' | '`' | '"' | '\n'))
                .collect();
            let path = path.trim_end_matches(['.', ',']);
            assert!(
                RESOURCES.contains(&path) || path == "/sitemap.xml",
                "{seed}: link {path} is not in RESOURCES"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_served_with_types_and_etags() {
    let env = Env::start().await;
    for (path, ty) in [
        ("/llms.txt", "text/plain"),
        ("/llms-full.txt", "text/markdown"),
        ("/docs.md", "text/markdown"),
        ("/skill.md", "text/markdown"),
        ("/openapi.json", "application/json"),
        ("/docs", "text/html"),
    ] {
        let res = env.send(Method::GET, path, &[], "").await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        assert!(
            res.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ty),
            "{path}"
        );
        let etag = res.headers["etag"].to_str().unwrap().to_string();
        let again = env
            .send(Method::GET, path, &[("if-none-match", &etag)], "")
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
    }
    let full = env.send(Method::GET, "/llms-full.txt", &[], "").await.body;
    assert_eq!(
        full,
        env.send(Method::GET, "/docs.md", &[], "").await.body,
        "the alias is identical"
    );
    let skill = String::from_utf8(
        env.send(Method::GET, "/skill.md", &[], "")
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(skill.starts_with("---\nname: vectorway\ndescription: "));
    let html =
        String::from_utf8(env.send(Method::GET, "/docs", &[], "").await.body.to_vec()).unwrap();
    // Rendered HTML whose script and stylesheet are the binary's own (tests/it/docs_html.rs).
    assert!(html.contains("<h2 id=\"authentication\">Authentication</h2>"));
    assert!(
        html.split("src=\"")
            .skip(1)
            .all(|s| s.starts_with("/assets/")),
        "self-contained"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_matches_the_router_and_covers_the_reference() {
    let env = Env::start().await;
    let spec: Value = env.send(Method::GET, "/openapi.json", &[], "").await.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().unwrap();
    let mut in_spec = std::collections::HashSet::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            in_spec.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: std::collections::HashSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(
        in_spec, served,
        "the spec names exactly the routes the router serves"
    );
    for scheme in ["x402", "x402v1", "apiKey", "apiKeyBearer", "jwt"] {
        assert!(
            spec["components"]["securitySchemes"][scheme].is_object(),
            "{scheme}"
        );
    }
    let llms = String::from_utf8(
        env.send(Method::GET, "/llms.txt", &[], "")
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    let resources = RESOURCES.iter().map(|p| ("GET", *p));
    for (method, path) in REFERENCE.iter().copied().chain(resources) {
        assert!(
            in_spec.contains(&(method.to_string(), path.to_string())),
            "{method} {path} missing from openapi.json"
        );
        assert!(
            llms.contains(&format!("`{method} {path}`")),
            "{method} {path} missing from llms.txt"
        );
    }
    env.stop().await;
}

/// The documents `documents_follow_the_live_config` reads, by path.
const DOCUMENTS: &[&str] = &[
    "/llms.txt",
    "/llms-full.txt",
    "/docs.md",
    "/skill.md",
    "/openapi.json",
    "/docs",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_follow_the_live_config() {
    const PAY_TO: &str = "0x1234567890AbcdEF1234567890aBcdef12345678";
    const BASE: &str = "https://agents.vectorway.example";
    let env = Env::with_knobs(fast_knobs(), |c| {
        let mut raw = vectorway::config::RawConfig::default();
        raw.models.get_mut("gemini-2.5-flash").unwrap().input_per_m = "0.77".into();
        raw.limits.runtime_per_min = 4321;
        raw.x402.pay_to = PAY_TO.into();
        raw.x402.networks = vec!["base-sepolia".into(), "base".into()].into();
        raw.x402.facilitator_url = "https://facilitator.vectorway.example".into();
        raw.server.body_limit_bytes = 654_321;
        raw.server.public_base_url = format!("{BASE}/");
        let other = raw.validate().unwrap();
        c.prices = other.prices;
        c.limits = other.limits;
        c.x402.pay_to = other.x402.pay_to;
        c.x402.networks = other.x402.networks;
        c.body_limit = other.body_limit;
        c.public_base_url = other.public_base_url;
    })
    .await;
    let base_usdc = vectorway::config::known_network("base").unwrap().asset;
    let base_usdc = vectorway::crypto::to_checksum(&base_usdc);
    // Documents write addresses in their EIP-55 form.
    let pay_to = vectorway::crypto::to_checksum(&PAY_TO.parse().unwrap());
    for path in DOCUMENTS {
        let res = env.send(Method::GET, path, &[], "").await;
        assert_eq!(res.status, StatusCode::OK, "{path}");
        let text = String::from_utf8(res.body.to_vec()).unwrap();
        // $0.77 × 1.2 = $0.924 = 924,000 credits per 1M tokens.
        assert!(
            text.contains("0.924000"),
            "{path} shows the configured price"
        );
        assert!(
            text.contains("4321"),
            "{path} shows the configured rate limit"
        );
        assert!(text.contains(&pay_to), "{path} shows the configured payTo");
        assert!(
            text.contains("eip155:8453") && text.contains(&base_usdc),
            "{path} shows the configured network and its asset"
        );
        assert!(
            text.contains("654321"),
            "{path} shows the configured body cap"
        );
        assert!(
            text.contains(BASE) && !text.contains("http://127.0.0.1"),
            "{path} shows the configured public base URL and no other"
        );
    }
    // The spec carries the same terms in fields a client reads without parsing prose.
    let spec: Value = env.send(Method::GET, "/openapi.json", &[], "").await.json();
    assert_eq!(spec["servers"][0]["url"], BASE);
    let flash = spec["x-vectorway-pricing"]["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "gemini-2.5-flash")
        .unwrap();
    assert_eq!(flash["inputUsdPer1M"], "0.924000");
    assert_eq!(flash["inputCreditsPer1M"], 924_000);
    assert_eq!(spec["x-vectorway-x402"]["payTo"], pay_to.as_str());
    let networks: Vec<&str> = spec["x-vectorway-x402"]["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["network"].as_str().unwrap())
        .collect();
    assert_eq!(networks, ["eip155:84532", "eip155:8453"]);
    assert_eq!(spec["x-vectorway-limits"]["bodyLimitBytes"], 654_321);
    let model = &spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"]["properties"]["model"];
    assert!(
        model["description"]
            .as_str()
            .unwrap()
            .contains("`gemini-2.5-flash`: input $0.924000"),
        "the model field names each model's price: {model}"
    );
    env.stop().await;
}

/// `/llms.txt` (and the full reference) name every credential by its header, as the reference's
/// own `llms.txt` does, and each mode lists exactly the routes that take it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llms_txt_names_the_payment_headers_and_auth_modes() {
    use vectorway::api::Access;
    let env = Env::start().await;
    for path in ["/llms.txt", "/llms-full.txt"] {
        let text =
            String::from_utf8(env.send(Method::GET, path, &[], "").await.body.to_vec()).unwrap();
        assert!(text.contains("## Authentication"), "{path}");
        let bullet = |mode: &str| -> String {
            text.lines()
                .find(|l| l.starts_with(&format!("- **{mode}")))
                .unwrap_or_else(|| panic!("{path} has no {mode} bullet:\n{text}"))
                .to_string()
        };
        let x402 = bullet("x402");
        for header in [
            "`PAYMENT-SIGNATURE`",
            "`X-PAYMENT`",
            "`PAYMENT-REQUIRED`",
            "`PAYMENT-RESPONSE`",
            "`X-PAYMENT-RESPONSE`",
        ] {
            assert!(x402.contains(header), "{path}: {header} in {x402}");
        }
        let key = bullet("API key");
        assert!(key.contains("`x-api-key: vw_") && key.contains("`Authorization: Bearer vw_"));
        let jwt = bullet("JWT");
        assert!(jwt.contains("`Authorization: Bearer <JWT>`"), "{jwt}");
        let siwe = bullet("SIWE message");
        assert!(bullet("MCP").contains("x402/payment"));
        assert!(text.contains("`ambiguous_payment`"), "{path}");
        // Each mode's route list is the route table's, not a hand-kept copy.
        for r in ROUTES.iter().filter(|r| r.path.starts_with("/v1/")) {
            let named = format!("`{} {}`", r.method, r.path);
            let takes = [
                (&x402, matches!(r.access, Access::Payer | Access::X402)),
                (
                    &key,
                    matches!(
                        r.access,
                        Access::Payer | Access::ApiKey | Access::KeyOrJwt | Access::KeyJwtOrSiwe
                    ),
                ),
                (
                    &jwt,
                    matches!(
                        r.access,
                        Access::Jwt | Access::KeyOrJwt | Access::KeyJwtOrSiwe
                    ),
                ),
                (
                    &siwe,
                    matches!(r.access, Access::Siwe | Access::KeyJwtOrSiwe),
                ),
            ];
            for (line, expected) in takes {
                assert_eq!(
                    line.contains(&format!("{named},")) || line.ends_with(&format!("{named}.")),
                    expected,
                    "{path}: {named} ({:?}) in {line}",
                    r.access
                );
            }
        }
    }
    env.stop().await;
}
