//! The `media` section: images, audio and PDFs in chat turns, and the gateway's fetch of image
//! URLs (size caps, time-outs, redirects, and the operator's SSRF exceptions).

use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::media::ssrf::{Cidr, Policy};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawMedia {
    /// Fetch `https://` image URLs (false: only `data:` URLs are accepted).
    pub fetch: bool,
    /// Also fetch `http://` URLs (plain text, trivially redirected by anyone on the path).
    pub allow_http: bool,
    /// Largest image, audio clip or PDF, decoded bytes (fetched or inline).
    pub max_item_bytes: usize,
    /// Largest total of media in one request, decoded bytes.
    pub max_total_bytes: usize,
    /// Image URLs fetched for one request at most.
    pub max_urls: usize,
    pub connect_timeout_ms: u64,
    /// The whole fetch of one URL: DNS, connect, TLS, redirects and body.
    pub fetch_timeout_ms: u64,
    pub max_redirects: u32,
    /// Address blocks an image URL may reach although they are private, loopback or link-local
    /// (`"10.1.0.0/16"`, `"127.0.0.1/32"`); empty: public addresses only.
    pub allow_ranges: Vec<String>,
    /// Host names whose addresses are all allowed (an internal image store).
    pub allow_hosts: Vec<String>,
    /// A PEM file of CA certificates trusted for image URLs besides the public roots.
    pub ca_file: String,
}

impl Default for RawMedia {
    fn default() -> Self {
        Self {
            fetch: true,
            allow_http: false,
            max_item_bytes: 10 << 20,
            max_total_bytes: 20 << 20,
            max_urls: 16,
            connect_timeout_ms: 3_000,
            fetch_timeout_ms: 10_000,
            max_redirects: 3,
            allow_ranges: Vec::new(),
            allow_hosts: Vec::new(),
            ca_file: String::new(),
        }
    }
}

/// The validated `media` section.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub fetch: bool,
    pub allow_http: bool,
    pub max_item_bytes: usize,
    pub max_total_bytes: usize,
    pub max_urls: usize,
    pub connect_timeout: Duration,
    pub fetch_timeout: Duration,
    pub max_redirects: u32,
    pub policy: Policy,
    pub extra_roots: Vec<CertificateDer<'static>>,
}

impl super::Config {
    /// The body limit of the routes that carry chat turns (`/v1/chat/completions`,
    /// `/v1/responses`, `/mcp`): room for `media.max_total_bytes` of media as base64 (4/3 of it)
    /// plus `server.body_limit_bytes` for the JSON around it (28 MiB with the defaults). Every
    /// other route keeps `server.body_limit_bytes`. The body is still read into memory once, within
    /// `server.body_read_timeout_ms`.
    pub fn chat_body_limit(&self) -> usize {
        let base64 = self.media.max_total_bytes.div_ceil(3).saturating_mul(4);
        base64.saturating_add(self.body_limit)
    }
}

impl RawMedia {
    pub fn validate(&self) -> Result<MediaConfig, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: format!("media.{key}"),
            message,
        };
        if self.max_item_bytes == 0 || self.max_item_bytes > self.max_total_bytes {
            return Err(invalid(
                "max_item_bytes",
                "must be greater than 0 and at most media.max_total_bytes".into(),
            ));
        }
        if self.max_total_bytes > 256 << 20 {
            return Err(invalid("max_total_bytes", "at most 256 MiB".into()));
        }
        if self.connect_timeout_ms == 0 || self.fetch_timeout_ms == 0 {
            return Err(invalid(
                "fetch_timeout_ms",
                "connect_timeout_ms and fetch_timeout_ms must be greater than 0".into(),
            ));
        }
        if self.max_redirects > 10 {
            return Err(invalid("max_redirects", "at most 10".into()));
        }
        let allow_ranges = self
            .allow_ranges
            .iter()
            .map(|r| Cidr::parse(r).map_err(|m| invalid("allow_ranges", m)))
            .collect::<Result<Vec<_>, _>>()?;
        let allow_hosts = self
            .allow_hosts
            .iter()
            .map(|h| {
                let h = h.trim().to_ascii_lowercase();
                if h.is_empty() || h.contains(['/', ':', '@', ' ']) {
                    Err(invalid("allow_hosts", format!("'{h}' is not a host name")))
                } else {
                    Ok(h)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let extra_roots = if self.ca_file.is_empty() {
            Vec::new()
        } else {
            let read = std::fs::File::open(&self.ca_file).and_then(|f| {
                rustls_pemfile::certs(&mut std::io::BufReader::new(f))
                    .collect::<Result<Vec<_>, _>>()
            });
            match read {
                Ok(certs) if !certs.is_empty() => certs,
                Ok(_) => return Err(invalid("ca_file", "no PEM certificate in it".into())),
                Err(e) => return Err(invalid("ca_file", format!("{}: {e}", self.ca_file))),
            }
        };
        Ok(MediaConfig {
            fetch: self.fetch,
            allow_http: self.allow_http,
            max_item_bytes: self.max_item_bytes,
            max_total_bytes: self.max_total_bytes,
            max_urls: self.max_urls,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            fetch_timeout: Duration::from_millis(self.fetch_timeout_ms),
            max_redirects: self.max_redirects,
            policy: Policy {
                allow_ranges,
                allow_hosts,
            },
            extra_roots,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_strict() {
        let c = RawMedia::default().validate().unwrap();
        assert!(c.fetch && !c.allow_http);
        assert!(c.policy.allow_ranges.is_empty() && c.policy.allow_hosts.is_empty());
        assert_eq!((c.max_item_bytes, c.max_total_bytes), (10 << 20, 20 << 20));
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let refuse = |tweak: fn(&mut RawMedia), key: &str| {
            let mut raw = RawMedia::default();
            tweak(&mut raw);
            match raw.validate() {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        };
        refuse(
            |r| r.allow_ranges = vec!["10.0.0.0/40".into()],
            "media.allow_ranges",
        );
        refuse(
            |r| r.allow_hosts = vec!["http://x".into()],
            "media.allow_hosts",
        );
        refuse(|r| r.max_item_bytes = 0, "media.max_item_bytes");
        refuse(|r| r.max_item_bytes = 30 << 20, "media.max_item_bytes");
        refuse(|r| r.fetch_timeout_ms = 0, "media.fetch_timeout_ms");
        refuse(
            |r| r.ca_file = "/nonexistent/ca.pem".into(),
            "media.ca_file",
        );
    }
}
