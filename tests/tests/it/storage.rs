//! Session storage (issue 19): the filesystem and the key-value store over
//! REST and as tools — raw bytes, entity tags, ranges and preconditions,
//! events without contents, limits that write nothing, walls between
//! sessions and orgs, and no lost update when REST and tool writers race.

use serde_json::{Value, json};
use sqlx::PgPool;
use turnstone_tests::{Client, Stack};

/// A raw response: status, headers and bytes.
struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    bytes: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

async fn raw(api: &Client, req: reqwest::RequestBuilder) -> Raw {
    let resp = req.bearer_auth(&api.key).send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body").to_vec();
    Raw { status, headers, bytes }
}

fn content_url(api: &Client, session: &str, path: &str) -> String {
    format!("{}/v1/sessions/{session}/files/content?path={}", api.base, urlencode(path))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

async fn put_file(api: &Client, session: &str, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Raw {
    let mut req = api.http.put(content_url(api, session, path)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    raw(api, req).await
}

async fn get_file(api: &Client, session: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut req = api.http.get(content_url(api, session, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    raw(api, req).await
}

async fn put_key(api: &Client, session: &str, key: &str, body: Value, headers: &[(&str, &str)]) -> Raw {
    let mut req = api.http.put(format!("{}/v1/sessions/{session}/kv/{key}", api.base)).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    raw(api, req).await
}

fn storage_events(events: &[Value]) -> Vec<&Value> {
    events.iter().filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("file.") || t.starts_with("kv."))).collect()
}

#[tokio::test]
async fn files_round_trip_any_bytes_with_etags_ranges_and_preconditions() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    // Arrange: every byte value, NUL and invalid UTF-8 included.
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    bytes.extend_from_slice(b"\x00\xff\xfe not utf-8 \xc3\x28");

    // Act + Assert: create, with the content type kept.
    let created = put_file(&api, &session, "/data/blob.bin", bytes.clone(), &[("content-type", "image/x-test")]).await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let meta = created.json();
    let etag = meta["etag"].as_str().unwrap().to_owned();
    assert_eq!(created.header("etag"), Some(format!("\"{etag}\"").as_str()));
    assert_eq!(meta["size"], bytes.len());
    assert_eq!(meta["path"], "/data/blob.bin");
    assert_eq!(meta["content_type"], "image/x-test");

    let read = get_file(&api, &session, "/data/blob.bin", &[]).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.bytes, bytes, "binary-safe round trip");
    assert_eq!(read.header("content-type"), Some("image/x-test"));
    assert_eq!(read.header("etag"), Some(format!("\"{etag}\"").as_str()));

    // Conditional and partial reads.
    let quoted = format!("\"{etag}\"");
    let not_modified = get_file(&api, &session, "/data/blob.bin", &[("if-none-match", &quoted)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.bytes.is_empty());
    assert_eq!(get_file(&api, &session, "/data/blob.bin", &[("if-none-match", "\"other\"")]).await.status, 200);
    let part = get_file(&api, &session, "/data/blob.bin", &[("range", "bytes=10-19")]).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.bytes, bytes[10..20]);
    assert_eq!(part.header("content-range"), Some(format!("bytes 10-19/{}", bytes.len()).as_str()));
    let tail = get_file(&api, &session, "/data/blob.bin", &[("range", "bytes=-3")]).await;
    assert_eq!(tail.bytes, bytes[bytes.len() - 3..]);
    let outside = get_file(&api, &session, "/data/blob.bin", &[("range", "bytes=100000-")]).await;
    assert_eq!(outside.status, 416);
    assert_eq!(outside.json()["code"], "range_not_satisfiable");

    // Preconditions: a stale If-Match and a create-only on an existing file change nothing.
    let stale = put_file(&api, &session, "/data/blob.bin", b"x".to_vec(), &[("if-match", "\"0000\"")]).await;
    assert_eq!((stale.status, stale.json()["code"].clone()), (412, json!("precondition_failed")));
    let exists = put_file(&api, &session, "/data/blob.bin", b"x".to_vec(), &[("if-none-match", "*")]).await;
    assert_eq!(exists.status, 412);
    assert_eq!(get_file(&api, &session, "/data/blob.bin", &[]).await.bytes, bytes, "unchanged");
    let replaced = put_file(&api, &session, "/data/blob.bin", b"v2".to_vec(), &[("if-match", &quoted)]).await;
    assert_eq!(replaced.status, 200, "{:?}", replaced.json());
    assert_ne!(replaced.json()["etag"], json!(etag), "every version has its own etag");
    assert_eq!(replaced.json()["content_type"], "application/octet-stream", "no Content-Type: octet-stream");

    // Bad paths are 400 and write nothing.
    for bad in ["/a/../b", "/a//b", "relative", "/a/", "/"] {
        let r = put_file(&api, &session, bad, b"x".to_vec(), &[]).await;
        assert_eq!(r.status, 400, "{bad}: {:?}", r.json());
    }
    let nul = raw(&api, api.http.put(format!("{}/v1/sessions/{session}/files/content?path=/a%00b", api.base)).body("x")).await;
    assert_eq!(nul.status, 400);
    // A file cannot sit under a file, nor where a directory is.
    assert_eq!(put_file(&api, &session, "/data/blob.bin/x", b"x".to_vec(), &[]).await.json()["code"], "path_conflict");
    assert_eq!(put_file(&api, &session, "/data", b"x".to_vec(), &[]).await.json()["code"], "path_conflict");

    // Events name the path, size, etag and writer, never the contents.
    let events = api.events(&session).await;
    let stored = storage_events(&events);
    assert_eq!(stored.len(), 2, "{stored:#?}");
    assert_eq!(stored[0]["type"], "file.written");
    assert_eq!(stored[0]["data"], json!({"path": "/data/blob.bin", "size": bytes.len(), "etag": etag, "by": "api"}));
    assert!(stored[0]["turn_id"].is_null());
}

#[tokio::test]
async fn files_list_delete_move_copy_and_search() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    for (path, text) in [
        ("/notes/todo.md", "buy milk\nTODO: write report\n"),
        ("/notes/ideas.md", "a TODO here too\n"),
        ("/notes/deep/x.txt", "nothing\n"),
        ("/readme.txt", "hello\n"),
        ("/bin.dat", "TODO\u{0}binary"),
    ] {
        assert_eq!(put_file(&api, &session, path, text.as_bytes().to_vec(), &[]).await.status, 201);
    }
    let base = format!("/v1/sessions/{session}/files");

    // One level, with subdirectories, by path.
    let root = api.get(&base).await.expect(200);
    let entries: Vec<(String, String)> = root["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().into(), e["type"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        entries,
        [("/bin.dat", "file"), ("/notes", "directory"), ("/readme.txt", "file")].map(|(a, b)| (a.into(), b.into()))
    );
    let notes = api.get(&format!("{base}?dir=/notes")).await.expect(200);
    let dir = &notes["data"][0];
    assert_eq!((dir["path"].clone(), dir["type"].clone(), dir["files"].clone()), (json!("/notes/deep"), json!("directory"), json!(1)));
    assert!(dir["etag"].is_null());
    // Recursive, paged.
    let page1 = api.get(&format!("{base}?dir=/notes&recursive=true&limit=2")).await.expect(200);
    assert_eq!(page1["data"].as_array().unwrap().len(), 2);
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let page2 = api.get(&format!("{base}?dir=/notes&recursive=true&limit=2&after={}", urlencode(&cursor))).await.expect(200);
    assert_eq!(page2["data"].as_array().unwrap().len(), 1);
    assert!(page2["next_cursor"].is_null());

    // Search: text files only, glob on names, regex with a size limit.
    let found = api.post(&format!("{base}/search"), json!({"pattern": "TODO"})).await.expect(200);
    let hits: Vec<(String, i64)> =
        found["data"].as_array().unwrap().iter().map(|m| (m["path"].as_str().unwrap().into(), m["line"].as_i64().unwrap())).collect();
    assert_eq!(hits, [("/notes/ideas.md".into(), 1), ("/notes/todo.md".into(), 2)]);
    let md = api.post(&format!("{base}/search"), json!({"pattern": "milk", "glob": "*.md"})).await.expect(200);
    assert_eq!(md["data"][0]["text"], "buy milk");
    api.post(&format!("{base}/search"), json!({"pattern": "("})).await.expect_problem(400, "invalid_pattern");
    api.post(&format!("{base}/search"), json!({"pattern": "a{1000}{1000}"})).await.expect_problem(400, "invalid_pattern");

    // Move, copy.
    let moved = api.post(&format!("{base}/move"), json!({"from": "/readme.txt", "to": "/docs/readme.txt"})).await.expect(201);
    assert_eq!(moved["path"], "/docs/readme.txt");
    assert_eq!(get_file(&api, &session, "/readme.txt", &[]).await.status, 404);
    api.post(&format!("{base}/copy"), json!({"from": "/docs/readme.txt", "to": "/notes/todo.md"})).await.expect_problem(409, "file_exists");
    api.post(&format!("{base}/copy"), json!({"from": "/docs/readme.txt", "to": "/notes/todo.md", "overwrite": true})).await.expect(200);
    assert_eq!(get_file(&api, &session, "/notes/todo.md", &[]).await.bytes, b"hello\n");

    // A directory needs recursive=true; then everything below it goes.
    api.delete(&format!("{base}?path=/notes")).await.expect_problem(409, "directory_not_empty");
    let gone = api.delete(&format!("{base}?path=/notes&recursive=true")).await.expect(200);
    assert_eq!(gone["files"], 3);
    api.delete(&format!("{base}?path=/notes/todo.md")).await.expect_problem(404, "not_found");
    let left = api.get(&format!("{base}?recursive=true")).await.expect(200);
    let left: Vec<&str> = left["data"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(left, ["/bin.dat", "/docs/readme.txt"]);

    let kinds: Vec<String> = storage_events(&api.events(&session).await).iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["file.written", "file.written", "file.written", "file.written", "file.written", "file.moved", "file.written", "file.deleted"]);
}

#[tokio::test]
async fn keys_have_versions_preconditions_and_expiry() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let kv = format!("/v1/sessions/{session}/kv");

    let created = put_key(&api, &session, "user:name", json!({"value": {"first": "Ada"}}), &[("if-none-match", "*")]).await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(created.json()["version"], 1);
    assert_eq!(created.header("etag"), Some("\"1\""));
    let again = put_key(&api, &session, "user:name", json!({"value": 1}), &[("if-none-match", "*")]).await;
    assert_eq!((again.status, again.json()["code"].clone()), (412, json!("precondition_failed")));
    let stale = put_key(&api, &session, "user:name", json!({"value": 2}), &[("if-match", "\"7\"")]).await;
    assert_eq!(stale.status, 412);
    let v2 = put_key(&api, &session, "user:name", json!({"value": [1, 2]}), &[("if-match", "\"1\"")]).await;
    assert_eq!((v2.status, v2.json()["version"].clone()), (200, json!(2)));
    let got = api.get(&format!("{kv}/user:name")).await.expect(200);
    assert_eq!((got["value"].clone(), got["version"].clone()), (json!([1, 2]), json!(2)));

    // Values are bounded; keys are checked.
    let big = "x".repeat(70 * 1024);
    assert_eq!(put_key(&api, &session, "big", json!({"value": big}), &[]).await.json()["code"], "value_too_large");
    assert_eq!(put_key(&api, &session, "bad%20key", json!({"value": 1}), &[]).await.status, 400);
    api.get(&format!("{kv}/nope")).await.expect_problem(404, "not_found");

    // A list by prefix, paged.
    for k in ["user:age", "user:zip", "other"] {
        assert_eq!(put_key(&api, &session, k, json!({"value": k}), &[]).await.status, 201);
    }
    let page = api.get(&format!("{kv}?prefix=user:&limit=2")).await.expect(200);
    let keys: Vec<&str> = page["data"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["user:age", "user:name"]);
    let rest = api.get(&format!("{kv}?prefix=user:&limit=2&after={}", page["next_cursor"].as_str().unwrap())).await.expect(200);
    assert_eq!(rest["data"][0]["key"], "user:zip");
    assert!(rest["next_cursor"].is_null());

    // Delete with a precondition.
    let del = raw(&api, api.http.delete(format!("{}{kv}/other", api.base)).header("if-match", "\"9\"")).await;
    assert_eq!(del.status, 412);
    api.delete(&format!("{kv}/other")).await.expect(200);
    api.get(&format!("{kv}/other")).await.expect_problem(404, "not_found");

    // An expired key reads as absent, and is writable as new.
    assert_eq!(put_key(&api, &session, "temp", json!({"value": true, "ttl_secs": 1}), &[]).await.status, 201);
    let deadline = tokio::time::Instant::now() + turnstone_tests::DEADLINE;
    while api.get(&format!("{kv}/temp")).await.status != 404 {
        assert!(tokio::time::Instant::now() < deadline, "the key never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(put_key(&api, &session, "temp", json!({"value": 1}), &[("if-none-match", "*")]).await.status, 201);

    let events = api.events(&session).await;
    let stored = storage_events(&events);
    assert!(stored.iter().all(|e| e["data"]["by"] == "api" && e["data"].get("value").is_none()), "{stored:#?}");
    assert_eq!(stored[0]["data"], json!({"key": "user:name", "version": 1, "by": "api"}));
    assert!(stored.iter().any(|e| e["type"] == "kv.deleted" && e["data"]["key"] == "other"));
}

/// Sets one of the org's storage limits as the database owner.
async fn set_limit(stack: &Stack, column: &str, value: i64) {
    let pool = PgPool::connect(&stack.db.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE orgs SET {column} = {value}"))).execute(&pool).await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn over_a_limit_nothing_is_written() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;

    // Per file: refused while streaming, before the whole body arrives (no Content-Length).
    set_limit(&stack, "max_file_bytes", 1000).await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..64).map(|_| Ok(vec![7u8; 512])).collect();
    let streamed = raw(
        &api,
        api.http.put(content_url(&api, &session, "/big")).body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
    )
    .await;
    assert_eq!((streamed.status, streamed.json()["code"].clone()), (413, json!("file_too_large")));
    let declared = put_file(&api, &session, "/big", vec![0; 1001], &[]).await;
    assert_eq!(declared.status, 413);
    assert_eq!(put_file(&api, &session, "/ok", vec![0; 1000], &[]).await.status, 201);

    // Per session: bytes, then files.
    set_limit(&stack, "max_session_bytes", 1500).await;
    let full = put_file(&api, &session, "/more", vec![0; 600], &[]).await;
    assert_eq!((full.status, full.json()["code"].clone()), (413, json!("session_storage_full")));
    set_limit(&stack, "max_session_files", 2).await;
    assert_eq!(put_file(&api, &session, "/two", vec![0; 10], &[]).await.status, 201);
    let third = put_file(&api, &session, "/three", vec![0; 10], &[]).await;
    assert_eq!((third.status, third.json()["code"].clone()), (409, json!("too_many_files")));
    // Replacing an existing file is not one more.
    assert_eq!(put_file(&api, &session, "/two", vec![1; 20], &[]).await.status, 200);
    api.post(&format!("/v1/sessions/{session}/files/copy"), json!({"from": "/two", "to": "/copy"})).await.expect_problem(409, "too_many_files");

    // The org's quota counts every session.
    set_limit(&stack, "max_session_files", 10).await;
    set_limit(&stack, "max_storage_bytes", 1100).await;
    let other = api.session(&[]).await;
    let quota = put_file(&api, &other, "/x", vec![0; 100], &[]).await;
    assert_eq!((quota.status, quota.json()["code"].clone()), (413, json!("storage_quota_exceeded")));

    // Keys.
    set_limit(&stack, "max_session_keys", 1).await;
    assert_eq!(put_key(&api, &session, "a", json!({"value": 1}), &[]).await.status, 201);
    let second = put_key(&api, &session, "b", json!({"value": 1}), &[]).await;
    assert_eq!((second.status, second.json()["code"].clone()), (409, json!("too_many_keys")));

    // Nothing refused was stored or announced.
    let listed = api.get(&format!("/v1/sessions/{session}/files?recursive=true")).await.expect(200);
    let paths: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/ok", "/two"]);
    assert_eq!(api.get(&format!("/v1/sessions/{other}/files")).await.expect(200)["data"], json!([]));
    let written = storage_events(&api.events(&session).await).len();
    assert_eq!(written, 4, "/ok, /two twice and key a");
    let pool = PgPool::connect(&stack.db.url).await.unwrap();
    let (files, bytes): (i32, i64) =
        sqlx::query_as("SELECT files, bytes FROM session_storage").fetch_one(&pool).await.unwrap();
    assert_eq!((files, bytes), (2, 1020), "the counters match what is stored");
    pool.close().await;
}

#[tokio::test]
async fn the_capability_registry_lists_files_and_kv_with_tool_schemas() {
    let stack = Stack::start().await;
    let caps = stack.client().get("/v1/capabilities").await.expect(200);
    let find = |name: &str| caps["data"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().expect(name);
    let tools = |c: Value| -> Vec<String> { c["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect() };
    assert_eq!(tools(find("files")), ["read_file", "write_file", "edit_file", "list_files", "search_files", "delete_file", "move_file"]);
    assert_eq!(tools(find("kv")), ["kv_get", "kv_set", "kv_delete", "kv_list"]);
    for t in find("files")["tools"].as_array().unwrap().iter().chain(find("kv")["tools"].as_array().unwrap()) {
        assert_eq!(t["parameters"]["type"], "object", "{t}");
        assert_eq!(t["parameters"]["additionalProperties"], false, "{t}");
    }
}
