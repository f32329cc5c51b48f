//! The org key chain under rotation: org data keys and the master key rotate
//! online, secrets stay readable, and the old master key can then be dropped.

use serde_json::json;
use turnstone_core::crypto::KeyRing;
use turnstone_core::ids::{ModelId, OrgId, TypedId};
use turnstone_core::{db, keychain, providers};
use turnstone_tests::Stack;
use uuid::Uuid;

async fn provider_key(url: &str, ring: &KeyRing, org: OrgId, model: ModelId) -> String {
    let pool = db::connect(url, 1).await.unwrap();
    let mut tx = db::begin_org(&pool, org).await.unwrap();
    let ep = providers::resolve_endpoint(&mut tx, ring, org, Some(model)).await.unwrap();
    ep.api_key.unwrap().expose_secret().to_owned()
}

#[tokio::test]
async fn org_and_master_keys_rotate_without_losing_secrets() {
    let stack = Stack::start().await;
    let api = stack.client();
    let provider = api
        .post("/v1/providers", json!({"name": "second", "base_url": stack.sim.base_url(), "api_key": "sk-rotate-me"}))
        .await
        .expect(201);
    let model = api.post("/v1/models", json!({"provider_id": provider["id"], "name": "sim-2"})).await.expect(201);
    let model_id = ModelId::parse(model["id"].as_str().unwrap()).unwrap();
    let owner = db::connect(&stack.db.url, 2).await.unwrap();
    let org: OrgId = sqlx::query_scalar("SELECT org_id FROM providers WHERE name = 'second'").fetch_one(&owner).await.unwrap();
    let old_ring = KeyRing::parse(&stack.master_key).unwrap();
    let before: Vec<u8> =
        sqlx::query_scalar("SELECT api_key_ciphertext FROM providers WHERE name = 'second'").fetch_one(&owner).await.unwrap();

    // Org data key: fresh key, secrets re-sealed under it, old key retired.
    let done = keychain::rotate_org_key(&owner, &old_ring, org).await.unwrap();
    assert_eq!((done.keys, done.secrets), (1, 1));
    let after: Vec<u8> =
        sqlx::query_scalar("SELECT api_key_ciphertext FROM providers WHERE name = 'second'").fetch_one(&owner).await.unwrap();
    assert_ne!(before, after);
    let active: Uuid = sqlx::query_scalar("SELECT id FROM org_keys WHERE org_id = $1 AND retired_at IS NULL")
        .bind(org)
        .fetch_one(&owner)
        .await
        .unwrap();
    assert_eq!(turnstone_core::crypto::sealed_data_key_id(&after).unwrap(), active);
    assert_eq!(provider_key(&stack.db.as_role("turnstone_worker"), &old_ring, org, model_id).await, "sk-rotate-me");

    // Master key: the new key first, the old one still listed; re-wrap; re-run is a no-op.
    let new_spec = KeyRing::generate_spec("k2");
    let both = KeyRing::parse(&format!("{new_spec},{}", stack.master_key)).unwrap();
    let done = keychain::rotate_master_key(&owner, &both).await.unwrap();
    assert!(done.keys >= 2, "the retired and the active key were re-wrapped: {done:?}");
    assert_eq!(keychain::rotate_master_key(&owner, &both).await.unwrap().keys, 0, "resumable: nothing left to do");
    let on_old: i64 =
        sqlx::query_scalar("SELECT count(*) FROM org_keys WHERE master_key_id <> 'k2'").fetch_one(&owner).await.unwrap();
    assert_eq!(on_old, 0);
    // The old master key can now be removed.
    let new_only = KeyRing::parse(&new_spec).unwrap();
    assert_eq!(provider_key(&stack.db.as_role("turnstone_worker"), &new_only, org, model_id).await, "sk-rotate-me");
    let pool = db::connect(&stack.db.as_role("turnstone_worker"), 1).await.unwrap();
    let mut tx = db::begin_org(&pool, org).await.unwrap();
    assert!(
        providers::resolve_endpoint(&mut tx, &old_ring, org, Some(model_id)).await.is_err(),
        "the old master key alone no longer opens anything"
    );
}

#[tokio::test]
async fn the_rotation_commands_run_from_the_binary() {
    let stack = Stack::start().await;
    let api = stack.client();
    api.post("/v1/providers", json!({"name": "p", "base_url": stack.sim.base_url(), "api_key": "sk-cli"})).await.expect(201);
    let new_spec = KeyRing::generate_spec("k9");
    let bin = turnstone_tests::procs::bin_dir().join("turnstone-api");
    let out = tokio::process::Command::new(&bin)
        .args(["keys", "rotate-master"])
        .env("DATABASE_URL", &stack.db.url)
        .env("TURNSTONE_MASTER_KEY", format!("{new_spec},{}", stack.master_key))
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rotated: 1 org(s)"), "{}", String::from_utf8_lossy(&out.stdout));
    let bad = tokio::process::Command::new(&bin)
        .args(["keys", "rotate-org", "ses_x"])
        .env("DATABASE_URL", &stack.db.url)
        .env("TURNSTONE_MASTER_KEY", &new_spec)
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
}
