//! The route table: the one declaration of every served route, read by dispatch, docs and tests.

use http::Method;

use crate::error::RequestError;
use crate::ratelimit::RateClass;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// A paying caller: an API key (x402 lands on the same routes).
    Payer,
    /// An API key (runtime plane).
    ApiKey,
    /// A session JWT (control plane).
    Jwt,
    /// An API key or a session JWT.
    KeyOrJwt,
    /// An x402 payment header, verified by the handler (money in).
    X402,
    /// A SIWE message and signature in the body or query, checked by the handler (agent-router).
    Siwe,
    /// An API key, a JWT, or a SIWE message in the query (agent-router usage).
    KeyJwtOrSiwe,
    /// The operator, with `X-Admin-Secret` (or `Authorization: Bearer <secret>`).
    Admin,
    /// MCP: the handshake is open; each tool call re-enters the REST route it stands for, which
    /// authenticates it as that route does.
    Mcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Health,
    Healthz,
    Readyz,
    Status,
    Metrics,
    Models,
    Chat,
    Responses,
    Mcp,
    SiweChallenge,
    SiweVerify,
    Refresh,
    Revoke,
    Me,
    CreditsMe,
    Ledger,
    Usage,
    ApiKeyCreate,
    ApiKeyList,
    ApiKeyRevoke,
    AuthKeysCreate,
    AuthKeysList,
    AuthKeysRevoke,
    UsageWallet,
    AdminGrant,
    AdminCreateKey,
    AdminBalance,
    AgentOnboard,
    CreditsPurchase,
    Topup,
    MemorySearch,
    MemoryNamespaces,
    MemoryList,
    MemoryDelete,
    Embeddings,
    LlmsTxt,
    LlmsFull,
    DocsMd,
    SkillMd,
    OpenApi,
    DocsHtml,
    Assets,
    AgentRegister,
    AgentBalance,
    AgentTransactions,
    AgentModels,
    UsageSummary,
    AdminStats,
    AdminTopWallets,
    AdminConfig,
    Console,
}

#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub id: RouteId,
    pub method: &'static str,
    pub path: &'static str,
    pub access: Access,
    pub class: RateClass,
    /// `Idempotency-Key` is honoured (POSTs that create or move money).
    pub idempotent: bool,
    /// Metric label and log name.
    pub name: &'static str,
    pub summary: &'static str,
}

const fn r(
    id: RouteId,
    method: &'static str,
    path: &'static str,
    access: Access,
    class: RateClass,
    name: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        id,
        method,
        path,
        access,
        class,
        idempotent: false,
        name,
        summary,
    }
}

const fn idem(route: Route) -> Route {
    Route {
        idempotent: true,
        ..route
    }
}

use Access::*;
use RateClass::{Control, Runtime};
use RouteId as R;

#[rustfmt::skip]
pub const ROUTES: &[Route] = &[
    r(R::Health, "GET", "/health", Public, RateClass::None, "health", "Liveness."),
    r(R::Healthz, "GET", "/healthz", Public, RateClass::None, "healthz", "Liveness (Kubernetes spelling)."),
    r(R::Readyz, "GET", "/readyz", Public, RateClass::None, "readyz", "Readiness: store and upstream usable."),
    r(R::Status, "GET", "/status", Public, RateClass::None, "status", "Store and upstream status."),
    r(R::Metrics, "GET", "/metrics", Admin, RateClass::None, "metrics", "Prometheus metrics (operator)."),
    r(R::Models, "GET", "/v1/models", Public, RateClass::None, "models", "Models with per-1M-token prices."),
    r(R::Chat, "POST", "/v1/chat/completions", Payer, Runtime, "chat", "OpenAI-compatible chat completions, billed per token."),
    r(R::Responses, "POST", "/v1/responses", Payer, Runtime, "responses", "The OpenAI Responses API (stateless), on the chat pipeline and its billing."),
    r(R::Mcp, "POST", "/mcp", Mcp, RateClass::None, "mcp", "MCP Streamable HTTP (stateless, JSON responses): tools chat, memory_search, memory_delete, credits_balance, usage_recent."),
    r(R::SiweChallenge, "POST", "/v1/auth/siwe/challenge", Public, RateClass::None, "siwe_challenge", "Generate a SIWE challenge message."),
    r(R::SiweVerify, "POST", "/v1/auth/siwe/verify", Public, RateClass::None, "siwe_verify", "Verify a signed SIWE message; returns JWTs."),
    r(R::Refresh, "POST", "/v1/auth/refresh", Public, RateClass::None, "refresh", "Rotate a refresh token."),
    r(R::Revoke, "POST", "/v1/auth/revoke", Public, RateClass::None, "revoke", "Revoke a refresh token's session."),
    r(R::Me, "GET", "/v1/me", KeyOrJwt, Control, "me", "The caller's account."),
    r(R::CreditsMe, "GET", "/v1/credits/me", KeyOrJwt, Control, "credits_me", "The caller's credit balance."),
    r(R::Ledger, "GET", "/v1/credits/ledger", KeyOrJwt, Control, "ledger", "Credit movements, newest first."),
    r(R::Usage, "GET", "/v1/usage", KeyOrJwt, Control, "usage", "API call history, newest first."),
    idem(r(R::ApiKeyCreate, "POST", "/v1/api-keys", Jwt, Control, "api_key_create", "Create an API key (shown once).")),
    r(R::ApiKeyList, "GET", "/v1/api-keys", Jwt, Control, "api_key_list", "List the caller's active API keys."),
    r(R::ApiKeyRevoke, "DELETE", "/v1/api-keys/{key_id}", Jwt, Control, "api_key_revoke", "Revoke an API key."),
    idem(r(R::AuthKeysCreate, "POST", "/v1/auth/keys", Siwe, Control, "auth_keys_create", "Create an API key with a SIWE message (agent-router).")),
    r(R::AuthKeysList, "GET", "/v1/auth/keys", Siwe, Control, "auth_keys_list", "List API keys with a SIWE message (agent-router)."),
    r(R::AuthKeysRevoke, "DELETE", "/v1/auth/keys/{key_id}", Siwe, Control, "auth_keys_revoke", "Revoke an API key with a SIWE message (agent-router)."),
    r(R::UsageSummary, "GET", "/v1/usage/summary", KeyOrJwt, Control, "usage_summary", "The caller's spend per hour or day, in total, by model and by API key (from rollups)."),
    r(R::UsageWallet, "GET", "/v1/usage/{wallet}", KeyJwtOrSiwe, Control, "usage_wallet", "Balance, held credits and per-key usage (agent-router)."),
    r(R::LlmsTxt, "GET", "/llms.txt", Public, RateClass::None, "llms_txt", "Index of the API for LLMs and agents."),
    r(R::LlmsFull, "GET", "/llms-full.txt", Public, RateClass::None, "llms_full", "The full API reference (markdown)."),
    r(R::DocsMd, "GET", "/docs.md", Public, RateClass::None, "docs_md", "The full API reference (markdown alias)."),
    r(R::SkillMd, "GET", "/skill.md", Public, RateClass::None, "skill_md", "An Agent Skill: the one-page playbook."),
    r(R::OpenApi, "GET", "/openapi.json", Public, RateClass::None, "openapi", "OpenAPI 3.1 description of every route."),
    r(R::DocsHtml, "GET", "/docs", Public, RateClass::None, "docs_html", "The API reference as one HTML page."),
    r(R::Assets, "GET", "/assets/{file}", Public, RateClass::None, "assets", "Static files (CSS, JS) of the HTML pages, embedded in the binary."),
    r(R::MemorySearch, "GET", "/v1/memory", KeyOrJwt, Runtime, "memory_search", "Search the wallet's memories (no score floor); the query's embedding is billed per token."),
    r(R::MemoryNamespaces, "GET", "/v1/memory/namespaces", KeyOrJwt, Control, "memory_namespaces", "The wallet's memory namespaces, each with its record count and newest record's time."),
    r(R::MemoryList, "GET", "/v1/memory/records", KeyOrJwt, Control, "memory_list", "One namespace's memories, newest first, without a query (nothing is embedded or billed)."),
    r(R::MemoryDelete, "DELETE", "/v1/memory/{memory_id}", KeyOrJwt, Runtime, "memory_delete", "Delete a memory by id."),
    r(R::Embeddings, "POST", "/v1/embeddings", ApiKey, Runtime, "embeddings", "OpenAI-compatible embeddings (float or base64), billed per input token."),
    idem(r(R::AgentOnboard, "POST", "/v1/auth/agent-onboard", X402, RateClass::None, "agent_onboard", "Onboard with one x402 payment: account, credits, JWTs and an API key.")),
    idem(r(R::CreditsPurchase, "POST", "/v1/credits/purchase", X402, RateClass::None, "credits_purchase", "Buy credits with an x402 payment.")),
    idem(r(R::Topup, "POST", "/v1/topup", X402, RateClass::None, "topup", "Fund a wallet with USDC via x402, two steps (agent-router).")),
    idem(r(R::AdminGrant, "POST", "/admin/grant", Admin, RateClass::None, "admin_grant", "Grant credits to a wallet (operator).")),
    idem(r(R::AdminCreateKey, "POST", "/admin/keys", Admin, RateClass::None, "admin_keys", "Create an API key for a wallet (operator).")),
    r(R::AdminBalance, "GET", "/admin/balance", Admin, RateClass::None, "admin_balance", "A wallet's balance, held and available credits (operator)."),
    r(R::AdminStats, "GET", "/admin/stats", Admin, RateClass::None, "admin_stats", "Live counters: requests by status class, latency percentiles, streams in flight, credits held (operator)."),
    r(R::AdminTopWallets, "GET", "/admin/top-wallets", Admin, RateClass::None, "admin_top_wallets", "The wallets that spent the most credits, with their balances (operator)."),
    r(R::AdminConfig, "GET", "/admin/config", Admin, RateClass::None, "admin_config", "The configuration in force, every secret redacted (operator)."),
    r(R::Console, "GET", "/console", Public, RateClass::None, "console", "The web console (a single-page app for wallets and operators)."),
    r(R::AgentRegister, "POST", "/api/v1/agents/register", Public, RateClass::None, "agent_register", "Register a named agent account without a wallet; its API key is shown once. Unfunded by the deposit deadline, it is deleted."),
    r(R::AgentBalance, "GET", "/api/v1/balance", KeyOrJwt, Control, "agent_balance", "The caller's balance in credits and USD (LLM-for-Agents)."),
    r(R::AgentTransactions, "GET", "/api/v1/transactions", KeyOrJwt, Control, "agent_transactions", "The caller's credit movements, newest first, by limit, offset and type (LLM-for-Agents)."),
    r(R::AgentModels, "GET", "/api/v1/models", KeyOrJwt, Control, "agent_models", "Models with per-1M-token prices, as GET /v1/models (LLM-for-Agents, authenticated)."),
];

/// Matches `path` against a pattern with `{param}` segments; returns the captured params.
pub fn match_path<'p>(pattern: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let mut params = Vec::new();
    let mut pat = pattern.split('/');
    let mut got = path.split('/');
    loop {
        match (pat.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(p), Some(g)) if p.starts_with('{') && p.ends_with('}') && !g.is_empty() => {
                params.push(g)
            }
            (Some(p), Some(g)) if p == g => {}
            _ => return None,
        }
    }
}

/// The routes served at `path`, in table order. A literal path wins over a pattern: where a
/// route without `{param}` segments matches (`/v1/memory/namespaces`), the patterns that would
/// also match (`/v1/memory/{memory_id}`) are not served there, so `Allow` lists only its methods.
pub fn routes_at(path: &str) -> impl Iterator<Item = (&'static Route, Vec<&str>)> {
    let literal = ROUTES
        .iter()
        .any(|r| !r.path.contains('{') && r.path == path);
    ROUTES
        .iter()
        .filter(move |r| !literal || !r.path.contains('{'))
        .filter_map(move |r| match_path(r.path, path).map(|params| (r, params)))
}

/// Finds the route for a request: `Ok((route, params))`, or 404 / 405.
pub fn find_route<'p>(
    method: &Method,
    path: &'p str,
) -> Result<(&'static Route, Vec<&'p str>), RequestError> {
    let mut path_matched = false;
    for (route, params) in routes_at(path) {
        if route.method == method.as_str() {
            return Ok((route, params));
        }
        path_matched = true;
    }
    let (method, path) = (method.to_string(), path.to_string());
    Err(if path_matched {
        RequestError::MethodNotAllowed { method, path }
    } else {
        RequestError::NotFound { method, path }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_is_exact_and_deny_by_default() {
        assert_eq!(
            find_route(&Method::GET, "/v1/models").unwrap().0.id,
            RouteId::Models
        );
        assert!(matches!(
            find_route(&Method::POST, "/v1/models"),
            Err(RequestError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            find_route(&Method::GET, "/v1/models/"),
            Err(RequestError::NotFound { .. })
        ));
        assert!(matches!(
            find_route(&Method::GET, "/v1/nope"),
            Err(RequestError::NotFound { .. })
        ));
        assert_eq!(
            find_route(&Method::GET, "/v1/usage/0xabc").unwrap().0.id,
            RouteId::UsageWallet
        );
        assert_eq!(
            find_route(&Method::GET, "/v1/usage").unwrap().0.id,
            RouteId::Usage
        );
        assert_eq!(
            find_route(&Method::GET, "/v1/usage/summary").unwrap().0.id,
            RouteId::UsageSummary
        );
        assert_eq!(
            match_path("/v1/api-keys/{id}", "/v1/api-keys/abc"),
            Some(vec!["abc"])
        );
        assert_eq!(match_path("/v1/api-keys/{id}", "/v1/api-keys/"), None);
        // A literal path is not also a `{memory_id}`: DELETE there is 405, not a delete.
        assert!(matches!(
            find_route(&Method::DELETE, "/v1/memory/namespaces"),
            Err(RequestError::MethodNotAllowed { .. })
        ));
        assert_eq!(
            find_route(&Method::DELETE, "/v1/memory/0190").unwrap().0.id,
            RouteId::MemoryDelete
        );
        let at: Vec<_> = routes_at("/v1/memory/records")
            .map(|(r, _)| r.method)
            .collect();
        assert_eq!(at, ["GET"]);
        let public: Vec<_> = ROUTES
            .iter()
            .filter(|r| r.access == Access::Public)
            .map(|r| r.path)
            .collect();
        assert_eq!(
            public,
            [
                "/health",
                "/healthz",
                "/readyz",
                "/status",
                "/v1/models",
                "/v1/auth/siwe/challenge",
                "/v1/auth/siwe/verify",
                "/v1/auth/refresh",
                "/v1/auth/revoke",
                "/llms.txt",
                "/llms-full.txt",
                "/docs.md",
                "/skill.md",
                "/openapi.json",
                "/docs",
                "/assets/{file}",
                "/console",
                "/api/v1/agents/register"
            ]
        );
        let mut seen = std::collections::HashSet::new();
        assert!(
            ROUTES.iter().all(|r| seen.insert((r.method, r.path))),
            "no route is declared twice"
        );
    }
}
