//! Invariants 5 and 6: tenants are walled (another org's ids answer 404 and change nothing) and secrets never leak.

use std::collections::BTreeSet;
use turnstone_core::ids::OrgId;

use serde_json::{Value, json};
use sqlx::PgPool;
use turnstone_core::crypto::Secret;
use turnstone_tests::{Client, Stack, StackOptions};

/// Creates a second org with its own API key directly in the database; returns its id and client.
async fn second_org(stack: &Stack, pool: &PgPool) -> (OrgId, Client) {
    let org = turnstone_core::orgs::create_org(pool, "other").await.expect("create org").id;
    let key = turnstone_tests::api_key();
    let mut tx = turnstone_core::db::begin_org(pool, org).await.unwrap();
    turnstone_core::orgs::insert_api_key(&mut tx, org, &Secret::new(key.clone()), "k", None).await.expect("insert key");
    tx.commit().await.unwrap();
    (org, stack.client().with_key(&key))
}

fn id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_owned()
}

fn ids(list: &Value) -> BTreeSet<String> {
    list["data"].as_array().expect("data").iter().map(id).collect()
}

/// Every id visible in the org's lists.
async fn listed_ids(api: &Client) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for list in [
        "/v1/agents?include_archived=true&limit=200",
        "/v1/sessions?limit=200",
        "/v1/providers?limit=200",
        "/v1/models?limit=200",
    ] {
        out.extend(ids(&api.get(list).await.expect(200)));
    }
    out
}

#[tokio::test]
async fn another_orgs_ids_answer_404_and_change_nothing() {
    // Arrange: org A (the stack's key) owns a provider, a model, an agent and a session with a completed turn.
    let stack = Stack::start().await;
    let pool = PgPool::connect(&stack.db.url).await.expect("connect test db");
    let a = stack.client();
    let provider = a
        .post("/v1/providers", json!({"name": "a-provider", "base_url": stack.sim.base_url(), "api_key": "sk-org-a-secret"}))
        .await
        .expect(201);
    let prv = id(&provider);
    let spare =
        id(&a.post("/v1/providers", json!({"name": "a-spare", "base_url": "https://example.invalid/v1"})).await.expect(201));
    let mdl = id(&a.post("/v1/models", json!({"provider_id": prv, "name": "sim-1"})).await.expect(201));
    let agt_body = json!({"name": "a-agent", "system_prompt": "Be brief.", "model_id": mdl, "capabilities": ["math"]});
    let agent = a
        .send(a.http.post(format!("{}/v1/agents", a.base)).header("Idempotency-Key", "shared-key").json(&agt_body))
        .await
        .expect(201);
    let agt = id(&agent);
    let ses = id(&a.post("/v1/sessions", json!({"agent_id": agt, "title": "a's session"})).await.expect(201));
    a.say(&ses, r#"!tool math {"expression":"2+2"}"#).await;
    let events = a.wait_for(&ses, "session.idled", 1).await;
    assert!(events.iter().any(|e| e["type"] == "turn.completed"), "A's turn completed: {events:#?}");
    let evt = id(&events[0]);
    a.send(a.http.put(format!("{}/v1/sessions/{ses}/files/content?path=/a.txt", a.base)).body("a's file")).await.expect(201);
    a.send(a.http.put(format!("{}/v1/sessions/{ses}/kv/k", a.base)).json(&json!({"value": "a's value"}))).await.expect(201);
    let events = a.events(&ses).await;

    // And a session waiting for an approval and for a client tool.
    let waiter = id(&a
        .post(
            "/v1/agents",
            json!({"name": "a-waiter", "capabilities": ["math"], "tool_policies": {"math": "ask"},
                   "client_tools": [{"name": "lookup_order", "parameters": {"type": "object"}}]}),
        )
        .await
        .expect(201));
    let wses = id(&a.post("/v1/sessions", json!({"agent_id": waiter})).await.expect(201));
    a.say(&wses, r#"!tool math {"expression":"1+1"}"#).await;
    let waiting = a.wait_for(&wses, "turn.waiting", 1).await;
    let asked = waiting.iter().find(|e| e["type"] == "tool.approval_requested").expect("approval requested")["data"].clone();
    let (apr, sha, call) = (asked["approval_id"].clone(), asked["arguments_sha256"].clone(), asked["tool_call_id"].clone());

    let (b_org, b) = second_org(&stack, &pool).await;
    let b_agent = id(&b.post("/v1/agents", json!({"name": "b-agent"})).await.expect(201));
    let b_session = id(&b.post("/v1/sessions", json!({"agent_id": b_agent})).await.expect(201));

    let snapshot = |path: String| {
        let a = a.clone();
        async move { a.get(&path).await.expect(200) }
    };
    let snapshot_all = || async {
        (
            snapshot(format!("/v1/agents/{agt}")).await,
            snapshot(format!("/v1/providers/{prv}")).await,
            snapshot(format!("/v1/providers/{spare}")).await,
            snapshot(format!("/v1/models/{mdl}")).await,
            snapshot(format!("/v1/sessions/{ses}")).await,
            snapshot(format!("/v1/sessions/{ses}/messages")).await,
            snapshot(format!("/v1/sessions/{wses}/pending")).await,
            snapshot(format!("/v1/sessions/{ses}/files?recursive=true")).await,
            snapshot(format!("/v1/sessions/{ses}/kv")).await,
        )
    };
    let before = snapshot_all().await;
    let a_ids = listed_ids(&a).await;
    for x in [&prv, &spare, &mdl, &agt, &ses] {
        assert!(a_ids.contains(x), "A lists its own {x}");
    }

    // Act + Assert: B uses A's ids on every endpoint that takes one.
    let msg = json!({"content": [{"type": "text", "text": "hijack"}]});
    let probes = vec![
        b.get(&format!("/v1/agents/{agt}")).await,
        b.patch(&format!("/v1/agents/{agt}"), json!({"name": "pwned"})).await,
        b.delete(&format!("/v1/agents/{agt}")).await,
        b.get(&format!("/v1/providers/{prv}")).await,
        b.delete(&format!("/v1/providers/{prv}")).await,
        b.get(&format!("/v1/providers/{spare}")).await,
        b.delete(&format!("/v1/providers/{spare}")).await,
        b.get(&format!("/v1/models/{mdl}")).await,
        b.get(&format!("/v1/sessions/{ses}")).await,
        b.get(&format!("/v1/sessions/{ses}/messages")).await,
        b.post(&format!("/v1/sessions/{ses}/messages"), msg.clone()).await,
        b.get(&format!("/v1/sessions/{ses}/events")).await,
        b.get(&format!("/v1/sessions/{ses}/events?types=turn.completed")).await,
        b.get(&format!("/v1/sessions/{ses}/sse")).await,
        b.get(&format!("/v1/sessions/{ses}/sse?since_id={evt}")).await,
        b.post("/v1/sessions", json!({"agent_id": agt})).await,
        b.post("/v1/sessions", json!({"agent_id": b_agent, "model_id": mdl})).await,
        b.post("/v1/agents", json!({"name": "x", "model_id": mdl})).await,
        b.patch(&format!("/v1/agents/{b_agent}"), json!({"model_id": mdl})).await,
        b.post("/v1/models", json!({"provider_id": prv, "name": "m"})).await,
        b.post(&format!("/v1/sessions/{b_session}/messages"), json!({"content": msg["content"], "controls": {"model_id": mdl}}))
            .await,
        b.get(&format!("/v1/sessions/{wses}/pending")).await,
        b.post(&format!("/v1/sessions/{wses}/tool-results"), json!({"results": [{"tool_call_id": call, "output": "x"}]})).await,
        b.post(
            &format!("/v1/sessions/{wses}/approvals/{}", apr.as_str().unwrap()),
            json!({"decision": "approve", "arguments_sha256": sha}),
        )
        .await,
        b.post(
            &format!("/v1/sessions/{b_session}/approvals/{}", apr.as_str().unwrap()),
            json!({"decision": "deny", "arguments_sha256": sha}),
        )
        .await,
        b.post(&format!("/v1/sessions/{wses}/cancel"), json!({})).await,
        // Session storage: every route (storage.rs also walls the tools and the sessions of one org).
        b.send(b.http.put(format!("{}/v1/sessions/{ses}/files/content?path=/x", b.base)).body("pwned")).await,
        b.get(&format!("/v1/sessions/{ses}/files/content?path=/a.txt")).await,
        b.get(&format!("/v1/sessions/{ses}/files?recursive=true")).await,
        b.delete(&format!("/v1/sessions/{ses}/files?path=/a.txt")).await,
        b.post(&format!("/v1/sessions/{ses}/files/move"), json!({"from": "/a.txt", "to": "/b.txt"})).await,
        b.post(&format!("/v1/sessions/{ses}/files/copy"), json!({"from": "/a.txt", "to": "/b.txt"})).await,
        b.post(&format!("/v1/sessions/{ses}/files/search"), json!({"pattern": "a"})).await,
        b.send(b.http.put(format!("{}/v1/sessions/{ses}/kv/k", b.base)).json(&json!({"value": 1}))).await,
        b.get(&format!("/v1/sessions/{ses}/kv/k")).await,
        b.delete(&format!("/v1/sessions/{ses}/kv/k")).await,
        b.get(&format!("/v1/sessions/{ses}/kv")).await,
    ];
    for (i, reply) in probes.into_iter().enumerate() {
        assert_eq!(reply.status, 404, "probe #{i} must be 404; body: {}", reply.body);
        assert_eq!(reply.content_type, "application/problem+json");
        assert_eq!(reply.body["code"], "not_found", "probe #{i}");
    }
    // Resuming B's own stream from A's event is not a way in either.
    b.get(&format!("/v1/sessions/{b_session}/sse?since_id={evt}")).await.expect_problem(400, "unknown_event_id");
    // Filters and cursors that name A's ids reveal nothing.
    assert!(ids(&b.get(&format!("/v1/sessions?agent_id={agt}")).await.expect(200)).is_empty());
    let after_foreign = ids(&b.get(&format!("/v1/agents?after={agt}&include_archived=true")).await.expect(200));
    assert!(
        after_foreign.is_subset(&BTreeSet::from([b_agent.clone()])),
        "a foreign cursor only positions B's own list: {after_foreign:?}"
    );
    // Idempotency keys are per org: B's identical request with A's key is a new agent, not A's replayed.
    let b_same = b
        .send(
            b.http
                .post(format!("{}/v1/agents", b.base))
                .header("Idempotency-Key", "shared-key")
                .json(&json!({"name": "a-agent"})),
        )
        .await;
    let b_same = b_same.expect(201);
    assert_ne!(id(&b_same), agt);
    let b_replay =
        b.send(b.http.post(format!("{}/v1/agents", b.base)).header("Idempotency-Key", "shared-key").json(&agt_body)).await;
    assert_eq!(b_replay.status, 422, "B's key namespace has its own entry, A's body differs: {}", b_replay.body);

    // B's lists never contain A's ids.
    let b_ids = listed_ids(&b).await;
    assert!(b_ids.is_disjoint(&a_ids), "B sees A's ids: {:?}", b_ids.intersection(&a_ids).collect::<Vec<_>>());
    assert_eq!(b_ids, BTreeSet::from([b_agent.clone(), id(&b_same), b_session.clone()]));

    // No side effect on A: same resources, same log, still listed.
    let after = snapshot_all().await;
    assert_eq!(after, before);
    assert!(after.0["archived_at"].is_null());
    assert_eq!(after.0["name"], "a-agent");
    assert_eq!(a.events(&ses).await, events, "no new events in A's session");
    assert_eq!(a.events(&wses).await, waiting, "A's waiting session is untouched");
    assert_eq!(listed_ids(&a).await, a_ids);
    // And at the bottom: B's org owns only what B created, and no row points across orgs.
    let (b_agents, b_sessions, b_providers, crossing): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM agents WHERE org_id = $1),
                (SELECT count(*) FROM sessions WHERE org_id = $1),
                (SELECT count(*) FROM providers WHERE org_id = $1) + (SELECT count(*) FROM models WHERE org_id = $1),
                (SELECT count(*) FROM sessions s JOIN agents g ON g.id = s.agent_id WHERE s.org_id <> g.org_id)
              + (SELECT count(*) FROM agents g JOIN models m ON m.id = g.model_id WHERE g.org_id <> m.org_id)
              + (SELECT count(*) FROM events e JOIN sessions s ON s.id = e.session_id WHERE e.org_id <> s.org_id)
              + (SELECT count(*) FROM pending_calls p JOIN turns t ON t.id = p.turn_id WHERE p.org_id <> t.org_id)",
    )
    .bind(b_org)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!((b_agents, b_sessions, b_providers, crossing), (2, 1, 0, 0));
    pool.close().await;
}

const BOOT_CANARY: &str = "sk-test-LEAKCANARY-1234567890";
const API_CANARY: &str = "sk-LEAKCANARY-api-created";

#[tokio::test]
async fn provider_secrets_never_leak() {
    // Arrange: the default provider and an API-created one both hold a canary key.
    let stack = Stack::start_with(StackOptions { provider_api_key: Some(BOOT_CANARY.into()), ..Default::default() }).await;
    let pool = PgPool::connect(&stack.db.url).await.expect("connect test db");
    let api = stack.client();
    let mut seen = String::new();

    let created = api
        .post("/v1/providers", json!({"name": "canary", "base_url": stack.sim.base_url(), "api_key": API_CANARY}))
        .await
        .expect(201);
    assert_eq!(created["has_api_key"], true);
    let fields: BTreeSet<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields, BTreeSet::from(["id", "name", "base_url", "has_api_key", "created_at"]));
    let keyless =
        api.post("/v1/providers", json!({"name": "keyless", "base_url": "https://example.invalid/v1"})).await.expect(201);
    assert_eq!(keyless["has_api_key"], false);
    seen.push_str(&created.to_string());
    seen.push_str(&keyless.to_string());
    let canary_model = id(&api.post("/v1/models", json!({"provider_id": id(&created), "name": "sim-1"})).await.expect(201));

    // Error bodies around a secret must not echo it.
    let error_bodies = [
        api.post("/v1/providers", json!({"name": "canary", "base_url": stack.sim.base_url(), "api_key": API_CANARY})).await,
        api.post("/v1/providers", json!({"name": "bad-url", "base_url": "ftp://x", "api_key": API_CANARY})).await,
        api.post("/v1/providers", json!({"name": "creds", "base_url": format!("https://user:{API_CANARY}@example.com/v1")}))
            .await,
        api.post("/v1/providers", json!({"name": "long", "base_url": "https://x/v1", "api_key": API_CANARY.repeat(200)})).await,
        api.post(
            "/v1/providers",
            json!({"name": "extra", "base_url": "https://x/v1", "api_key": API_CANARY, "secret": API_CANARY}),
        )
        .await,
        api.post("/v1/providers", json!({"name": "", "base_url": "https://x/v1", "api_key": API_CANARY})).await,
        api.post("/v1/providers", json!({"name": ["x"], "base_url": "https://x/v1", "api_key": API_CANARY})).await,
        api.send(
            api.http
                .post(format!("{}/v1/providers", api.base))
                .header("content-type", "application/json")
                .body(format!(r#"{{"name": "broken", "api_key": "{API_CANARY}""#)),
        )
        .await,
    ];
    for reply in error_bodies {
        assert!((400..500).contains(&reply.status), "client error, got {}: {}", reply.status, reply.body);
        assert_eq!(reply.content_type, "application/problem+json");
        seen.push_str(&reply.body.to_string());
    }

    // Act: full tool turns through both providers, watched live over SSE (deltas included), plus a failing call.
    let default_agent = id(&api.post("/v1/agents", json!({"name": "default", "capabilities": ["math"]})).await.expect(201));
    let canary_agent = id(&api
        .post("/v1/agents", json!({"name": "canary", "capabilities": ["math"], "model_id": canary_model}))
        .await
        .expect(201));
    let mut sessions = Vec::new();
    for agent in [&default_agent, &canary_agent] {
        let ses = id(&api.post("/v1/sessions", json!({"agent_id": agent})).await.expect(201));
        let mut sse = api.sse(&ses, "", None).await;
        assert_eq!(sse.next().await.unwrap().event, "connected");
        api.say(&ses, r#"!tool math {"expression":"6*7"}"#).await;
        let frames = sse.until("session.idled").await;
        assert!(frames.iter().any(|f| f.event == "turn.completed"), "tool turn completed: {frames:#?}");
        api.say(&ses, "!fail 401").await;
        let more = sse.until("session.idled").await;
        assert!(more.iter().any(|f| f.event == "turn.failed"), "auth failure fails the turn: {more:#?}");
        for f in frames.iter().chain(&more) {
            seen.push_str(&format!("{} {:?} {}\n", f.event, f.id, f.data));
        }
        sessions.push(ses);
    }

    // Assert: nothing the API answers carries either key.
    let mut paths: Vec<String> = [
        "/v1/providers",
        "/v1/models",
        "/v1/agents?include_archived=true",
        "/v1/sessions",
        "/v1/capabilities",
        "/health",
        "/ready",
        "/openapi.json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for list in ["/v1/providers", "/v1/models", "/v1/agents", "/v1/sessions"] {
        for x in ids(&api.get(list).await.expect(200)) {
            paths.push(format!("{list}/{x}"));
        }
    }
    for ses in &sessions {
        paths.push(format!("/v1/sessions/{ses}/messages?limit=200"));
        paths.push(format!("/v1/sessions/{ses}/events?limit=1000"));
        for e in api.events(ses).await {
            seen.push_str(&e.to_string());
        }
    }
    for path in &paths {
        let reply = api.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        seen.push_str(&reply.body.to_string());
    }
    let providers = api.get("/v1/providers").await.expect(200);
    for p in providers["data"].as_array().unwrap() {
        assert!(p.get("api_key").is_none() && p.get("api_key_ciphertext").is_none(), "no key field: {p}");
        let expected = p["name"] != "keyless";
        assert_eq!(p["has_api_key"], expected, "{p}");
    }
    assert!(paths.len() > 12, "covered: {paths:?}");
    assert!(!seen.contains("LEAKCANARY"), "a provider key leaked into a response, event or frame");

    // At rest: the ciphertexts are not the plaintext, and no other row holds it either.
    let sealed: Vec<(String, Option<Vec<u8>>)> =
        sqlx::query_as("SELECT name, api_key_ciphertext FROM providers").fetch_all(&pool).await.expect("providers");
    assert_eq!(sealed.len(), 3);
    for (name, bytes) in &sealed {
        let Some(bytes) = bytes else {
            assert_eq!(name, "keyless");
            continue;
        };
        for plain in [BOOT_CANARY, API_CANARY, "LEAKCANARY"] {
            assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()), "provider {name}'s key is stored in clear");
        }
    }
    let hex_canary: String = "LEAKCANARY".bytes().map(|b| format!("{b:02x}")).collect();
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables
          WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    assert!(tables.iter().any(|(_, t)| t == "events"));
    for (schema, table) in &tables {
        let sql = format!(
            r#"SELECT count(*) FROM "{schema}"."{table}" t WHERE t::text LIKE '%LEAKCANARY%' OR t::text LIKE '%{hex_canary}%'"#
        );
        let hits: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&pool).await.expect("scan table");
        assert_eq!(hits, 0, "{schema}.{table} holds a provider key in clear");
    }
    pool.close().await;
}
