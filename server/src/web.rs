//! The web page: the files of `web/dist` (built by Vite from `web/`,
//! committed), embedded in the binary by `build.rs` and served at `/` and
//! under their own paths (`/assets/...`). See docs/web.md.

use crate::http::Response;

/// `(url path, bytes)`, sorted by path.
static FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));

/// What the page may do, for the browser to enforce: its own scripts and
/// WebAssembly (the zstd decoder), its own WebSocket, layout workers from
/// blobs, inline styles (the graph library sets them), nothing from
/// elsewhere, and no framing by other sites.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     connect-src 'self' ws: wss:; worker-src 'self' blob:; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The response for `path` when it names a file of the page (`/` is
/// `index.html`), else `None`.
pub fn file(path: &str) -> Option<Response> {
    let path = if path == "/" { "/index.html" } else { path };
    let index = FILES.binary_search_by_key(&path, |(name, _)| name).ok()?;
    let body = FILES[index].1;
    // Vite names what it builds under assets/ by content hash: such a file
    // never changes; index.html is asked for again on every visit.
    let cache = if path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Some(Response {
        status: 200,
        headers: vec![
            ("Cache-Control", cache.to_owned()),
            (
                "Content-Security-Policy",
                CONTENT_SECURITY_POLICY.to_owned(),
            ),
            ("X-Content-Type-Options", "nosniff".to_owned()),
            ("Referrer-Policy", "no-referrer".to_owned()),
        ],
        content_type: content_type(path),
        body: body.to_vec(),
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_page_and_unknown_paths_are_not_files() {
        let page = file("/").expect("web/dist/index.html is embedded");
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert!(String::from_utf8_lossy(&page.body).contains("<script"));
        assert!(file("/no-such-file.js").is_none());
        assert!(file("/assets/../index.html").is_none());
    }

    #[test]
    fn every_script_the_page_names_is_served() {
        let page = file("/").expect("the page is embedded");
        let page = String::from_utf8(page.body).expect("UTF-8 HTML");
        for part in page.split("src=\"").skip(1) {
            let src = part.split('"').next().unwrap_or_default();
            let script = file(src).unwrap_or_else(|| panic!("{src} is not embedded"));
            assert!(script.content_type.starts_with("text/javascript"));
        }
    }
}
