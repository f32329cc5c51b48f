//! Organisations and API keys: operator management, key lifecycle (revoke,
//! expire, disable org → 401 on the next request), shown-once secrets.

use serde_json::json;
use turnstone_tests::Stack;

#[tokio::test]
async fn operator_creates_orgs_and_issues_keys() {
    let stack = Stack::start().await;
    let op = stack.operator();
    let org = op.post("/v1/orgs", json!({"name": "acme"})).await.expect(201);
    let org_id = org["id"].as_str().unwrap();
    assert!(org_id.starts_with("org_"));
    let listed = op.get("/v1/orgs").await.expect(200);
    assert!(listed["data"].as_array().unwrap().iter().any(|o| o["id"] == org_id));

    let created = op.post(&format!("/v1/orgs/{org_id}/api-keys"), json!({"name": "ci"})).await.expect(201);
    let key = created["key"].as_str().unwrap();
    assert!(key.starts_with("ts_live_"));
    assert_eq!(created["display_prefix"], key[..12]);
    let acme = stack.client().with_key(key);
    let agent = acme.agent(&[]).await;
    // The new org is walled off from the default org, both ways.
    stack.client().get(&format!("/v1/agents/{agent}")).await.expect_problem(404, "not_found");

    // Org keys cannot operate, the operator token is not an org key, a wrong token is 401.
    stack.client().get("/v1/orgs").await.expect_problem(401, "unauthorized");
    op.get("/v1/agents").await.expect_problem(401, "unauthorized");
    stack.client().with_key("not-the-token").get("/v1/orgs").await.expect_problem(401, "unauthorized");
    op.get("/v1/orgs/org_00000000000000000000000000000000").await.expect_problem(404, "not_found");
    op.post("/v1/orgs", json!({"name": ""})).await.expect_problem(400, "invalid_body");
}

#[tokio::test]
async fn revoked_expired_and_disabled_keys_stop_on_the_next_request() {
    let stack = Stack::start().await;
    let api = stack.client();
    // Revoke.
    let second = api.post("/v1/api-keys", json!({"name": "second"})).await.expect(201);
    let k2 = api.with_key(second["key"].as_str().unwrap());
    k2.get("/v1/agents").await.expect(200);
    let listed = api.get("/v1/api-keys").await.expect(200);
    assert!(listed["data"].as_array().unwrap().iter().all(|k| k.get("key").is_none() && k["display_prefix"].is_string()));
    let revoked = api.delete(&format!("/v1/api-keys/{}", second["id"].as_str().unwrap())).await.expect(200);
    assert!(revoked["revoked_at"].is_string());
    k2.get("/v1/agents").await.expect_problem(401, "unauthorized");

    // Expire: a key that expires in a moment works, then stops.
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let third = api.post("/v1/api-keys", json!({"name": "short", "expires_at": soon})).await.expect(201);
    let k3 = api.with_key(third["key"].as_str().unwrap());
    k3.get("/v1/agents").await.expect(200);
    let deadline = tokio::time::Instant::now() + turnstone_tests::DEADLINE;
    while k3.get("/v1/agents").await.status == 200 {
        assert!(tokio::time::Instant::now() < deadline, "key never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    k3.get("/v1/agents").await.expect_problem(401, "unauthorized");
    api.post("/v1/api-keys", json!({"expires_at": "2001-01-01T00:00:00Z"})).await.expect_problem(400, "invalid_expires_at");

    // Disable the org: every key of it stops; enabling brings them back.
    let op = stack.operator();
    let orgs = op.get("/v1/orgs").await.expect(200);
    let org_id = orgs["data"][0]["id"].as_str().unwrap().to_owned();
    op.patch(&format!("/v1/orgs/{org_id}"), json!({"disabled": true})).await.expect(200);
    api.get("/v1/agents").await.expect_problem(401, "unauthorized");
    op.patch(&format!("/v1/orgs/{org_id}"), json!({"disabled": false})).await.expect(200);
    api.get("/v1/agents").await.expect(200);
}

#[tokio::test]
async fn a_replayed_key_creation_never_reveals_the_secret_again() {
    let stack = Stack::start().await;
    let api = stack.client();
    let req = |c: &turnstone_tests::Client| {
        c.http.post(format!("{}/v1/api-keys", c.base)).header("Idempotency-Key", "key-once").json(&json!({"name": "once"}))
    };
    let first = api.send(req(&api)).await.expect(201);
    let again = api.send(req(&api)).await.expect(201);
    assert_eq!(first["id"], again["id"], "one key, not two");
    assert!(first["key"].is_string());
    assert!(again["key"].is_null(), "the secret is shown once only");
    // And it is not stored for the replay either.
    let owner = turnstone_core::db::connect(&stack.db.url, 1).await.unwrap();
    let stored: String = sqlx::query_scalar("SELECT response::text FROM idempotency_keys").fetch_one(&owner).await.unwrap();
    assert!(!stored.contains(first["key"].as_str().unwrap()));
}

#[tokio::test]
async fn an_open_stream_ends_when_its_key_is_revoked() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = api.session(&[]).await;
    let second = api.post("/v1/api-keys", json!({"name": "viewer"})).await.expect(201);
    let viewer = api.with_key(second["key"].as_str().unwrap());
    let mut sse = viewer.sse(&session, "", None).await;
    assert_eq!(sse.next().await.unwrap().event, "connected");
    api.delete(&format!("/v1/api-keys/{}", second["id"].as_str().unwrap())).await.expect(200);
    // Within one fallback poll the stream says goodbye; reconnecting is refused.
    let frames = sse.until("disconnecting").await;
    assert_eq!(frames.last().unwrap().event, "disconnecting");
    assert!(sse.next().await.is_none());
    let again = viewer.send(viewer.http.get(format!("{}/v1/sessions/{session}/sse", viewer.base))).await;
    again.expect_problem(401, "unauthorized");
}

#[tokio::test]
async fn a_provider_key_can_be_replaced_but_never_follows_a_new_host() {
    let stack = Stack::start().await;
    let api = stack.client();
    let p =
        api.post("/v1/providers", json!({"name": "p", "base_url": stack.sim.base_url(), "api_key": "sk-old"})).await.expect(201);
    let path = format!("/v1/providers/{}", p["id"].as_str().unwrap());
    // Moving the base URL alone would send the stored key to a new host: refused, nothing changed.
    api.patch(&path, json!({"base_url": "https://elsewhere.example/v1"})).await.expect_problem(400, "api_key_required");
    assert_eq!(api.get(&path).await.expect(200)["base_url"], stack.sim.base_url());
    // With a new key (or null) it is fine; the key itself is never returned.
    let moved = api.patch(&path, json!({"base_url": "https://elsewhere.example/v1", "api_key": "sk-new"})).await.expect(200);
    assert_eq!(moved["has_api_key"], true);
    assert!(moved.get("api_key").is_none());
    let cleared = api.patch(&path, json!({"api_key": null, "name": "renamed"})).await.expect(200);
    assert_eq!((cleared["has_api_key"].clone(), cleared["name"].clone()), (json!(false), json!("renamed")));
    api.patch(&path, json!({"name": "default"})).await.expect_problem(409, "provider_name_taken");

    // Models: a used one cannot be deleted, an unused one can, the default never.
    let m = api.post("/v1/models", json!({"provider_id": p["id"], "name": "m"})).await.expect(201);
    let used = api.post("/v1/agents", json!({"name": "uses m", "model_id": m["id"]})).await.expect(201);
    let model_path = format!("/v1/models/{}", m["id"].as_str().unwrap());
    api.delete(&model_path).await.expect_problem(409, "model_in_use");
    api.patch(&format!("/v1/agents/{}", used["id"].as_str().unwrap()), json!({"model_id": ""})).await.expect(200);
    api.delete(&model_path).await.expect(204);
    api.get(&model_path).await.expect_problem(404, "not_found");
    let models = api.get("/v1/models").await.expect(200);
    let default = models["data"].as_array().unwrap().iter().find(|m| m["is_default"] == true).unwrap().clone();
    api.delete(&format!("/v1/models/{}", default["id"].as_str().unwrap())).await.expect_problem(409, "model_is_default");
}

/// Successful key checks are cached (`TURNSTONE_AUTH_CACHE_SECS`); here for an
/// hour, so only the `turnstone_auth` notification of migration 0006's
/// triggers can end them: changes made in SQL, outside any API process, still
/// stop a key at once.
#[tokio::test]
async fn key_and_org_changes_made_in_sql_reach_a_cached_check() {
    let stack = turnstone_tests::Stack::start_with(turnstone_tests::StackOptions {
        auth_cache: std::time::Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    let api = stack.client();
    let owner = turnstone_core::db::connect(&stack.db.url, 1).await.unwrap();
    let refused_soon = async |what: &str| {
        let deadline = tokio::time::Instant::now() + turnstone_tests::DEADLINE;
        while api.get("/v1/agents").await.status != 401 {
            assert!(tokio::time::Instant::now() < deadline, "{what}: a cached check outlived it");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    api.get("/v1/agents").await.expect(200);
    api.get("/v1/agents").await.expect(200);
    sqlx::query("UPDATE api_keys SET revoked_at = now()").execute(&owner).await.unwrap();
    refused_soon("revoked in SQL").await;
    // A refusal is never cached: the key works again as soon as it is restored.
    sqlx::query("UPDATE api_keys SET revoked_at = NULL").execute(&owner).await.unwrap();
    api.get("/v1/agents").await.expect(200);
    api.get("/v1/agents").await.expect(200);
    sqlx::query("UPDATE orgs SET disabled = true").execute(&owner).await.unwrap();
    refused_soon("org disabled in SQL").await;
    sqlx::query("UPDATE orgs SET disabled = false").execute(&owner).await.unwrap();
    api.get("/v1/agents").await.expect(200);
}
