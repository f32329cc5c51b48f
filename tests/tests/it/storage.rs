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
    // If-Range: the part only while the file is the version named, else the whole file.
    let same = get_file(&api, &session, "/data/blob.bin", &[("range", "bytes=10-19"), ("if-range", &quoted)]).await;
    assert_eq!((same.status, same.bytes.as_slice()), (206, &bytes[10..20]));
    let changed = get_file(&api, &session, "/data/blob.bin", &[("range", "bytes=10-19"), ("if-range", "\"0000\"")]).await;
    assert_eq!((changed.status, changed.bytes.as_slice()), (200, bytes.as_slice()));
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
    assert_eq!(
        (dir["path"].clone(), dir["type"].clone(), dir["files"].clone()),
        (json!("/notes/deep"), json!("directory"), json!(1))
    );
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
    let hits: Vec<(String, i64)> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["path"].as_str().unwrap().into(), m["line"].as_i64().unwrap()))
        .collect();
    assert_eq!(hits, [("/notes/ideas.md".into(), 1), ("/notes/todo.md".into(), 2)]);
    let md = api.post(&format!("{base}/search"), json!({"pattern": "milk", "glob": "*.md"})).await.expect(200);
    assert_eq!(md["data"][0]["text"], "buy milk");
    api.post(&format!("{base}/search"), json!({"pattern": "("})).await.expect_problem(400, "invalid_pattern");
    api.post(&format!("{base}/search"), json!({"pattern": "a{1000}{1000}"})).await.expect_problem(400, "invalid_pattern");

    // Move, copy.
    let moved = api.post(&format!("{base}/move"), json!({"from": "/readme.txt", "to": "/docs/readme.txt"})).await.expect(201);
    assert_eq!(moved["path"], "/docs/readme.txt");
    assert_eq!(get_file(&api, &session, "/readme.txt", &[]).await.status, 404);
    api.post(&format!("{base}/copy"), json!({"from": "/docs/readme.txt", "to": "/notes/todo.md"}))
        .await
        .expect_problem(409, "file_exists");
    api.post(&format!("{base}/copy"), json!({"from": "/docs/readme.txt", "to": "/notes/todo.md", "overwrite": true}))
        .await
        .expect(200);
    assert_eq!(get_file(&api, &session, "/notes/todo.md", &[]).await.bytes, b"hello\n");

    // A directory needs recursive=true; then everything below it goes.
    api.delete(&format!("{base}?path=/notes")).await.expect_problem(409, "directory_not_empty");
    let gone = api.delete(&format!("{base}?path=/notes&recursive=true")).await.expect(200);
    assert_eq!(gone["files"], 3);
    api.delete(&format!("{base}?path=/notes/todo.md")).await.expect_problem(404, "not_found");
    let left = api.get(&format!("{base}?recursive=true")).await.expect(200);
    let left: Vec<&str> = left["data"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(left, ["/bin.dat", "/docs/readme.txt"]);

    let kinds: Vec<String> =
        storage_events(&api.events(&session).await).iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        kinds,
        [
            "file.written",
            "file.written",
            "file.written",
            "file.written",
            "file.written",
            "file.moved",
            "file.written",
            "file.deleted"
        ]
    );
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

/// Sets one of the org's storage limits, as the operator does.
async fn set_limit(stack: &Stack, field: &str, value: i64) {
    let operator = stack.operator();
    let orgs = operator.get("/v1/orgs").await.expect(200);
    let org = orgs["data"][0]["id"].as_str().unwrap().to_owned();
    let updated = operator.patch(&format!("/v1/orgs/{org}"), json!({ field: value })).await.expect(200);
    assert_eq!(updated[field], value);
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
    api.post(&format!("/v1/sessions/{session}/files/copy"), json!({"from": "/two", "to": "/copy"}))
        .await
        .expect_problem(409, "too_many_files");

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
    let (files, bytes): (i32, i64) = sqlx::query_as("SELECT files, bytes FROM session_storage").fetch_one(&pool).await.unwrap();
    assert_eq!((files, bytes), (2, 1020), "the counters match what is stored");
    pool.close().await;
}

#[tokio::test]
async fn the_capability_registry_lists_files_and_kv_with_tool_schemas() {
    let stack = Stack::start().await;
    let caps = stack.client().get("/v1/capabilities").await.expect(200);
    let find = |name: &str| caps["data"].as_array().unwrap().iter().find(|c| c["name"] == name).cloned().expect(name);
    let tools = |c: Value| -> Vec<String> {
        c["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(
        tools(find("files")),
        ["read_file", "write_file", "edit_file", "list_files", "search_files", "delete_file", "move_file"]
    );
    assert_eq!(tools(find("kv")), ["kv_get", "kv_set", "kv_delete", "kv_list"]);
    for t in find("files")["tools"].as_array().unwrap().iter().chain(find("kv")["tools"].as_array().unwrap()) {
        assert_eq!(t["parameters"]["type"], "object", "{t}");
        assert_eq!(t["parameters"]["additionalProperties"], false, "{t}");
    }
}

/// The events of the session's `n`-th turn (1-based), in order.
fn turn_events(events: &[Value], n: usize) -> Vec<Value> {
    let turn = events.iter().filter(|e| e["type"] == "turn.started").nth(n - 1).expect("turn started")["turn_id"].clone();
    events.iter().filter(|e| e["turn_id"] == turn).cloned().collect()
}

fn tool_result(events: &[Value]) -> Value {
    events.iter().find(|e| e["type"] == "tool.completed").expect("tool.completed")["data"].clone()
}

#[tokio::test]
async fn tools_edit_files_and_keep_keys_within_their_turn() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&["files", "kv"]).await;
    assert_eq!(
        put_file(&api, &session, "/report.md", b"# Report\nstatus: TODO\n".to_vec(), &[("content-type", "text/markdown")])
            .await
            .status,
        201
    );

    // Act: the agent edits the uploaded file, then remembers something.
    api.say(&session, r#"!tool edit_file {"path":"/report.md","edits":[{"old_text":"TODO","new_text":"done"}]}"#).await;
    api.wait_for(&session, "turn.completed", 1).await;
    api.say(&session, r#"!tool kv_set {"key":"report.status","value":{"done":true}}"#).await;
    let events = api.wait_for(&session, "turn.completed", 2).await;

    // Assert: both sides see the same bytes; the write is in the turn, between the tool's start and result.
    let read = get_file(&api, &session, "/report.md", &[]).await;
    assert_eq!(read.bytes, b"# Report\nstatus: done\n");
    assert_eq!(read.header("content-type"), Some("text/markdown"), "an edit keeps the content type");
    let first = turn_events(&events, 1);
    let kinds: Vec<&str> = first.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let at = kinds.iter().position(|k| *k == "file.written").expect("file.written in the turn");
    assert_eq!(&kinds[at - 1..=at + 1], ["tool.started", "file.written", "tool.completed"]);
    let written = &first[at];
    assert_eq!(written["data"]["by"], "tool");
    assert_eq!(written["data"]["path"], "/report.md");
    assert_eq!(written["data"]["etag"], read.header("etag").unwrap().trim_matches('"'));
    assert!(written["data"].get("content").is_none());
    assert_eq!(tool_result(&first)["is_error"], false);
    let second = turn_events(&events, 2);
    let set = second.iter().find(|e| e["type"] == "kv.set").expect("kv.set");
    assert_eq!(set["data"], json!({"key": "report.status", "version": 1, "by": "tool"}));
    let key = api.get(&format!("/v1/sessions/{session}/kv/report.status")).await.expect(200);
    assert_eq!((key["value"].clone(), key["version"].clone()), (json!({"done": true}), json!(1)));

    // A tool's mistakes are results the model reads; the turn completes and nothing is written.
    for (n, script) in [
        (3, r#"!tool read_file {"path":"/missing.md"}"#),
        (4, r#"!tool write_file {"path":"/report.md","content":"clobber"}"#),
        (5, r#"!tool edit_file {"path":"/report.md","edits":[{"old_text":"nowhere","new_text":"x"}]}"#),
        (6, r#"!tool write_file {"path":"/../etc","content":"x"}"#),
        (7, r#"!tool kv_set {"key":"report.status","value":1,"expected_version":9}"#),
        (8, r#"!tool write_file not json"#),
    ] {
        api.say(&session, script).await;
        let events = api.wait_for(&session, "turn.completed", n).await;
        let turn = turn_events(&events, n);
        let result = tool_result(&turn);
        assert_eq!(result["is_error"], true, "{script}: {result}");
        assert!(storage_events(&turn).is_empty(), "{script} wrote nothing");
    }
    assert_eq!(get_file(&api, &session, "/report.md", &[]).await.bytes, b"# Report\nstatus: done\n");

    // Binary files are reported, never dumped into the prompt.
    put_file(&api, &session, "/photo.bin", vec![0, 159, 146, 150, 255], &[]).await;
    api.say(&session, r#"!tool read_file {"path":"/photo.bin"}"#).await;
    let events = api.wait_for(&session, "turn.completed", 9).await;
    let result: Value = serde_json::from_str(tool_result(&turn_events(&events, 9))["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["binary"], true);
    assert!(result.get("content").is_none());
    // A text read returns lines and the etag to edit with.
    api.say(&session, r#"!tool read_file {"path":"/report.md","offset":2}"#).await;
    let events = api.wait_for(&session, "turn.completed", 10).await;
    let result: Value = serde_json::from_str(tool_result(&turn_events(&events, 10))["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["content"], "status: done\n");
    assert_eq!(result["etag"], read.header("etag").unwrap().trim_matches('"'));
}

/// Sessions are walled from each other (same org) and orgs from each other:
/// every route answers 404 for another org's session, and a tool only ever
/// reaches its own session's files and keys.
#[tokio::test]
async fn another_sessions_or_orgs_storage_answers_404_through_every_route_and_tool() {
    let stack = Stack::start().await;
    let pool = PgPool::connect(&stack.db.url).await.unwrap();
    let a = stack.client();
    let theirs = a.session(&[]).await;
    assert_eq!(put_file(&a, &theirs, "/secret.txt", b"LEAKCANARY".to_vec(), &[]).await.status, 201);
    assert_eq!(put_key(&a, &theirs, "secret", json!({"value": "LEAKCANARY"}), &[]).await.status, 201);

    // A tool in another session of the same org sees none of it.
    let mine = a.session(&["files", "kv"]).await;
    for (n, script) in [
        (1, r#"!tool read_file {"path":"/secret.txt"}"#),
        (2, r#"!tool kv_get {"key":"secret"}"#),
        (3, r#"!tool list_files {"recursive":true}"#),
        (4, r#"!tool search_files {"pattern":"LEAK"}"#),
        (5, r#"!tool kv_list {}"#),
        (6, r#"!tool delete_file {"path":"/secret.txt"}"#),
        (7, r#"!tool move_file {"from":"/secret.txt","to":"/mine.txt"}"#),
        (8, r#"!tool kv_delete {"key":"secret"}"#),
    ] {
        a.say(&mine, script).await;
        let events = a.wait_for(&mine, "turn.completed", n).await;
        let result = tool_result(&turn_events(&events, n));
        assert!(!result.to_string().contains("LEAKCANARY"), "{script}: {result}");
        assert!(result["is_error"] == true || !result["result"].as_str().unwrap().contains("secret"), "{script}: {result}");
    }

    // Another org: every route with A's session id is a 404 problem.
    let org = turnstone_core::orgs::create_org(&pool, "other").await.unwrap().id;
    let key = turnstone_tests::api_key();
    let mut tx = turnstone_core::db::begin_org(&pool, org).await.unwrap();
    turnstone_core::orgs::insert_api_key(&mut tx, org, &turnstone_core::crypto::Secret::new(key.clone()), "k", None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let b = stack.client().with_key(&key);
    let files = format!("/v1/sessions/{theirs}/files");
    let probes = vec![
        get_file(&b, &theirs, "/secret.txt", &[]).await,
        get_file(&b, &theirs, "/secret.txt", &[("if-none-match", "*")]).await,
        put_file(&b, &theirs, "/secret.txt", b"pwned".to_vec(), &[]).await,
        put_file(&b, &theirs, "/new.txt", b"pwned".to_vec(), &[]).await,
        raw(&b, b.http.get(format!("{}{files}?recursive=true", b.base))).await,
        raw(&b, b.http.delete(format!("{}{files}?path=/secret.txt", b.base))).await,
        raw(&b, b.http.post(format!("{}{files}/move", b.base)).json(&json!({"from": "/secret.txt", "to": "/x"}))).await,
        raw(&b, b.http.post(format!("{}{files}/copy", b.base)).json(&json!({"from": "/secret.txt", "to": "/x"}))).await,
        raw(&b, b.http.post(format!("{}{files}/search", b.base)).json(&json!({"pattern": "LEAK"}))).await,
        raw(&b, b.http.get(format!("{}/v1/sessions/{theirs}/kv/secret", b.base))).await,
        put_key(&b, &theirs, "secret", json!({"value": "pwned"}), &[]).await,
        raw(&b, b.http.delete(format!("{}/v1/sessions/{theirs}/kv/secret", b.base))).await,
        raw(&b, b.http.get(format!("{}/v1/sessions/{theirs}/kv", b.base))).await,
    ];
    for (i, p) in probes.iter().enumerate() {
        assert_eq!((p.status, p.json()["code"].clone()), (404, json!("not_found")), "probe #{i}");
        assert!(!String::from_utf8_lossy(&p.bytes).contains("LEAKCANARY"));
    }
    // Nothing changed: same bytes, same key, no new events in A's session.
    assert_eq!(get_file(&a, &theirs, "/secret.txt", &[]).await.bytes, b"LEAKCANARY");
    assert_eq!(a.get(&format!("/v1/sessions/{theirs}/kv/secret")).await.expect(200)["version"], 1);
    assert_eq!(storage_events(&a.events(&theirs).await).len(), 2);
    let (b_files, b_keys): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM files WHERE org_id = $1 OR session_id = $2 AND path <> '/secret.txt'),
                (SELECT count(*) FROM kv WHERE org_id = $1)",
    )
    .bind(org)
    .bind(<turnstone_core::ids::SessionId as turnstone_core::ids::TypedId>::parse(&theirs).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((b_files, b_keys), (0, 0));
    pool.close().await;
}

/// No lost update: REST writers and a tool writer race on one file and one
/// key, all naming the same version; exactly one of them wins each race. The
/// tool writes the file in odd rounds and the key in even ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_rest_and_tool_writers_never_overwrite_each_other() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&["files", "kv"]).await;
    for round in 1..=4usize {
        // Arrange: one version everyone names.
        let v0 = put_file(&api, &session, "/shared.txt", format!("round {round}").into_bytes(), &[]).await;
        let etag = v0.json()["etag"].as_str().unwrap().to_owned();
        let version = put_key(&api, &session, "shared", json!({"value": round}), &[]).await.json()["version"].as_i64().unwrap();
        let written_before = storage_events(&api.events(&session).await).len();

        // Act: the turn's tool and eight REST writers at once.
        let tool_on_file = round % 2 == 1;
        let script = if tool_on_file {
            format!(r#"!tool write_file {{"path":"/shared.txt","content":"tool {round}","expected_etag":"{etag}"}}"#)
        } else {
            format!(r#"!tool kv_set {{"key":"shared","value":"tool {round}","expected_version":{version}}}"#)
        };
        let turn = {
            let api = api.clone();
            let session = session.clone();
            tokio::spawn(async move { api.say(&session, &script).await })
        };
        let quoted = format!("\"{etag}\"");
        let vq = format!("\"{version}\"");
        let writers = (0..8).map(|i| {
            let (api, session, quoted, vq) = (api.clone(), session.clone(), quoted.clone(), vq.clone());
            async move {
                let f =
                    put_file(&api, &session, "/shared.txt", format!("rest {round}.{i}").into_bytes(), &[("if-match", &quoted)])
                        .await;
                let k = put_key(&api, &session, "shared", json!({"value": format!("rest {i}")}), &[("if-match", &vq)]).await;
                (f.status, k.status)
            }
        });
        let results = futures::future::join_all(writers).await;
        turn.await.unwrap();
        let events = api.wait_for(&session, "turn.completed", round).await;

        // Assert: one winner per race, its bytes are the file's, one event per win.
        let tool = tool_result(&turn_events(&events, round));
        let tool_won = tool["is_error"] == false;
        assert!(results.iter().all(|(f, k)| [200, 412].contains(f) && [200, 412].contains(k)), "{results:?}");
        let file_wins = results.iter().filter(|(f, _)| *f == 200).count() + usize::from(tool_won && tool_on_file);
        let key_wins = results.iter().filter(|(_, k)| *k == 200).count() + usize::from(tool_won && !tool_on_file);
        assert_eq!((file_wins, key_wins), (1, 1), "round {round}: exactly one writer wins each race: {results:?} {tool}");
        let content = String::from_utf8(get_file(&api, &session, "/shared.txt", &[]).await.bytes).unwrap();
        let key = api.get(&format!("/v1/sessions/{session}/kv/shared")).await.expect(200);
        assert_eq!(key["version"], version + 1);
        match (tool_won, tool_on_file) {
            (true, true) => assert_eq!(content, format!("tool {round}")),
            (true, false) => assert_eq!(key["value"], format!("tool {round}")),
            _ => {}
        }
        if !(tool_won && tool_on_file) {
            assert!(content.starts_with(&format!("rest {round}.")), "{content}");
        }
        let written = storage_events(&api.events(&session).await).len() - written_before;
        assert_eq!(written, 2, "one file.written and one kv.set: every win and nothing else");
    }
}

/// Exactly-once with the turn, with real worker processes killed at the tool
/// step's boundaries: before its commit the write is not there (no write
/// without its result); after the rescue it is there once (never applied twice).
async fn crash_at_tool_step(point: &str) {
    use turnstone_tests::{StackOptions, procs};
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let session = api.session(&["files", "kv"]).await;
    let key_url = format!("/v1/sessions/{session}/kv/progress");
    let tool_scripts = [
        r#"!tool kv_set {"key":"progress","value":{"step":1}}"#,
        r#"!tool write_file {"path":"/out/result.txt","content":"written once"}"#,
        r#"!tool edit_file {"path":"/out/result.txt","edits":[{"old_text":"once","new_text":"once, edited once"}]}"#,
    ];
    for (n, script) in tool_scripts.iter().enumerate() {
        let n = n + 1;
        // Arrange: a worker that dies at the boundary.
        let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", point.to_owned())]);
        api.say(&session, script).await;
        assert_eq!(doomed.wait().await, None, "the worker died by signal at {point}");
        let at_death = api.events(&session).await;
        let results_at_death = turn_events(&at_death, n).iter().filter(|e| e["type"] == "tool.completed").count();
        let writes_at_death = storage_events(&turn_events(&at_death, n)).len();
        // Assert: a write is in the log exactly when its result is.
        assert_eq!(writes_at_death, results_at_death, "{point}: a write without its result (or the reverse)");
        assert_eq!(results_at_death, usize::from(point == "after_tool_commit"));
        if n == 1 {
            let status = api.get(&key_url).await.status;
            assert_eq!(status, if point == "after_tool_commit" { 200 } else { 404 }, "the key exists iff its step committed");
        }

        // Act: a healthy worker resumes the turn.
        let rescuer = procs::worker(&stack, &[]);
        let events = api.wait_for(&session, "turn.completed", n).await;
        drop(rescuer);
        let turn = turn_events(&events, n);
        assert_eq!(turn.iter().filter(|e| e["type"] == "tool.completed").count(), 1);
        assert_eq!(storage_events(&turn).len(), 1, "{point}: one write per tool call: {turn:#?}");
        assert_eq!(tool_result(&turn)["is_error"], false, "{point}: a repeat would have failed its precondition");
    }
    // The values show each write applied once.
    assert_eq!(api.get(&key_url).await.expect(200)["version"], 1);
    assert_eq!(get_file(&api, &session, "/out/result.txt", &[]).await.bytes, b"written once, edited once");
}

#[tokio::test]
async fn a_tool_write_survives_a_crash_before_its_step_commits_exactly_once() {
    crash_at_tool_step("before_tool_commit").await;
}

#[tokio::test]
async fn a_tool_write_survives_a_crash_after_its_step_commits_exactly_once() {
    crash_at_tool_step("after_tool_commit").await;
}
