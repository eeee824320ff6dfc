//! `/docs`: the markdown reference (`/docs.md`) rendered once at start-up into one HTML page with a table of contents.
//!
//! pulldown-cmark parses the markdown (CommonMark plus tables); the event stream is rewritten
//! before its HTML writer sees it:
//!
//! - every heading gets a unique `id` (a slug of its text), and the `##` / `###` headings make the
//!   nested table of contents;
//! - every code block becomes `<div class="code"><pre tabindex="0"><code>`: the `<pre>` scrolls
//!   on its own (`docs.css`), can be scrolled from the keyboard, and `docs.js` adds the copy
//!   button to its wrapper;
//! - every table sits in a scrolling, focusable wrapper, so a wide table never widens the page;
//! - raw HTML in the markdown is written as text: the page carries no markup, script or style
//!   that this module did not write, and the strict CSP (`assets::CSP`) holds without exceptions.
//!
//! The CSS and JS are separate embedded files linked by versioned URL (`assets::url`).

use std::collections::HashSet;
use std::fmt::Write as _;

use pulldown_cmark::{CodeBlockKind, CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::api::assets;

/// One `##` or `###` heading, for the table of contents.
struct Entry {
    level: HeadingLevel,
    id: String,
    /// The heading's content as HTML (inline code stays `<code>`).
    inner: String,
}

/// A slug of `text` for an `id`: lowercase ASCII letters and digits, runs of anything else as
/// one `-`; never empty.
fn slug(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.is_empty() && !s.ends_with('-') {
            s.push('-');
        }
    }
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() {
        s.push_str("section");
    }
    s
}

/// `base`, or `base-2`, `base-3`, … : the first not yet in `used`.
fn unique(base: String, used: &mut HashSet<String>) -> String {
    let mut id = base.clone();
    let mut n = 2;
    while !used.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// The plain text of inline events (what a reader sees of a heading).
fn plain_text(events: &[Event<'_>]) -> String {
    let mut s = String::new();
    for e in events {
        if let Event::Text(t) | Event::Code(t) = e {
            s.push_str(t);
        }
    }
    s
}

/// A fenced block's language, reduced to characters safe in a class name.
fn language(info: &str) -> String {
    info.split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+'))
        .collect()
}

/// Raw HTML becomes text; everything else passes.
fn defang(e: Event<'_>) -> Event<'_> {
    match e {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        e => e,
    }
}

/// Rewrites the parser's events (see the module header) and collects the headings.
fn rewrite<'a>(events: Vec<Event<'a>>) -> (Vec<Event<'a>>, Vec<Entry>) {
    let mut out = Vec::with_capacity(events.len() + 64);
    let mut entries = Vec::new();
    let mut used = HashSet::new();
    let mut events = events.into_iter().map(defang);
    while let Some(e) = events.next() {
        match e {
            Event::Start(Tag::Heading {
                level,
                classes,
                attrs,
                ..
            }) => {
                let inner: Vec<Event<'a>> = events
                    .by_ref()
                    .take_while(|e| !matches!(e, Event::End(TagEnd::Heading(_))))
                    .collect();
                let id = unique(slug(&plain_text(&inner)), &mut used);
                if matches!(level, HeadingLevel::H2 | HeadingLevel::H3) {
                    let mut html = String::new();
                    pulldown_cmark::html::push_html(&mut html, inner.iter().cloned());
                    entries.push(Entry {
                        level,
                        id: id.clone(),
                        inner: html,
                    });
                }
                out.push(Event::Start(Tag::Heading {
                    level,
                    id: Some(CowStr::from(id)),
                    classes,
                    attrs,
                }));
                out.extend(inner);
                out.push(Event::End(TagEnd::Heading(level)));
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                let lang = match &kind {
                    CodeBlockKind::Fenced(info) => language(info),
                    CodeBlockKind::Indented => String::new(),
                };
                let class = if lang.is_empty() {
                    String::new()
                } else {
                    format!(" class=\"language-{lang}\"")
                };
                out.push(Event::Html(CowStr::from(format!(
                    "<div class=\"code\"><pre tabindex=\"0\"><code{class}>"
                ))));
            }
            Event::End(TagEnd::CodeBlock) => {
                out.push(Event::Html(CowStr::Borrowed("</code></pre></div>\n")));
            }
            Event::Start(Tag::Table(align)) => {
                out.push(Event::Html(CowStr::Borrowed(
                    "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Table\">",
                )));
                out.push(Event::Start(Tag::Table(align)));
            }
            Event::End(TagEnd::Table) => {
                out.push(Event::End(TagEnd::Table));
                out.push(Event::Html(CowStr::Borrowed("</div>\n")));
            }
            e => out.push(e),
        }
    }
    (out, entries)
}

/// The table of contents: `##` headings, each with its `###` headings nested.
fn toc(entries: &[Entry]) -> String {
    let mut s = String::from("<ol>");
    let mut open_sub = false;
    let mut open_item = false;
    for e in entries {
        let link = format!("<a href=\"#{}\">{}</a>", e.id, e.inner);
        if e.level == HeadingLevel::H2 || !open_item {
            if open_sub {
                s.push_str("</ol>");
                open_sub = false;
            }
            if open_item {
                s.push_str("</li>");
            }
            let _ = write!(s, "<li>{link}");
            open_item = true;
        } else {
            if !open_sub {
                s.push_str("<ol>");
                open_sub = true;
            }
            let _ = write!(s, "<li>{link}</li>");
        }
    }
    if open_sub {
        s.push_str("</ol>");
    }
    if open_item {
        s.push_str("</li>");
    }
    s.push_str("</ol>");
    s
}

/// The whole page for the markdown reference `md`.
pub fn render(md: &str) -> String {
    let parser = Parser::new_ext(md, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH);
    let (events, entries) = rewrite(parser.collect());
    let mut body = String::with_capacity(md.len() * 3 / 2);
    pulldown_cmark::html::push_html(&mut body, events.into_iter());
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <title>Vectorway API reference</title>\n<link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"{css}\">\n<script src=\"{js}\" defer></script>\n</head>\n<body>\n\
         <a class=\"skip\" href=\"#main\">Skip to the reference</a>\n\
         <header class=\"top\"><span class=\"brand\">Vectorway API reference</span>\
         <nav aria-label=\"Other formats\"><ul><li><a href=\"/docs.md\">Markdown</a></li>\
         <li><a href=\"/openapi.json\">OpenAPI</a></li><li><a href=\"/llms.txt\">llms.txt</a></li>\
         <li><a href=\"/skill.md\">Agent skill</a></li></ul></nav></header>\n\
         <div class=\"layout\">\n<nav class=\"toc\" aria-label=\"Contents\"><details><summary>Contents</summary>{toc}</details></nav>\n\
         <main id=\"main\">\n{body}</main>\n</div>\n\
         <div id=\"copy-status\" class=\"status\" role=\"status\" aria-live=\"polite\"></div>\n</body>\n</html>\n",
        css = assets::url("docs.css"),
        js = assets::url("docs.js"),
        toc = toc(&entries),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headings_get_unique_ids_and_a_nested_table_of_contents() {
        let page = render(
            "# Title\n\n## Group `A`\n\n### `GET /v1/x`\n\n### `GET /v1/x`\n\n## Group B\n\ntext\n",
        );
        assert!(page.contains("<h1 id=\"title\">Title</h1>"), "{page}");
        assert!(page.contains("<h2 id=\"group-a\">Group <code>A</code></h2>"));
        assert!(page.contains("<h3 id=\"get-v1-x\">"));
        assert!(page.contains("<h3 id=\"get-v1-x-2\">"));
        assert!(page.contains(
            "<ol><li><a href=\"#group-a\">Group <code>A</code></a><ol>\
             <li><a href=\"#get-v1-x\"><code>GET /v1/x</code></a></li>\
             <li><a href=\"#get-v1-x-2\"><code>GET /v1/x</code></a></li></ol></li>\
             <li><a href=\"#group-b\">Group B</a></li></ol>"
        ));
        assert_eq!(
            slug("`POST /v1/chat/completions`"),
            "post-v1-chat-completions"
        );
        assert_eq!(slug("—"), "section");
    }

    #[test]
    fn code_blocks_and_tables_scroll_inside_wrappers() {
        let page = render("```bash\ncurl -X GET 'x' <y>\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(page.contains(
            "<div class=\"code\"><pre tabindex=\"0\"><code class=\"language-bash\">curl -X GET 'x' &lt;y&gt;\n</code></pre></div>"
        ), "{page}");
        assert!(page.contains(
            "<div class=\"table-wrap\" tabindex=\"0\" role=\"region\" aria-label=\"Table\"><table>"
        ));
        assert!(page.contains("</table>\n</div>"));
        // An odd fence info string cannot break out of the class attribute.
        let odd = render("```a\"><script>x\n1\n```\n");
        assert!(odd.contains("<code class=\"language-ascriptx\">"), "{odd}");
    }

    /// The live reference: every markdown heading is an HTML heading with an id, and the page
    /// has nothing the CSP would block (no inline script, style or event handler).
    #[test]
    fn the_generated_reference_renders_every_heading_and_nothing_inline() {
        let c = crate::config::Config::for_tests(
            std::path::Path::new("/nonexistent"),
            "http://127.0.0.1:9",
        );
        let md = super::super::llms_full(&c);
        let page = render(&md);
        let mut in_code = false;
        let mut headings = 0;
        for line in md.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            if in_code || !line.starts_with('#') {
                continue;
            }
            let (hashes, text) = line.split_once(' ').unwrap();
            let id = slug(text);
            let open = format!("<h{} id=\"{id}", hashes.len());
            assert!(page.contains(&open), "{line} → {open}");
            headings += 1;
        }
        assert!(headings > 40, "{headings} headings");
        assert!(page.contains("<li><a href=\"#authentication\">Authentication</a></li>"));
        for script in page.split("<script").skip(1) {
            assert!(script.starts_with(" src=\"/assets/docs.js?v="), "{script}");
        }
        assert!(!page.contains("<style"));
        assert!(!page.contains(" style="));
        assert!(!page.contains(" onclick="));
        // Every code block is a fenced one: no stray indentation turned prose into code.
        let fences = md.lines().filter(|l| l.starts_with("```")).count();
        assert!(fences >= 80, "{fences} fences");
        assert_eq!(page.matches("<pre tabindex=\"0\">").count(), fences / 2);
    }

    #[test]
    fn raw_html_in_the_markdown_is_text() {
        let page = render("# T\n\n<script>alert(1)</script>\n\nA <b onclick=\"x\">b</b>.\n");
        let main = page.split("<main id=\"main\">").nth(1).unwrap();
        assert!(!main.contains("<script"), "{main}");
        assert!(!main.contains("<b "));
        assert!(main.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
