//! Self-description for agents, generated at start-up from the route table and the live config:
//! `/llms.txt`, `/llms-full.txt` (= `/docs.md`), `/skill.md`, `/openapi.json` and `/docs`
//! (the same markdown rendered to HTML by `discovery::html`).
//!
//! Nothing here is hand-copied: every endpoint listed comes from `ROUTES`, every price from the
//! price table, every network and `payTo` from the x402 config, every limit from the limits
//! config. Each document carries a strong `ETag` (SHA-256 of its bytes).

use http::header::{CACHE_CONTROL, ETAG, HeaderValue, IF_NONE_MATCH};
use http::{HeaderMap, Response, StatusCode};

mod html;

use super::assets;
use super::describe::{GROUPS, auth_text, base_url, example, group, notes};
use super::routes::{Access, ROUTES, Route};
use crate::billing::pricing::format_usd_micros;
use crate::config::Config;
use crate::http::{Body, bytes_response, empty};

/// One generated document.
pub struct Doc {
    pub body: String,
    pub etag: HeaderValue,
    pub content_type: &'static str,
}

/// Every document, built once.
pub struct Docs {
    pub llms: Doc,
    pub full: Doc,
    pub skill: Doc,
    pub openapi: Doc,
    pub html: Doc,
}

fn doc(body: String, content_type: &'static str) -> Doc {
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    let etag = HeaderValue::from_str(&format!("\"{}\"", &hex::encode(digest.as_ref())[..32]))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    Doc {
        body,
        etag,
        content_type,
    }
}

fn price_lines(c: &Config) -> String {
    let mut s = String::new();
    for m in c.prices.all() {
        s.push_str(&format!(
            "- `{}` (also `{}`): input ${} / output ${} per 1M tokens ({} / {} credits)\n",
            m.id,
            m.aliases.join("`, `"),
            format_usd_micros(m.input),
            format_usd_micros(m.output),
            m.input,
            m.output
        ));
    }
    s
}

fn network_lines(c: &Config) -> String {
    c.x402
        .networks
        .iter()
        .map(|n| {
            format!(
                "- `{}` (`{}`): USDC `{}` (EIP-712 name \"{}\", version \"{}\")\n",
                n.name,
                n.caip2,
                crate::crypto::to_checksum(&n.asset),
                n.eip712_name,
                n.eip712_version
            )
        })
        .collect()
}

fn documented() -> impl Iterator<Item = (&'static str, &'static Route)> {
    GROUPS.iter().flat_map(|g| {
        ROUTES
            .iter()
            .filter(move |r| group(r.id) == Some(*g))
            .map(move |r| (*g, r))
    })
}

/// The documented routes whose access accepts a credential, as "`METHOD /path`, …".
fn routes_taking(accepts: impl Fn(Access) -> bool) -> String {
    let list: Vec<String> = documented()
        .filter(|(_, r)| accepts(r.access))
        .map(|(_, r)| format!("`{} {}`", r.method, r.path))
        .collect();
    list.join(", ")
}

/// The `## Authentication` section: every credential by header name, and where it is taken.
fn authentication() -> String {
    use Access::*;
    format!(
        "## Authentication\n\n\
         - **x402 (pay per call, no account)**: header `PAYMENT-SIGNATURE` (x402 v2) or `X-PAYMENT` (x402 v1), carrying a base64 `PaymentPayload` that signs an EIP-3009 `TransferWithAuthorization` of USDC for the quoted amount; the wallet is the payment's signer. Unpaid, these routes answer 402 with the price: `accepts` in the JSON body (v1) and the `PAYMENT-REQUIRED` header (v2). The receipt comes back in `PAYMENT-RESPONSE` (v2) or `X-PAYMENT-RESPONSE` (v1). Taken by {x402}.\n\
         - **API key (prepaid credits)**: header `x-api-key: vw_<id>_<secret>` or `Authorization: Bearer vw_<id>_<secret>`; debits the credits of the wallet that owns the key. Taken by {key}.\n\
         - **JWT (SIWE session)**: header `Authorization: Bearer <JWT>`, from signing the message of `POST /v1/auth/siwe/challenge` and posting it to `POST /v1/auth/siwe/verify`; `POST /v1/auth/refresh` rotates it. Taken by {jwt}.\n\
         - **SIWE message (agent-router)**: a signed SIWE `message` and `signature` in the body, or in the query for GET. Taken by {siwe}.\n\
         - **MCP**: on `POST /mcp`, `initialize` and `tools/list` need nothing; `tools/call` needs the credentials of the REST route the tool stands for, and the `chat` tool may instead be paid with an x402 `PaymentPayload` in `params._meta[\"x402/payment\"]`. `chat` takes `tools`, `tool_choice`, `parallel_tool_calls`, `response_format` and `reasoning_effort` like the REST route; function calls come back in `structuredContent.tool_calls`.\n\
         - One credential per request: an API key with an x402 payment, or two different keys, is 400 `ambiguous_payment`.\n\n",
        x402 = routes_taking(|a| matches!(a, Payer | X402)),
        key = routes_taking(|a| matches!(a, Payer | ApiKey | KeyOrJwt | KeyJwtOrSiwe)),
        jwt = routes_taking(|a| matches!(a, Jwt | KeyOrJwt | KeyJwtOrSiwe)),
        siwe = routes_taking(|a| matches!(a, Siwe | KeyJwtOrSiwe)),
    )
}

fn conventions(c: &Config) -> String {
    format!(
        "- Base URL: `{base}`\n- `POST /v1/chat/completions` (and `POST /v1/responses`, the Responses API on the same pipeline) is dual-auth: an x402 payment pays per call in USDC with no account; an API key debits prepaid credits. Streaming works on both.\n- Credits: 1 credit = 1 atomic USDC = $0.000001. A call costs ceil((prompt·input + completion·output) / 1e6) credits, completion including thinking. x402 quotes the worst case (prompt ≤ UTF-8 bytes + 16 per message, plus `k` memories of up to 32 KiB each when `memory_read` is on — send `\"memory_read\": false` or a small `k` for a lower quote; completion ≤ `max_tokens`, default {max}), floored at {min} credits; the change is credited to the payer as a refund. An API key's hold grows by the memories actually recalled. A stream cut short or left after Gemini answered pays the prompt and what was generated.\n- Media in user messages: `image_url` parts with a base64 `data:` URL (PNG, JPEG, WebP, HEIC, HEIF) or an `https://` URL the gateway fetches (public addresses only; size cap, time-out, re-checked redirects), `input_audio` (wav, mp3) and `file` parts with a PDF `file_data`. They count in the price by Gemini's rules: 258 tokens per image up to 384 px, else per 768×768 tile (at least 1120 on Gemini 3), 32 per second of audio, a PDF at 1000 pages. A refused part is a 400 naming it (`image_url_forbidden`, `image_too_large`, `image_fetch_failed`, `unsupported_media_type`, `invalid_content_part`), before anything is charged.\n- Errors: OpenAI shape `{{\"error\":{{\"message\",\"type\",\"param\",\"code\"}}}}` with stable codes; 400 bad input or both payment kinds, 401 auth, 402 payment required or credits exhausted, 403 wallet mismatch, 404 not found, 409 replay or idempotency conflict, 408 body not received within {read_s} s, 413 body over {body} bytes ({chat_body} on chat, responses and MCP, room for media), 422 validation, 429 rate limits (`Retry-After`), 5xx upstream.\n- Rate limits per wallet: {rt} runtime requests/min (chat, memory, embeddings), {ct} control-plane requests/min. Requests without an API key or token (public routes, sign-in, x402, MCP): {ip} per minute per client IP, bursts of {burst}. Agent registrations: {reg} per minute per client IP.\n- `Idempotency-Key` on POSTs that create or move money.\n- x402 networks (payTo `{payto}`):\n{nets}",
        base = base_url(c),
        max = c.default_max_tokens,
        min = c.x402.min_quote,
        body = c.body_limit,
        chat_body = c.chat_body_limit(),
        read_s = c.body_read_timeout.as_secs(),
        rt = c.limits.runtime_per_min,
        ct = c.limits.control_per_min,
        ip = c.limits.ip_per_min,
        burst = c.limits.ip_burst,
        reg = c.agents.register_per_min,
        payto = crate::crypto::to_checksum(&c.x402.pay_to),
        nets = network_lines(c),
    )
}

fn llms_txt(c: &Config) -> String {
    let base = base_url(c);
    let mut s = format!(
        "# Vectorway\n\n> Vectorway is the agentic memory LLM gateway: OpenAI-compatible chat completions over Gemini with built-in wallet-scoped vector memory. `POST /v1/chat/completions` is dual-auth — pay per call with an x402 payment (no account) or use an API key against prepaid credits.\n\n## Primary docs\n\n- [Agent Skill]({base}/skill.md): a one-page playbook with YAML frontmatter.\n- [API reference (markdown)]({base}/llms-full.txt): every endpoint with examples.\n- [API reference (markdown alias)]({base}/docs.md): the same as llms-full.txt.\n- [OpenAPI 3.1 spec]({base}/openapi.json): machine-readable schema.\n- [Human docs]({base}/docs): the reference as one HTML page.\n\n{auth}## Endpoints\n",
        auth = authentication()
    );
    let mut last = "";
    for (g, r) in documented() {
        if g != last {
            s.push_str(&format!("\n### {g}\n\n"));
            last = g;
        }
        s.push_str(&format!("- `{} {}` — {}\n", r.method, r.path, r.summary));
    }
    s.push_str(&format!(
        "\n## Models and prices\n\n{}\n## Conventions\n\n{}",
        price_lines(c),
        conventions(c)
    ));
    s
}

/// Agent accounts: registration without a wallet, the deposit deadline, funding, the aliases.
fn agent_accounts(c: &Config) -> String {
    let a = &c.agents;
    let minutes = u64::try_from(a.deposit_deadline.as_millis())
        .unwrap_or(u64::MAX)
        .div_ceil(60_000);
    format!(
        "## Agent accounts (LLM-for-Agents)\n\n- `POST /api/v1/agents/register {{\"name\": \"my-agent\"}}` (1 to 100 characters, no wallet, no credentials) answers 201 with `uuid`, `apiKey` (a `vw_…` key, shown once), `name`, `createdAt`, `requestId`, `depositDeadline`, `depositRequiredWithinMinutes` ({minutes}), `notice`, and `account` (the agent's account id, `0x…`, used wherever the API names a wallet) and `keyId`. {reg} registrations per minute per client IP (429 `rate_limited`); at most {max} agents may wait for their first deposit at once (503 `agent_capacity_reached` with `Retry-After`).\n- **Deposit within {minutes} minutes or the agent is deleted** (its key, history and memory): the sweeper runs every {every} s, so the agent lives between the deadline and one sweep more. The first credit of any amount makes it permanent.\n- Fund it from any wallet with x402: `POST /v1/topup {{\"amount\": <USD 1–1000>, \"agent\": \"<uuid or account>\"}}` (or `POST /v1/credits/purchase {{\"agent\", \"credits\"}}`); the agent is credited, not the payer. A top-up naming a deleted agent is 404 `agent_not_found` before any payment is taken.\n- The agent's key works everywhere a wallet's key does: chat (with memory), `/v1/memory`, `/v1/embeddings`, `/v1/usage`, `/v1/credits/*`, MCP. Each account sees only its own data.\n- `GET /api/v1/balance`, `GET /api/v1/transactions?limit=&offset=&type=` and `GET /api/v1/models` take `Authorization: Bearer <key>` (an agent's or a wallet's key, or a wallet's JWT). Transaction types: `deposit` (x402 money in), `charge` (calls), `grant` (operator), `refund` (x402 change). Errors keep the OpenAI envelope; on these routes a missing credential is `missing_api_key`, an unknown key `invalid_api_key`.\n\n",
        reg = a.register_per_min,
        max = a.max_unfunded,
        every = a.sweep_interval.as_secs_f64(),
    )
}

fn llms_full(c: &Config) -> String {
    let mut s = format!(
        "# Vectorway API Reference\n\nGenerated from the running gateway's route table and configuration.\n\n{}## Conventions\n\n{}\n## Models and prices\n\n{}\n{}",
        authentication(),
        conventions(c),
        price_lines(c),
        agent_accounts(c)
    );
    let mut last = "";
    for (g, r) in documented() {
        if g != last {
            s.push_str(&format!("\n---\n\n## {g}\n"));
            last = g;
        }
        s.push_str(&format!(
            "\n### `{} {}`\n\n**{}**\n\n- Auth: {}\n",
            r.method,
            r.path,
            r.summary,
            auth_text(r.access)
        ));
        if r.idempotent {
            s.push_str("- Honours `Idempotency-Key`.\n");
        }
        if let Some(n) = notes(r.id) {
            s.push_str(&format!("\n{n}\n"));
        }
        if let Some(ex) = example(r.id) {
            s.push_str(&format!("\n**Request body**\n\n```json\n{ex}\n```\n"));
        }
        let curl_body = example(r.id)
            .map(|e| format!(" \\\n  -H \"Content-Type: application/json\" \\\n  -d '{e}'"))
            .unwrap_or_default();
        s.push_str(&format!(
            "\n```bash\ncurl -X {} {}{}{}\n```\n",
            r.method,
            base_url(c),
            r.path,
            curl_body
        ));
    }
    s
}

fn skill_md(c: &Config) -> String {
    let base = base_url(c);
    format!(
        "---\nname: vectorway\ndescription: Call Gemini through an OpenAI-compatible gateway that agents pay per call with x402 (USDC on Base) or with prepaid credits, with wallet-scoped vector memory. Use when an agent needs LLM completions it can pay for itself.\n---\n\n# Vectorway playbook\n\n1. **Discover the price.** `POST {base}/v1/chat/completions` with your OpenAI-style body and no credentials. The 402 answer lists `accepts` (v1 body) and a `PAYMENT-REQUIRED` header (v2): scheme `exact`, USDC, payTo, and the amount in atomic USDC.\n2. **Pay.** Either sign an EIP-3009 `TransferWithAuthorization` for that amount and retry with `X-PAYMENT` (v1) or `PAYMENT-SIGNATURE` (v2) — any x402 client does this — or onboard once: `POST {base}/v1/auth/agent-onboard` with x402 and `{{\"wallet_address\",\"credits\"}}` to get credits, a JWT pair and an API key.\n3. **Chat.** With an API key: `x-api-key: vw_…` (or point the OpenAI SDK at `{base}/v1`). Add `\"stream\": true` for SSE. The x402 path returns a receipt (`X-PAYMENT-RESPONSE`, or `event: x402-receipt` after `[DONE]`). Agents that speak the Responses API (the OpenAI Agents SDK's default model) use `POST {base}/v1/responses` the same way; it is stateless, so send the whole conversation in `input`.\n4. **Agent work.** Send `tools` (JSON Schema functions) and run your tool loop as with OpenAI: the calls arrive in `tool_calls`; send the assistant message back unchanged (Gemini 3 thought signatures ride in `extra_content`) with one `tool` message per call. `response_format: {{\"type\":\"json_schema\",…}}` gets JSON that fits your schema; images go in `image_url` parts (data URLs, or public https URLs the gateway fetches).\n5. **Use memory.** Chats read (`memory_read`) and write (`memory_write`) your wallet's memory by default; search it with `GET {base}/v1/memory?q=…&k=5` and delete with `DELETE {base}/v1/memory/{{id}}`.\n6. **No wallet of your own?** `POST {base}/api/v1/agents/register {{\"name\":\"my-agent\"}}` gives an agent account and an API key (shown once). Have any x402 payer fund it within {minutes} minutes with `POST {base}/v1/topup {{\"amount\":1,\"agent\":\"<uuid>\"}}`, or it is deleted; the first deposit makes it permanent. `GET {base}/api/v1/balance` and `GET {base}/api/v1/transactions` show its money.\n\nModels:\n{prices}\nPayment (x402, scheme `exact`): payTo `{payto}`, at least {min} atomic USDC a call, on:\n{nets}\nLimits: {rt} runtime and {ct} control requests per minute per wallet; bodies up to {body} bytes ({chat_body} on chat and responses, for media). Full reference: {base}/llms-full.txt\n",
        prices = price_lines(c),
        payto = crate::crypto::to_checksum(&c.x402.pay_to),
        min = c.x402.min_quote,
        nets = network_lines(c),
        rt = c.limits.runtime_per_min,
        ct = c.limits.control_per_min,
        body = c.body_limit,
        chat_body = c.chat_body_limit(),
        minutes = u64::try_from(c.agents.deposit_deadline.as_millis())
            .unwrap_or(u64::MAX)
            .div_ceil(60_000),
    )
}

impl Docs {
    pub fn build(c: &Config) -> Self {
        let full = llms_full(c);
        Self {
            llms: doc(llms_txt(c), "text/plain; charset=utf-8"),
            html: doc(html::render(&full), "text/html; charset=utf-8"),
            full: doc(full, "text/markdown; charset=utf-8"),
            skill: doc(skill_md(c), "text/markdown; charset=utf-8"),
            openapi: doc(super::openapi::document(c), "application/json"),
        }
    }
}

/// Serves a document, answering `If-None-Match` with 304.
pub fn serve(d: &Doc, headers: &HeaderMap) -> Response<Body> {
    if headers.get(IF_NONE_MATCH).is_some_and(|v| v == d.etag) {
        let mut res = Response::new(empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res.headers_mut().insert(ETAG, d.etag.clone());
        return res;
    }
    let mut res = bytes_response(
        StatusCode::OK,
        HeaderValue::from_static(d.content_type),
        d.body.clone(),
    );
    res.headers_mut().insert(ETAG, d.etag.clone());
    res.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    if d.content_type.starts_with("text/html") {
        assets::harden(res.headers_mut());
    }
    res
}
