//! The web dashboard: static files built into the binary (plain HTML, CSS and one JavaScript
//! module under `www/`, uPlot vendored under `www/vendor/`), served at `/` and `/www/{file}`.
//!
//! The pages hold no state of the broker and have no privileges of their own: the script calls
//! the management API with the user's Basic credentials, exactly as any other client does. So
//! these handlers need no authentication and never touch [`super::Management`].

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// The dashboard's own files change with each build: browsers revalidate them.
const REVALIDATE: &str = "no-cache";
/// Vendored files change only with an upgrade, and index.html names them with their version
/// (`?v=1.6.32`), so a browser may keep them for a year.
const VENDOR_CACHE: &str = "public, max-age=31536000, immutable";

/// Scripts from this origin only (no inline scripts: all data enters the DOM as text); inline
/// styles because uPlot sizes its elements with them.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'";

const ASSETS: &[Asset] = &[
    Asset {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("www/index.html"),
    },
    Asset {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("www/app.js"),
    },
    Asset {
        path: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("www/style.css"),
    },
    Asset {
        path: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("www/favicon.svg"),
    },
    Asset {
        path: "vendor/uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("www/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("www/vendor/uPlot.min.css"),
    },
    Asset {
        path: "vendor/uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("www/vendor/uPlot.LICENSE"),
    },
];

/// `GET /`: the single page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /www/{*file}`: a script, a style sheet, a vendored file.
pub async fn file(Path(file): Path<String>) -> Response {
    serve(&file)
}

fn serve(path: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let cache = match path.starts_with("vendor/") {
        true => VENDOR_CACHE,
        false => REVALIDATE,
    };
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if asset.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_served_with_its_type_and_unknown_ones_are_not() {
        for asset in ASSETS {
            let response = serve(asset.path);
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            assert_eq!(response.headers()[header::CONTENT_TYPE], asset.content_type);
        }
        assert_eq!(serve("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("vendor/").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn vendored_files_are_cached_and_ours_revalidated() {
        let vendor = serve("vendor/uPlot.iife.min.js");
        assert_eq!(vendor.headers()[header::CACHE_CONTROL], VENDOR_CACHE);
        let ours = serve("app.js");
        assert_eq!(ours.headers()[header::CACHE_CONTROL], REVALIDATE);
        assert!(serve("index.html")
            .headers()
            .contains_key(header::CONTENT_SECURITY_POLICY));
    }
}
