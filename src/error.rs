//! The crate error: one enum per layer, wrapped here, mapped exhaustively to HTTP and OpenAI codes.
//!
//! Every error the client can see has a stable `code` string (DESIGN §10), a status, an OpenAI
//! `type` (derived from the status), and an origin (client, upstream, or internal) that decides
//! whether details are shown. `status` and `code` match every variant with no wildcard arm: a new
//! variant does not compile until it has a mapping.

use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

use crate::agents::AgentError;
use crate::auth::{AuthError, SiweError};
use crate::billing::BillingError;
use crate::memory::MemoryError;
use crate::payments::PaymentError;
use crate::ratelimit::RateLimited;
use crate::storage::StorageError;
use crate::upstream::UpstreamError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Problems with what the client sent, found before any domain logic runs.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error("request body exceeds the {limit}-byte limit")]
    BodyTooLarge { limit: usize },
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    Validation {
        param: Option<&'static str>,
        message: String,
    },
    /// A JSON Schema the model provider cannot take; `param` is the path to it.
    #[error("{message}")]
    Schema { param: String, message: String },
    /// A tool declaration, `tool_choice` or tool-call history that cannot be carried through;
    /// `param` is the path to it.
    #[error("{message}")]
    Tool { param: String, message: String },
    /// A parameter the gateway cannot honour and will not silently drop (stored state, hosted
    /// files, `prediction`, `n > 1` on Gemini 3); `param` is the path to it.
    #[error("{message}")]
    Unsupported { param: String, message: String },
    /// An image, audio or file content part that cannot be used; `param` is the path to it.
    #[error("{message}")]
    Media {
        fault: MediaFault,
        param: String,
        message: String,
    },
    #[error("model '{0}' does not exist; GET /v1/models lists the available models")]
    ModelNotFound(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    #[error("the request body did not arrive in time: {0}")]
    BodyTimeout(String),
    #[error("{0}")]
    IdempotencyConflict(&'static str),
    #[error("origin '{0}' may not call this endpoint")]
    OriginNotAllowed(String),
    #[error("MCP protocol version '{0}' is not supported")]
    UnsupportedProtocolVersion(String),
}

/// What is wrong with a media content part (each its own stable `code`, all 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaFault {
    /// Malformed: not a data URL, bad base64, a part where the role takes none, a `file_id`.
    Invalid,
    /// The URL's scheme, host or address is not allowed (SSRF protection).
    Forbidden,
    /// Over the per-item or per-request size cap.
    TooLarge,
    /// The fetch failed: DNS, connect, TLS, status, redirects, time-out.
    FetchFailed,
    /// A content type Gemini does not take, or bytes that are not what they claim.
    UnsupportedType,
}

impl RequestError {
    pub fn media(fault: MediaFault, param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Media {
            fault,
            param: param.into(),
            message: message.into(),
        }
    }

    pub fn validation(param: &'static str, message: impl Into<String>) -> Self {
        Self::Validation {
            param: Some(param),
            message: message.into(),
        }
    }
}

/// Where an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    RateLimit(#[from] RateLimited),
    #[error(transparent)]
    Payment(#[from] PaymentError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// `StorageError::status` as a `StatusCode`.
fn storage_status(e: &StorageError) -> StatusCode {
    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Request(e) => match e {
                RequestError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                RequestError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
                RequestError::InvalidJson(_) | RequestError::BodyRead(_) => StatusCode::BAD_REQUEST,
                RequestError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                RequestError::Schema { .. }
                | RequestError::Tool { .. }
                | RequestError::Media { .. }
                | RequestError::Unsupported { .. } => StatusCode::BAD_REQUEST,
                RequestError::ModelNotFound(_) | RequestError::NotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
                RequestError::IdempotencyConflict(_) => StatusCode::CONFLICT,
                RequestError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
                RequestError::UnsupportedProtocolVersion(_) => StatusCode::BAD_REQUEST,
            },
            Error::Auth(e) => match e {
                AuthError::MissingCredentials
                | AuthError::InvalidApiKey
                | AuthError::InvalidAdminSecret => StatusCode::UNAUTHORIZED,
                AuthError::AmbiguousCredentials => StatusCode::BAD_REQUEST,
                AuthError::InvalidToken | AuthError::RefreshReused => StatusCode::UNAUTHORIZED,
                AuthError::WalletMismatch => StatusCode::FORBIDDEN,
                AuthError::Randomness => StatusCode::INTERNAL_SERVER_ERROR,
                AuthError::Siwe(s) => match s {
                    SiweError::WalletMismatch { .. } => StatusCode::FORBIDDEN,
                    SiweError::ChallengesExhausted { .. } => StatusCode::TOO_MANY_REQUESTS,
                    SiweError::Randomness => StatusCode::INTERNAL_SERVER_ERROR,
                    SiweError::Malformed(_)
                    | SiweError::DomainMismatch { .. }
                    | SiweError::UriMismatch { .. }
                    | SiweError::NonceInvalid
                    | SiweError::Expired
                    | SiweError::ChainId(_)
                    | SiweError::SignatureInvalid => StatusCode::UNAUTHORIZED,
                },
                AuthError::Storage(s) => storage_status(s),
                AuthError::InvalidWallet(_) => StatusCode::UNPROCESSABLE_ENTITY,
            },
            Error::Billing(e) => match e {
                BillingError::InsufficientCredits { .. } => StatusCode::PAYMENT_REQUIRED,
                BillingError::InvalidAmount(_) => StatusCode::UNPROCESSABLE_ENTITY,
                BillingError::Storage(s) => storage_status(s),
            },
            Error::Upstream(e) => match e {
                UpstreamError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                UpstreamError::Rejected { .. } => StatusCode::BAD_REQUEST,
                UpstreamError::ModelNotFound(_) => StatusCode::NOT_FOUND,
                UpstreamError::Unavailable { status, .. } => match *status {
                    504 => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::BAD_GATEWAY,
                },
                UpstreamError::Connect(_)
                | UpstreamError::Protocol(_)
                | UpstreamError::Credentials(_)
                | UpstreamError::Interrupted(_) => StatusCode::BAD_GATEWAY,
            },
            Error::RateLimit(_) => StatusCode::TOO_MANY_REQUESTS,
            // `PaymentError::status` is itself an exhaustive match.
            Error::Payment(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            // `MemoryError::status` is itself an exhaustive match.
            Error::Memory(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            // So is `AgentError::status`.
            Error::Agent(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            Error::Storage(e) => storage_status(e),
        }
    }

    /// The stable machine-readable code (`error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Request(e) => match e {
                RequestError::BodyTooLarge { .. } => "body_too_large",
                RequestError::InvalidJson(_) => "invalid_json",
                RequestError::BodyRead(_) => "invalid_body",
                RequestError::BodyTimeout(_) => "request_timeout",
                RequestError::Validation { .. } => "validation_error",
                RequestError::Schema { .. } => "invalid_schema",
                RequestError::Tool { .. } => "invalid_tool",
                RequestError::Unsupported { .. } => "unsupported_parameter",
                RequestError::Media { fault, .. } => match fault {
                    MediaFault::Invalid => "invalid_content_part",
                    MediaFault::Forbidden => "image_url_forbidden",
                    MediaFault::TooLarge => "image_too_large",
                    MediaFault::FetchFailed => "image_fetch_failed",
                    MediaFault::UnsupportedType => "unsupported_media_type",
                },
                RequestError::ModelNotFound(_) => "model_not_found",
                RequestError::NotFound { .. } => "not_found",
                RequestError::MethodNotAllowed { .. } => "method_not_allowed",
                RequestError::IdempotencyConflict(_) => "idempotency_conflict",
                RequestError::OriginNotAllowed(_) => "origin_not_allowed",
                RequestError::UnsupportedProtocolVersion(_) => "unsupported_protocol_version",
            },
            Error::Auth(e) => match e {
                AuthError::MissingCredentials => "missing_credentials",
                AuthError::InvalidApiKey => "invalid_api_key",
                AuthError::AmbiguousCredentials => "ambiguous_payment",
                AuthError::InvalidAdminSecret => "invalid_admin_secret",
                AuthError::InvalidWallet(_) => "validation_error",
                AuthError::InvalidToken => "invalid_token",
                AuthError::RefreshReused => "refresh_token_reused",
                AuthError::WalletMismatch => "wallet_mismatch",
                AuthError::Randomness => "internal_error",
                AuthError::Siwe(s) => match s {
                    SiweError::Malformed(_) => "siwe_message_invalid",
                    // The URI's origin binds the message to this deployment like the domain does.
                    SiweError::DomainMismatch { .. } | SiweError::UriMismatch { .. } => {
                        "siwe_domain_mismatch"
                    }
                    SiweError::ChallengesExhausted { .. } => "siwe_challenges_exhausted",
                    SiweError::Randomness => "internal_error",
                    SiweError::NonceInvalid => "siwe_nonce_invalid",
                    SiweError::Expired => "siwe_expired",
                    SiweError::ChainId(_) => "siwe_chain_invalid",
                    SiweError::SignatureInvalid => "siwe_signature_invalid",
                    SiweError::WalletMismatch { .. } => "wallet_mismatch",
                },
                AuthError::Storage(s) => s.code(),
            },
            Error::Billing(e) => match e {
                BillingError::InsufficientCredits { .. } => "insufficient_credits",
                BillingError::InvalidAmount(_) => "validation_error",
                BillingError::Storage(s) => s.code(),
            },
            Error::Upstream(e) => match e {
                UpstreamError::RateLimited { .. } => "upstream_rate_limited",
                UpstreamError::Timeout(_) | UpstreamError::Unavailable { status: 504, .. } => {
                    "upstream_timeout"
                }
                UpstreamError::ModelNotFound(_) => "model_not_found",
                UpstreamError::Rejected { .. } => "upstream_rejected",
                UpstreamError::Unavailable { .. }
                | UpstreamError::Connect(_)
                | UpstreamError::Protocol(_)
                | UpstreamError::Credentials(_)
                | UpstreamError::Interrupted(_) => "upstream_error",
            },
            Error::Storage(e) => e.code(),
            Error::RateLimit(_) => "rate_limited",
            Error::Payment(e) => e.code(),
            Error::Memory(e) => e.code(),
            Error::Agent(e) => e.code(),
        }
    }

    /// OpenAI's `error.type`.
    pub fn kind(&self) -> &'static str {
        let status = self.status();
        match status.as_u16() {
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Error::Request(RequestError::Validation { param, .. }) => *param,
            Error::Request(
                RequestError::Schema { param, .. }
                | RequestError::Tool { param, .. }
                | RequestError::Unsupported { param, .. }
                | RequestError::Media { param, .. },
            ) => Some(param),
            Error::Request(RequestError::ModelNotFound(_)) => Some("model"),
            _ => None,
        }
    }

    pub fn origin(&self) -> Origin {
        match self {
            Error::Billing(BillingError::Storage(_))
            | Error::Auth(
                AuthError::Storage(_)
                | AuthError::Randomness
                | AuthError::Siwe(SiweError::Randomness),
            ) => Origin::Internal,
            Error::Request(_) | Error::Auth(_) | Error::Billing(_) | Error::RateLimit(_) => {
                Origin::Client
            }
            Error::Upstream(_) => Origin::Upstream,
            Error::Storage(_) => Origin::Internal,
            Error::Payment(e) if e.is_internal() => Origin::Internal,
            Error::Payment(PaymentError::Facilitator(_)) => Origin::Upstream,
            Error::Payment(_) => Origin::Client,
            Error::Memory(MemoryError::Upstream(_)) => Origin::Upstream,
            Error::Memory(MemoryError::Storage(_) | MemoryError::Internal(_)) => Origin::Internal,
            Error::Memory(_) => Origin::Client,
            Error::Agent(AgentError::Storage(_)) => Origin::Internal,
            Error::Agent(_) => Origin::Client,
        }
    }

    /// `Retry-After` for 429s, in whole seconds (rounded up, at least 1).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::Upstream(UpstreamError::RateLimited { retry_after, .. }) => {
                Some(retry_after.map_or(1, whole_seconds_up))
            }
            Error::RateLimit(e) => Some(e.retry_after_s.max(1)),
            Error::Auth(AuthError::Siwe(SiweError::ChallengesExhausted { retry_after_s })) => {
                Some((*retry_after_s).max(1))
            }
            Error::Payment(e) => e.retry_after(),
            Error::Agent(e) => e.retry_after(),
            _ => None,
        }
    }

    /// The message shown to the client; internal details are not leaked.
    pub fn public_message(&self) -> String {
        match self.origin() {
            Origin::Internal => "internal error; the request was not charged".to_string(),
            Origin::Client | Origin::Upstream => self.to_string(),
        }
    }

    /// The OpenAI error body `{"error":{message,type,param,code}}`.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                message: self.public_message(),
                r#type: self.kind(),
                param: self.param().map(str::to_string),
                code: self.code(),
            },
        }
    }
}

/// Rounds a duration up to whole seconds, never below 1.
pub fn whole_seconds_up(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Serialize)]
pub struct ErrorObject {
    pub message: String,
    pub r#type: &'static str,
    pub param: Option<String>,
    pub code: &'static str,
}

impl From<crate::auth::SiweError> for Error {
    fn from(e: crate::auth::SiweError) -> Self {
        Error::Auth(AuthError::Siwe(e))
    }
}
