//! rest_cherrypy's `static` directory (under `static_path`) and `app` page (at `app_path` and
//! every path below it, for client-side routing).
//!
//! Files are served by `tower_http`'s `ServeDir` behind [`guard`]:
//! - `..`, `.`, absolute and empty segments (`/static//x`, `/static/a//b`) are 404, so no path
//!   names anything outside the directory and no redirect can become protocol-relative
//!   (`//host/...`);
//! - a directory without its trailing slash is redirected to the same URL with one, under
//!   `root_prefix` and `static_path` (`/static/sub` → `/static/sub/`), and its `index.html` is
//!   served;
//! - symbolic links are followed only when their target stays inside the directory: a link (or
//!   a linked `index.html`) that resolves elsewhere is 404. Links inside the tree work.
//!
//! GET and HEAD only; other methods are 405, as `ServeDir` answers them.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Adds the `static` directory and the `app` page to `routes`, when configured.
pub fn with_files(routes: Router, api: &crate::config::RestCherrypy) -> Router {
    let mut routes = routes;
    if let Some(dir) = &api.static_dir {
        let path = api.static_path.trim_end_matches('/');
        let path = if path.is_empty() { "/static" } else { path };
        let prefix = format!("{}{path}", api.root_prefix.trim_end_matches('/'));
        let root = Arc::new(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()));
        let serve = tower_http::services::ServeDir::new(dir).redirect_path_prefix(prefix);
        let service = Router::new()
            .fallback_service(serve)
            .layer(axum::middleware::from_fn(
                move |req: Request, next: Next| guard(Arc::clone(&root), req, next),
            ));
        routes = routes.nest_service(path, service);
    }
    if let Some(app) = &api.app {
        let path = api.app_path.trim_end_matches('/');
        let path = if path.is_empty() { "/app" } else { path };
        let page = tower_http::services::ServeFile::new(app);
        routes = routes
            .route_service(path, page.clone())
            .route_service(&format!("{path}/{{*rest}}"), page);
    }
    routes
}

/// Refuses paths that are not plain segments and files whose real path leaves `root`.
async fn guard(root: Arc<PathBuf>, request: Request, next: Next) -> Response {
    // The router drops empty segments in front of the nested path (`/static//x` arrives here as
    // `/x`); the client's own path decides.
    let original = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or(request.uri().path(), |o| o.path());
    if original.contains("//") {
        return ApiError::NotFound.into_response();
    }
    let Some(file) = resolve(&root, request.uri().path()) else {
        return ApiError::NotFound.into_response();
    };
    if !stays_inside(&root, &file).await {
        tracing::info!(path = %request.uri().path(), "Static file refused: it resolves outside the directory");
        return ApiError::NotFound.into_response();
    }
    next.run(request).await
}

/// The file a request path (relative to the mount point) names, or `None` when a segment is
/// empty (except a final slash), `.`, `..`, not UTF-8 once decoded, or not a plain name.
pub fn resolve(root: &Path, uri_path: &str) -> Option<PathBuf> {
    let rel = uri_path.strip_prefix('/').unwrap_or(uri_path);
    let rel = rel.strip_suffix('/').unwrap_or(rel);
    let mut file = root.to_path_buf();
    if rel.is_empty() {
        return Some(file);
    }
    for segment in rel.split('/') {
        let name = percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()?;
        let mut components = Path::new(&*name).components();
        match (components.next(), components.next()) {
            (Some(Component::Normal(n)), None) if n == &*name => file.push(n),
            _ => return None,
        }
    }
    Some(file)
}

/// Whether `file` (and, for a directory, its `index.html`) resolves inside `root`. A path that
/// does not exist passes: `ServeDir` answers 404 for it.
async fn stays_inside(root: &Path, file: &Path) -> bool {
    let Ok(real) = tokio::fs::canonicalize(file).await else {
        return true;
    };
    if !real.starts_with(root) {
        return false;
    }
    if tokio::fs::metadata(&real).await.is_ok_and(|m| m.is_dir()) {
        if let Ok(index) = tokio::fs::canonicalize(real.join("index.html")).await {
            return index.starts_with(root);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_segments_resolve() {
        let root = Path::new("/srv/www");
        assert_eq!(resolve(root, "/"), Some(root.to_path_buf()));
        assert_eq!(resolve(root, ""), Some(root.to_path_buf()));
        assert_eq!(resolve(root, "/a/b.txt"), Some(root.join("a/b.txt")));
        assert_eq!(resolve(root, "/sub/"), Some(root.join("sub")));
        assert_eq!(resolve(root, "/a%20b"), Some(root.join("a b")));
        for bad in [
            "//sub",
            "/a//b",
            "/./a",
            "/a/..",
            "/%2e%2e/x",
            "/a%2Fb",
            "/%ff",
            "/a/./b",
        ] {
            assert_eq!(resolve(root, bad), None, "{bad}");
        }
    }
}
