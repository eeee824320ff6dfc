//! Static files embedded in the binary (the CSS and JS of `/docs` and `/console`), served from one table under `/assets/{file}`.
//!
//! Every file is compiled in with `include_bytes!`, so the binary needs no asset directory and no
//! network. Each answer carries the file's content type, a strong `ETag` (SHA-256 of its bytes),
//! `X-Content-Type-Options: nosniff` and the one Content-Security-Policy of the HTML pages.
//! Pages link an asset through [`url`], which appends `?v=<etag>`: a request that names the
//! current version is cacheable for a year (`immutable`), any other is revalidated with the ETag,
//! so a new binary is never shadowed by a cached old file. An unknown name is 404 `not_found`.
//!
//! To add a file: put it under `src/api/assets/` and add one line to [`ASSETS`].

use std::sync::LazyLock;

use http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, ETAG, HeaderValue, IF_NONE_MATCH, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use http::{HeaderMap, Response, StatusCode, Uri};

use crate::error::{Error, RequestError};
use crate::http::{Body, bytes_response, empty, query_pairs};

/// One embedded file.
pub struct Asset {
    /// The file name: served at `/assets/<name>`.
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every embedded file.
#[rustfmt::skip]
pub static ASSETS: &[Asset] = &[
    Asset { name: "docs.css", content_type: CSS, body: include_bytes!("assets/docs.css") },
    Asset { name: "docs.js", content_type: JS, body: include_bytes!("assets/docs.js") },
    // The web console (`src/console/web`); uPlot 1.6.32 is vendored there (see `console::assets`).
    Asset { name: "console.css", content_type: CSS, body: include_bytes!("../console/web/console.css") },
    Asset { name: "console-app.js", content_type: JS, body: include_bytes!("../console/web/console-app.js") },
    Asset { name: "console-lib.js", content_type: JS, body: include_bytes!("../console/web/console-lib.js") },
    Asset { name: "console-views.js", content_type: JS, body: include_bytes!("../console/web/console-views.js") },
    Asset { name: "console-memory.js", content_type: JS, body: include_bytes!("../console/web/console-memory.js") },
    Asset { name: "console-topup.js", content_type: JS, body: include_bytes!("../console/web/console-topup.js") },
    Asset { name: "console-ops.js", content_type: JS, body: include_bytes!("../console/web/console-ops.js") },
    Asset { name: "uplot.iife.min.js", content_type: JS, body: include_bytes!("../console/web/uplot.iife.min.js") },
    Asset { name: "uplot.min.css", content_type: CSS, body: include_bytes!("../console/web/uplot.min.css") },
];

/// The Content-Security-Policy of every HTML page and asset: scripts, styles, images, fonts and
/// fetches from this origin only; no inline script or style, no `eval`, no plugins, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// `Cache-Control` of an asset requested by its current version.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// `Cache-Control` of an asset requested without (or with another) version: revalidate.
const REVALIDATE: &str = "public, no-cache";

/// The strong ETag of each entry of [`ASSETS`], in the same order; the version of `url` is the
/// ETag without quotes.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = ring::digest::digest(&ring::digest::SHA256, a.body);
            hex::encode(digest.as_ref())[..20].to_string()
        })
        .collect()
});

fn find(name: &str) -> Option<(&'static Asset, &'static str)> {
    let i = ASSETS.iter().position(|a| a.name == name)?;
    Some((&ASSETS[i], ETAGS[i].as_str()))
}

/// The URL a page links `name` by: `/assets/<name>?v=<version>`. A name missing from the table
/// gets no version (and will answer 404; the unit tests link every name the pages use).
pub fn url(name: &str) -> String {
    match find(name) {
        Some((a, version)) => format!("/assets/{}?v={version}", a.name),
        None => format!("/assets/{name}"),
    }
}

/// Sets the security headers every HTML page and asset carries: the CSP, `nosniff`, no
/// referrer, no framing.
pub fn harden(headers: &mut HeaderMap) {
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// Serves `/assets/<name>` (`query` is the request's query string): the file, 304 when
/// `If-None-Match` names its ETag, `None` when there is no such file.
pub fn serve(name: &str, query: Option<&str>, headers: &HeaderMap) -> Option<Response<Body>> {
    let (asset, version) = find(name)?;
    let etag = HeaderValue::from_str(&format!("\"{version}\"")).ok()?;
    let current = query_pairs(query)
        .iter()
        .any(|(k, v)| k == "v" && v == version);
    let cache = HeaderValue::from_static(if current { IMMUTABLE } else { REVALIDATE });
    let mut res = if headers.get(IF_NONE_MATCH).is_some_and(|v| v == etag) {
        let mut res = Response::new(empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        res
    } else {
        bytes_response(
            StatusCode::OK,
            HeaderValue::from_static(asset.content_type),
            asset.body,
        )
    };
    let h = res.headers_mut();
    h.insert(ETAG, etag);
    h.insert(CACHE_CONTROL, cache);
    harden(h);
    Some(res)
}

/// The `GET /assets/{file}` handler: the file, or 404 `not_found` like any unknown path.
pub fn get(params: &[String], uri: &Uri, headers: &HeaderMap) -> Result<Response<Body>, Error> {
    params
        .first()
        .and_then(|name| serve(name, uri.query(), headers))
        .ok_or_else(|| {
            RequestError::NotFound {
                method: "GET".into(),
                path: uri.path().into(),
            }
            .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_version_and_policy() {
        let mut seen = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(seen.insert(a.name), "{} is declared twice", a.name);
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            let link = url(a.name);
            let (path, query) = link.split_once('?').unwrap();
            assert_eq!(path, format!("/assets/{}", a.name));
            let res = serve(a.name, Some(query), &HeaderMap::new()).unwrap();
            assert_eq!(res.status(), StatusCode::OK);
            let h = res.headers();
            assert_eq!(h["content-type"], a.content_type);
            assert_eq!(h["cache-control"], IMMUTABLE);
            assert_eq!(h["content-security-policy"], CSP);
            assert_eq!(h["x-content-type-options"], "nosniff");
            // Another version, or none, revalidates; the current ETag is a 304.
            let stale = serve(a.name, Some("v=0"), &HeaderMap::new()).unwrap();
            assert_eq!(stale.headers()["cache-control"], REVALIDATE);
            let mut cond = HeaderMap::new();
            cond.insert(IF_NONE_MATCH, h["etag"].clone());
            let res = serve(a.name, None, &cond).unwrap();
            assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
            assert_eq!(res.headers()["etag"], h["etag"]);
        }
        assert!(serve("nope.js", None, &HeaderMap::new()).is_none());
        assert!(serve("", None, &HeaderMap::new()).is_none());
        assert_eq!(url("nope.js"), "/assets/nope.js");
    }

    #[test]
    fn the_policy_allows_nothing_inline() {
        assert!(!CSP.contains("unsafe"));
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
        ] {
            assert!(CSP.contains(directive), "{directive}");
        }
    }
}
