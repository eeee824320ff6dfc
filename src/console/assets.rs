//! The console's static files, compiled into the binary: one table of name, type and bytes.
//!
//! `web/uplot.iife.min.js` and `web/uplot.min.css` are uPlot 1.6.32 (MIT), copied unchanged from
//! `tests/browser/node_modules/uplot/dist/` as installed by `npm ci` from
//! `tests/browser/package-lock.json` (integrity sha512-KIMVnG68…Iw==); nothing is fetched at run
//! time and nothing is built: the app is plain JavaScript modules.

/// The page at `/console`.
pub const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    bytes: include_bytes!("web/index.html"),
};

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// Every file under `/console/{file}`.
pub const FILES: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("web/app.js"),
    },
    Asset {
        name: "lib.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("web/lib.js"),
    },
    Asset {
        name: "views.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("web/views.js"),
    },
    Asset {
        name: "ops.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("web/ops.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("web/app.css"),
    },
    Asset {
        name: "uplot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("web/uplot.iife.min.js"),
    },
    Asset {
        name: "uplot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("web/uplot.min.css"),
    },
];

/// The Content-Security-Policy of every console answer: only this origin's scripts, styles and
/// API; no inline script or style, no frames, no forms posting elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The file named `name`, if the console has one.
pub fn file(name: &str) -> Option<&'static Asset> {
    FILES.iter().find(|a| a.name == name)
}

/// A strong ETag for a file: its SHA-256, shortened.
pub fn etag(a: &Asset) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, a.bytes);
    format!("\"{}\"", hex::encode(&d.as_ref()[..12]))
}
