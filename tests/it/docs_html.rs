//! `/docs` and `/assets/{file}` over HTTP: the rendered reference carries the strict CSP and links only embedded, versioned, cacheable assets.

use http::{Method, StatusCode};
use vectorway::api::assets::{ASSETS, CSP};

use crate::harness::Env;

/// The security headers every HTML page and asset carries.
fn assert_hardened(res: &crate::harness::Resp, what: &str) {
    let h = &res.headers;
    assert_eq!(h["content-security-policy"], CSP, "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
}

/// The `href`/`src` values of `html` that point at `/assets/`.
fn asset_links(html: &str) -> Vec<String> {
    let mut links = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for (i, _) in html.match_indices(attr) {
            let value: String = html[i + attr.len()..]
                .chars()
                .take_while(|c| *c != '"')
                .collect();
            if value.starts_with("/assets/") {
                links.push(value);
            }
        }
    }
    links
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_is_rendered_under_the_csp_and_links_only_embedded_versioned_assets() {
    let env = Env::start().await;
    let res = env.send(Method::GET, "/docs", &[], "").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.headers["content-type"], "text/html; charset=utf-8");
    assert_hardened(&res, "/docs");
    let html = String::from_utf8(res.body.to_vec()).unwrap();
    // Rendered, not a markdown dump: headings with ids, the contents, code blocks as <pre>.
    assert!(html.contains("<h1 id=\"vectorway-api-reference\">Vectorway API Reference</h1>"));
    assert!(html.contains("<h2 id=\"authentication\">Authentication</h2>"));
    assert!(html.contains("<nav class=\"toc\" aria-label=\"Contents\">"));
    assert!(html.contains("<li><a href=\"#authentication\">Authentication</a></li>"));
    assert!(
        html.contains("<div class=\"code\"><pre tabindex=\"0\"><code class=\"language-bash\">")
    );
    assert!(!html.contains("```"), "no markdown fences left");
    // Still generated from the live config: the curl examples name this gateway's own address.
    let curl = format!("curl -X POST {} \\", env.url("/v1/chat/completions"));
    assert!(html.contains(&curl), "{curl}");
    // Nothing inline for the CSP to block: one external script, one stylesheet.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("<style") && !html.contains(" style="));

    let links = asset_links(&html);
    assert_eq!(links.len(), 2, "{links:?}");
    for link in &links {
        let (path, version) = link.split_once("?v=").unwrap();
        let name = path.trim_start_matches("/assets/");
        let asset = ASSETS.iter().find(|a| a.name == name).unwrap();
        let res = env.send(Method::GET, link, &[], "").await;
        assert_eq!(res.status, StatusCode::OK, "{link}");
        assert_eq!(res.headers["content-type"], asset.content_type, "{link}");
        assert_eq!(
            res.headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(res.headers["etag"], format!("\"{version}\"").as_str());
        assert_hardened(&res, link);
        // The bytes are the file in the source tree, compiled in.
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/api/assets")
            .join(name);
        assert_eq!(res.body.as_ref(), std::fs::read(file).unwrap().as_slice());
        // The ETag answers 304; an unversioned URL is revalidated, not cached for a year.
        let etag = res.headers["etag"].to_str().unwrap().to_string();
        let again = env
            .send(Method::GET, path, &[("if-none-match", &etag)], "")
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.body.is_empty());
        let plain = env.send(Method::GET, path, &[], "").await;
        assert_eq!(plain.status, StatusCode::OK);
        assert_eq!(plain.headers["cache-control"], "public, no-cache");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_assets_are_404_and_the_route_is_documented() {
    let env = Env::start().await;
    for path in [
        "/assets/nope.css",
        "/assets/..%2fCargo.toml",
        "/assets/docs.css.map",
        "/assets/DOCS.CSS",
    ] {
        let res = env.send(Method::GET, path, &[], "").await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(res.json()["error"]["code"], "not_found", "{path}");
    }
    for path in ["/assets/", "/assets", "/assets/a/docs.css"] {
        let res = env.send(Method::GET, path, &[], "").await;
        assert_eq!(res.status, StatusCode::NOT_FOUND, "{path}");
    }
    let res = env.send(Method::POST, "/assets/docs.css", &[], "").await;
    assert_eq!(res.status, StatusCode::METHOD_NOT_ALLOWED);

    let spec = env.send(Method::GET, "/openapi.json", &[], "").await.json();
    let op = &spec["paths"]["/assets/{file}"]["get"];
    for status in ["200", "304", "404"] {
        assert!(op["responses"][status].is_object(), "{status}: {op}");
    }
    assert_eq!(op["parameters"][0]["name"], "file");
    env.stop().await;
}
