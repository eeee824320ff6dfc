//! The console page's template; its scripts and styles are entries of `api::assets::ASSETS`.
//!
//! `web/` holds the single-page app: `index.html` (this template: each `{{name}}` becomes the
//! versioned `/assets/<name>` URL at start-up), plain JavaScript modules (`console-app.js`, the
//! entry; `console-lib.js`, `console-views.js`, `console-memory.js`, `console-topup.js`, `console-ops.js`) and `console.css`: nothing is
//! built and nothing is fetched at run time. `web/uplot.iife.min.js` and `web/uplot.min.css` are
//! uPlot 1.6.32 (MIT), copied unchanged from `tests/browser/node_modules/uplot/dist/` as `npm ci`
//! installs it from `tests/browser/package-lock.json` (integrity `sha512-KIMVnG68…tpiQIw==`).

/// The page at `/console`, before its asset links are filled in.
pub const TEMPLATE: &str = include_str!("web/index.html");

/// The template with every `{{name}}` replaced by `link(name)`.
pub fn render(link: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(TEMPLATE.len() + 256);
    let mut rest = TEMPLATE;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        out.push_str(&link(&rest[start + 2..start + len]));
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}
