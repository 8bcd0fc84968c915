//! rest_cherrypy's `static` directory and `app` page, also under `root_prefix`.

use crate::support::TestApp;

#[tokio::test]
async fn static_files_and_app_page_without_escaping_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello from static").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
    std::fs::write(dir.path().join("app.html"), "<h1>app</h1>").unwrap();
    let (www2, app) = (www.clone(), dir.path().join("app.html"));
    let gate = TestApp::builder()
        .with_config(move |c| {
            c.api.static_dir = Some(www2);
            c.api.app = Some(app);
            c.api.root_prefix = "/api".into();
        })
        .spawn()
        .await;
    let get = |p: &str| reqwest::get(gate.url(p));
    let r = get("/api/static/hello.txt").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from static");
    for path in [
        "/api/static/../secret.txt",
        "/api/static/%2e%2e/secret.txt",
        "/api/static//etc/passwd",
    ] {
        let r = get(path).await.unwrap();
        assert!(r.status().is_client_error(), "{path}: {}", r.status());
        assert!(!r.text().await.unwrap().contains("outside"), "{path}");
    }
    for path in ["/api/app", "/api/app/some/client/route"] {
        let r = get(path).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "<h1>app</h1>");
    }
    assert_eq!(
        get("/static/hello.txt").await.unwrap().status(),
        404,
        "outside root_prefix"
    );
}
