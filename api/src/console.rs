//! The operator console: a single page served at `/console` whose assets (plain ES modules and
//! CSS, no build step) are compiled into the binary, so it works offline and never fetches
//! anything from elsewhere. It is one client of the public API: it calls only the documented
//! REST and SSE routes, with the key in an `Authorization` header (never in a URL).
//!
//! Every console response carries a strict Content-Security-Policy: scripts, styles and
//! connections from this origin only, no inline script or style, no framing. Any path under
//! `/console/` that is not an asset answers the page itself, so deep links
//! (`/console/sessions/ses_…`) survive a reload; the page routes on the client. `/viewer`, the
//! page the console replaced, redirects here.

use poem::http::{StatusCode, header};
use poem::web::Path;
use poem::{IntoResponse, Response, handler};

/// The policy on every console response. `connect-src 'self'` covers the REST calls and the
/// SSE stream (read with `fetch`); nothing else is allowed anywhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                       img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The embedded assets: name under `/console/assets/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("console.css", "text/css; charset=utf-8", include_str!("../console/console.css")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../console/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("../console/dom.js")),
    ("sessions.js", "text/javascript; charset=utf-8", include_str!("../console/sessions.js")),
    ("session.js", "text/javascript; charset=utf-8", include_str!("../console/session.js")),
    ("storage.js", "text/javascript; charset=utf-8", include_str!("../console/storage.js")),
    ("pending.js", "text/javascript; charset=utf-8", include_str!("../console/pending.js")),
    ("agents.js", "text/javascript; charset=utf-8", include_str!("../console/agents.js")),
    ("providers.js", "text/javascript; charset=utf-8", include_str!("../console/providers.js")),
    ("keys.js", "text/javascript; charset=utf-8", include_str!("../console/keys.js")),
    ("mcp.js", "text/javascript; charset=utf-8", include_str!("../console/mcp.js")),
    ("operator.js", "text/javascript; charset=utf-8", include_str!("../console/operator.js")),
];

const PAGE: &str = include_str!("../console/index.html");

/// `/console` and every client-side route under it: the page.
#[handler]
pub fn page() -> Response {
    respond("text/html; charset=utf-8", PAGE)
}

/// `/console/assets/{name}`: an embedded asset, or 404.
#[handler]
pub fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => respond(content_type, body),
        None => crate::error::ApiError::not_found("console asset").into_response(),
    }
}

/// `/viewer`: the console replaced the viewer page.
#[handler]
pub fn viewer() -> Response {
    Response::builder().status(StatusCode::PERMANENT_REDIRECT).header(header::LOCATION, "/console").finish()
}

fn respond(content_type: &str, body: &'static str) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_SECURITY_POLICY, CSP)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        // Assets change with the binary; revalidating costs one request per file.
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
}
