//! Turns that wait for people: client tools and approvals park a turn that
//! holds no worker, lease or connection; results, decisions, deadlines, new
//! messages and cancels resolve it, first writer wins; and kills of workers
//! and of the API at every boundary lose nothing and run nothing twice.

use std::collections::HashMap;

use serde_json::{Value, json};
use turnstone_tests::{Client, Stack, StackOptions, procs};

/// An agent with the client tool `lookup_order` (`timeout_secs`) and these
/// capabilities and policies; returns a new session of it.
async fn waiting_session(api: &Client, capabilities: &[&str], policies: Value, timeout_secs: i32) -> String {
    let agent = api
        .post(
            "/v1/agents",
            json!({
                "name": "waiter", "capabilities": capabilities, "tool_policies": policies,
                "client_tools": [{"name": "lookup_order", "description": "Looks an order up.",
                                  "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
                                  "timeout_secs": timeout_secs}],
            }),
        )
        .await
        .expect(201);
    let session = api.post("/v1/sessions", json!({"agent_id": agent["id"]})).await.expect(201);
    session["id"].as_str().unwrap().to_owned()
}

const LOOKUP: &str = r#"!tool lookup_order {"order_id": "A1"}"#;

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

/// The pending client call's id (the session waits for exactly one).
async fn pending_call(api: &Client, session: &str) -> String {
    let pending = api.get(&format!("/v1/sessions/{session}/pending")).await.expect(200);
    let data = pending["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{pending:#}");
    data[0]["tool_call_id"].as_str().unwrap().to_owned()
}

async fn post_result(api: &Client, session: &str, call: &str, output: &str) -> turnstone_tests::Reply {
    api.post(&format!("/v1/sessions/{session}/tool-results"), json!({"results": [{"tool_call_id": call, "output": output}]}))
        .await
}

async fn owner_pool(stack: &Stack) -> sqlx::PgPool {
    sqlx::PgPool::connect(&stack.db.url).await.unwrap()
}

/// Tasks held by a worker (`running`), and tasks due now.
async fn held_and_due(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'running'), count(*) FILTER (WHERE status = 'pending' AND run_at <= now())
           FROM task_queue",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every step result and lifecycle marker appears once per turn, and the sequence is gap-free.
fn assert_once_each(events: &[Value]) {
    let seqs: Vec<i64> = events.iter().map(|e| e["sequence"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "gap-free sequence");
    let mut seen = HashMap::new();
    for e in events {
        let kind = e["type"].as_str().unwrap();
        let key = match kind {
            "output.message.completed" => format!("{kind}:{}", e["data"]["iteration"]),
            "tool.completed" | "tool.started" | "tool.approval_requested" | "tool.approval_resolved" => {
                format!("{kind}:{}:{}", e["data"]["iteration"], e["data"]["tool_call_id"])
            }
            "turn.started" | "turn.completed" | "turn.failed" | "turn.cancelled" | "turn.waiting" => {
                format!("{kind}:{}", e["data"]["iteration"])
            }
            _ => continue,
        };
        *seen.entry((e["turn_id"].as_str().unwrap_or_default().to_owned(), key)).or_insert(0) += 1;
    }
    for ((turn, key), n) in seen {
        assert_eq!(n, 1, "{key} appears {n} times in turn {turn}: {events:#?}");
    }
}

#[tokio::test]
async fn a_client_tool_parks_the_turn_holding_nothing_and_its_result_resumes_it() {
    // Arrange
    let stack = Stack::start().await;
    let api = stack.client();
    let pool = owner_pool(&stack).await;
    let session = waiting_session(&api, &[], json!({}), 300).await;

    // Act: the model calls the client tool.
    api.say(&session, LOOKUP).await;
    let events = api.wait_for(&session, "turn.waiting", 1).await;

    // Assert: it waits, and nothing holds it.
    let requested = of_type(&events, "tool.call_requested");
    assert_eq!(requested.len(), 1);
    let call = &requested[0]["data"]["calls"][0];
    assert_eq!(call["name"], "lookup_order");
    assert_eq!(call["arguments"], json!({"order_id": "A1"}));
    let session_row = api.get(&format!("/v1/sessions/{session}")).await.expect(200);
    assert_eq!(session_row["status"], "waiting");
    assert_eq!(held_and_due(&pool).await, (0, 0), "no worker holds the waiting turn, and nothing is due");
    let id = pending_call(&api, &session).await;
    assert_eq!(id, call["tool_call_id"].as_str().unwrap());

    // Bad answers change nothing.
    post_result(&api, &session, "call_nope", "x").await.expect_problem(422, "unknown_tool_call");

    // Act: the client answers.
    let answer = post_result(&api, &session, &id, "shipped").await.expect(200);
    assert_eq!(answer, json!({"accepted": [id], "resumed": true}));
    let events = api.wait_for(&session, "turn.completed", 1).await;

    // Assert: resumed in the same transaction, completed with the client's result.
    let log = kinds(&events);
    let resumed_at = log.iter().position(|k| *k == "turn.resumed").expect("turn.resumed");
    let result_at = log.iter().position(|k| *k == "tool.completed").expect("tool.completed");
    assert_eq!(resumed_at, result_at + 1, "the result and the resume commit together: {log:?}");
    assert_eq!(events[result_at]["data"]["by"], "client");
    let last = of_type(&events, "output.message.completed").pop().unwrap().clone();
    assert_eq!(last["data"]["message"]["content"][0]["text"], "tool lookup_order returned: shipped");
    assert_once_each(&events);
    post_result(&api, &session, &id, "again").await.expect_problem(409, "already_resolved");
    assert_eq!(api.get(&format!("/v1/sessions/{session}/pending")).await.expect(200)["data"], json!([]));
    // The resume ran on the wait's own task: no timer is left behind.
    turnstone_tests::wait_for_condition("the turn's task is gone", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM task_queue").fetch_one(&pool).await.unwrap() == 0
    })
    .await;
}

#[tokio::test]
async fn racing_results_give_one_answer_and_one_conflict_and_a_key_replays() {
    let stack = Stack::start().await;
    let api = stack.client();
    for keyed in [false, true] {
        let session = waiting_session(&api, &[], json!({}), 300).await;
        api.say(&session, LOOKUP).await;
        api.wait_for(&session, "turn.waiting", 1).await;
        let id = pending_call(&api, &session).await;

        // Act: two posts of the same result at once.
        let post = |out: &'static str| {
            let mut req = api
                .http
                .post(format!("{}/v1/sessions/{session}/tool-results", api.base))
                .bearer_auth(&api.key)
                .json(&json!({"results": [{"tool_call_id": id, "output": "same"}]}));
            if keyed {
                req = req.header("Idempotency-Key", format!("k-{session}"));
            }
            let _ = out;
            api.send(req)
        };
        let (a, b) = tokio::join!(post("a"), post("b"));

        // Assert
        let mut statuses = vec![a.status, b.status];
        statuses.sort();
        if keyed {
            assert_eq!(statuses, vec![200, 200], "the same key replays the first answer");
            assert_eq!(a.body, b.body);
        } else {
            assert_eq!(statuses, vec![200, 409], "first writer wins");
        }
        let events = api.wait_for(&session, "turn.completed", 1).await;
        assert_eq!(of_type(&events, "tool.completed").len(), 1);
        assert_eq!(of_type(&events, "turn.resumed").len(), 1);
    }
}

#[tokio::test]
async fn a_deadline_answers_the_call_with_a_timeout_and_a_late_result_conflicts() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = waiting_session(&api, &[], json!({}), 1).await;
    api.say(&session, LOOKUP).await;
    let waiting = api.wait_for(&session, "turn.waiting", 1).await;
    let id = of_type(&waiting, "tool.call_requested")[0]["data"]["calls"][0]["tool_call_id"].as_str().unwrap().to_owned();

    // Act: nobody answers; the deadline task fires.
    let events = api.wait_for(&session, "turn.completed", 1).await;

    // Assert
    let done = of_type(&events, "tool.completed");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["data"]["error"], r#"{"error":"timeout"}"#);
    assert_eq!(of_type(&events, "turn.resumed")[0]["data"]["reason"], "timeout");
    post_result(&api, &session, &id, "too late").await.expect_problem(409, "already_resolved");
    assert_once_each(&events);
}

#[tokio::test]
async fn an_approval_runs_the_held_call_with_no_model_call_in_between() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = waiting_session(&api, &["math"], json!({"ma*": "ask"}), 300).await;
    api.say(&session, r#"!tool math {"expression": "6*7"}"#).await;
    let events = api.wait_for(&session, "turn.waiting", 1).await;
    let asked = of_type(&events, "tool.approval_requested")[0]["data"].clone();
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    let sha = asked["arguments_sha256"].as_str().unwrap().to_owned();
    assert_eq!(sha, turnstone_core::tools::arguments_sha256(r#"{"expression":"6*7"}"#), "canonical JSON, sorted keys");
    let pending = api.get(&format!("/v1/sessions/{session}/pending")).await.expect(200);
    assert_eq!(pending["data"][0]["type"], "approval");
    assert_eq!(pending["data"][0]["approval_id"], approval.as_str());
    assert!(of_type(&events, "tool.completed").is_empty(), "nothing ran before the approval");
    let url = format!("/v1/sessions/{session}/approvals/{approval}");

    // A decision about other arguments changes nothing.
    api.post(&url, json!({"decision": "approve", "arguments_sha256": "0".repeat(64)}))
        .await
        .expect_problem(409, "arguments_changed");
    // Another session's approval is not found.
    let other = waiting_session(&api, &[], json!({}), 300).await;
    api.post(&format!("/v1/sessions/{other}/approvals/{approval}"), json!({"decision": "approve", "arguments_sha256": sha}))
        .await
        .expect_problem(404, "not_found");

    // Act
    let decided = api.post(&url, json!({"decision": "approve", "reason": "fine", "arguments_sha256": sha})).await.expect(200);
    let events = api.wait_for(&session, "turn.completed", 1).await;

    // Assert: the approved call ran right after the decision, before any model call.
    assert_eq!(decided["resumed"], true);
    let log = kinds(&events);
    let resolved = log.iter().position(|k| *k == "tool.approval_resolved").unwrap();
    let ran = log.iter().position(|k| *k == "tool.completed").unwrap();
    assert!(ran > resolved);
    assert!(
        !log[resolved..ran].contains(&"output.message.completed"),
        "no model call between the approval and the execution: {log:?}"
    );
    assert_eq!(events[ran]["data"]["result"], "42");
    assert_eq!(of_type(&events, "output.message.completed").len(), 2, "one call to ask, one to answer");
    api.post(&url, json!({"decision": "deny", "arguments_sha256": sha})).await.expect_problem(409, "already_resolved");
    assert_once_each(&events);
}

#[tokio::test]
async fn a_denial_or_a_deny_policy_gives_the_model_an_error_and_the_turn_goes_on() {
    let stack = Stack::start().await;
    let api = stack.client();
    // Asked, then denied with a reason.
    let session = waiting_session(&api, &["math"], json!({"math": "ask"}), 300).await;
    api.say(&session, r#"!tool math {"expression": "1+1"}"#).await;
    let events = api.wait_for(&session, "turn.waiting", 1).await;
    let asked = of_type(&events, "tool.approval_requested")[0]["data"].clone();
    let url = format!("/v1/sessions/{session}/approvals/{}", asked["approval_id"].as_str().unwrap());
    api.post(&url, json!({"decision": "deny", "reason": "not today", "arguments_sha256": asked["arguments_sha256"]}))
        .await
        .expect(200);
    let events = api.wait_for(&session, "turn.completed", 1).await;
    let done = of_type(&events, "tool.completed");
    assert_eq!(done[0]["data"]["error"], r#"{"error":"denied","reason":"not today"}"#);

    // A deny policy: never run, never wait.
    let session = waiting_session(&api, &["math"], json!({"*": "deny"}), 300).await;
    api.say(&session, r#"!tool math {"expression": "1+1"}"#).await;
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert!(of_type(&events, "turn.waiting").is_empty());
    assert_eq!(of_type(&events, "tool.completed")[0]["data"]["is_error"], true);
    assert!(of_type(&events, "tool.completed")[0]["data"]["error"].as_str().unwrap().contains("denied"));
}

#[tokio::test]
async fn a_new_message_supersedes_the_wait_and_the_waiting_turn_finishes_first() {
    let stack = Stack::start().await;
    let api = stack.client();
    let session = waiting_session(&api, &[], json!({}), 300).await;
    let first = api.say(&session, LOOKUP).await;
    api.wait_for(&session, "turn.waiting", 1).await;

    // Act
    let second = api.say(&session, "hello again").await;

    // Assert: queued behind, the wait ended with an error result, turns in order.
    assert_eq!(second["turn_status"], "pending");
    let events = api.wait_for(&session, "turn.completed", 2).await;
    let done = of_type(&events, "tool.completed");
    assert_eq!(done[0]["data"]["error"], r#"{"error":"superseded by a new message"}"#);
    let completed: Vec<&str> = of_type(&events, "turn.completed").iter().map(|e| e["turn_id"].as_str().unwrap()).collect();
    assert_eq!(completed, vec![first["turn_id"].as_str().unwrap(), second["turn_id"].as_str().unwrap()]);
    let log = kinds(&events);
    let first_done = log.iter().position(|k| *k == "turn.completed").unwrap();
    let second_started = log.iter().rposition(|k| *k == "turn.started").unwrap();
    assert!(first_done < second_started, "the waiting turn finishes before the new one starts: {log:?}");
    assert_eq!(api.get(&format!("/v1/sessions/{session}/pending")).await.expect(200)["data"], json!([]));
}

#[tokio::test]
async fn cancel_while_waiting_cancels_the_calls_and_the_turn() {
    let stack = Stack::start().await;
    let api = stack.client();
    let pool = owner_pool(&stack).await;
    let session = waiting_session(&api, &[], json!({}), 300).await;
    api.say(&session, LOOKUP).await;
    api.wait_for(&session, "turn.waiting", 1).await;
    let id = pending_call(&api, &session).await;

    // Act
    let cancelled = api.post(&format!("/v1/sessions/{session}/cancel"), json!({})).await.expect(200);

    // Assert
    assert_eq!(cancelled["state"], "cancelled");
    let events = api.wait_for(&session, "turn.cancelled", 1).await;
    assert_eq!(of_type(&events, "tool.completed")[0]["data"]["error"], r#"{"error":"cancelled"}"#);
    assert_eq!(api.get(&format!("/v1/sessions/{session}")).await.expect(200)["status"], "idle");
    assert_eq!(api.get(&format!("/v1/sessions/{session}/pending")).await.expect(200)["data"], json!([]));
    post_result(&api, &session, &id, "late").await.expect_problem(409, "already_resolved");
    // Its timer was made due, and a worker deletes it.
    turnstone_tests::wait_for_condition("the cancelled turn's task is gone", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM task_queue").fetch_one(&pool).await.unwrap() == 0
    })
    .await;
}

/// An in-process stack with no workers: the tests' workers are child processes.
async fn bare_stack() -> Stack {
    Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await
}

#[tokio::test]
async fn a_worker_killed_right_after_the_wait_commits_loses_nothing() {
    let stack = bare_stack().await;
    let api = stack.client();
    let pool = owner_pool(&stack).await;
    let session = waiting_session(&api, &[], json!({}), 300).await;
    let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", "after_wait_commit".into())]);
    api.say(&session, LOOKUP).await;
    assert_eq!(doomed.wait().await, None, "the worker died by signal after the wait committed");

    // The wait is durable and held by nobody.
    let id = pending_call(&api, &session).await;
    assert_eq!(held_and_due(&pool).await, (0, 0));
    post_result(&api, &session, &id, "shipped").await.expect(200);
    let _rescuer = procs::worker(&stack, &[]);
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert_once_each(&events);
    assert_eq!(
        of_type(&events, "output.message.completed").last().unwrap()["data"]["message"]["content"][0]["text"],
        "tool lookup_order returned: shipped"
    );
}

#[tokio::test]
async fn a_worker_killed_before_the_wait_commits_is_replaced_and_the_turn_parks_once() {
    let stack = bare_stack().await;
    let api = stack.client();
    let session = waiting_session(&api, &[], json!({}), 300).await;
    let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", "before_wait_commit".into())]);
    api.say(&session, LOOKUP).await;
    assert_eq!(doomed.wait().await, None);
    let _rescuer = procs::worker(&stack, &[]);
    api.wait_for(&session, "turn.waiting", 1).await;
    let id = pending_call(&api, &session).await;
    post_result(&api, &session, &id, "shipped").await.expect(200);
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert_once_each(&events);
}

#[tokio::test]
async fn a_worker_killed_while_resuming_is_replaced_and_the_result_runs_once() {
    let stack = bare_stack().await;
    let api = stack.client();
    let session = waiting_session(&api, &[], json!({}), 300).await;
    let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", "resuming".into())]);
    api.say(&session, LOOKUP).await;
    api.wait_for(&session, "turn.waiting", 1).await;
    let id = pending_call(&api, &session).await;

    // Act: the result resumes the turn on the doomed worker, which dies taking it.
    post_result(&api, &session, &id, "shipped").await.expect(200);
    assert_eq!(doomed.wait().await, None, "the worker died while resuming");
    let _rescuer = procs::worker(&stack, &[]);

    // Assert
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert_once_each(&events);
    assert_eq!(of_type(&events, "tool.completed").len(), 1);
    assert_eq!(of_type(&events, "turn.resumed").len(), 1);
}

#[tokio::test]
async fn the_api_killed_between_storing_a_result_and_answering_loses_nothing() {
    let stack = bare_stack().await;
    let api = stack.client();
    let _worker = procs::worker(&stack, &[]);
    let session = waiting_session(&api, &[], json!({}), 300).await;
    api.say(&session, LOOKUP).await;
    api.wait_for(&session, "turn.waiting", 1).await;
    let id = pending_call(&api, &session).await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let mut doomed = procs::Proc::spawn(
        "turnstone-api",
        &[
            ("DATABASE_URL", stack.db.as_role("turnstone_api")),
            ("TURNSTONE_MIGRATE_DATABASE_URL", stack.db.url.clone()),
            ("TURNSTONE_MASTER_KEY", stack.master_key.clone()),
            ("TURNSTONE_API_ADDR", addr.clone()),
            ("TURNSTONE_CRASH_AT", "after_tool_results_commit".into()),
            // Its bootstrap keeps the stack's provider (it would point it at its own default otherwise).
            ("OPENAI_BASE_URL", stack.sim.base_url()),
            ("TURNSTONE_DEFAULT_MODEL", "sim-1".into()),
        ],
    );
    let doomed_api = Client::new(&format!("http://{addr}"), &api.key);
    turnstone_tests::wait_for_condition("the second API is ready", || async {
        doomed_api.http.get(format!("http://{addr}/ready")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let body = json!({"results": [{"tool_call_id": id, "output": "shipped"}]});
    let keyed = |c: &Client| {
        c.http
            .post(format!("{}/v1/sessions/{session}/tool-results", c.base))
            .bearer_auth(&c.key)
            .header("Idempotency-Key", "results-1")
            .json(&body)
    };

    // Act: the API stores the result and dies before answering.
    assert!(keyed(&doomed_api).send().await.is_err(), "no answer came");
    assert_eq!(doomed.wait().await, None, "the API died by signal");

    // Assert: the retry with the same key replays the first answer; the turn completes once.
    let replay = api.send(keyed(&api)).await.expect(200);
    assert_eq!(replay, json!({"accepted": [id], "resumed": true}));
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert_once_each(&events);
    assert_eq!(of_type(&events, "tool.completed")[0]["data"]["result"], "shipped");
}

#[tokio::test]
async fn the_deadline_racing_a_late_result_resolves_each_call_once() {
    let stack = bare_stack().await;
    let api = stack.client();
    let pool = owner_pool(&stack).await;
    // Park several turns with a one-second deadline, then stop every worker.
    let mut parker = procs::worker(&stack, &[]);
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let s = waiting_session(&api, &[], json!({}), 1).await;
        api.say(&s, LOOKUP).await;
        sessions.push(s);
    }
    let mut ids = Vec::new();
    for s in &sessions {
        api.wait_for(s, "turn.waiting", 1).await;
        ids.push(pending_call(&api, s).await);
    }
    parker.signal("KILL");
    parker.wait().await;
    turnstone_tests::wait_for_condition("every deadline passed", || async {
        sqlx::query_scalar::<_, bool>("SELECT bool_and(deadline_at <= now()) FROM pending_calls").fetch_one(&pool).await.unwrap()
    })
    .await;

    // Act: a worker starts (its timers are due) while the late results arrive.
    let _worker = procs::worker(&stack, &[]);
    let posts = futures::future::join_all(sessions.iter().zip(&ids).map(|(s, id)| post_result(&api, s, id, "late"))).await;

    // Assert: per call, either the result won (200, by client) or the deadline did (409, a timeout).
    for ((s, post), id) in sessions.iter().zip(posts).zip(&ids) {
        let events = api.wait_for(s, "turn.completed", 1).await;
        assert_once_each(&events);
        let done = of_type(&events, "tool.completed");
        assert_eq!(done.len(), 1, "one result for {id}");
        match post.status {
            200 => assert_eq!(done[0]["data"]["by"], "client"),
            409 => assert_eq!(done[0]["data"]["error"], r#"{"error":"timeout"}"#),
            other => panic!("unexpected {other}: {:?}", post.body),
        }
    }
}

#[tokio::test]
async fn parked_turns_outlive_every_worker_and_one_new_worker_finishes_them() {
    let stack = bare_stack().await;
    let api = stack.client();
    let pool = owner_pool(&stack).await;
    let mut workers = vec![procs::worker(&stack, &[]), procs::worker(&stack, &[])];
    let mut sessions = Vec::new();
    for _ in 0..12 {
        let s = waiting_session(&api, &[], json!({}), 3600).await;
        api.say(&s, LOOKUP).await;
        sessions.push(s);
    }
    let mut ids = Vec::new();
    for s in &sessions {
        api.wait_for(s, "turn.waiting", 1).await;
        ids.push(pending_call(&api, s).await);
    }

    // Act: every worker dies; the results arrive with none running; one worker starts.
    for w in &mut workers {
        w.signal("KILL");
        w.wait().await;
    }
    assert_eq!(held_and_due(&pool).await, (0, 0), "parked turns hold no task claim");
    for (s, id) in sessions.iter().zip(&ids) {
        assert_eq!(post_result(&api, s, id, "ok").await.expect(200)["resumed"], true);
    }
    let _one = procs::worker(&stack, &[]);

    // Assert
    for s in &sessions {
        let events = api.wait_for(s, "turn.completed", 1).await;
        assert_once_each(&events);
    }
}

#[tokio::test]
async fn client_tool_names_may_not_collide_and_bad_results_change_nothing() {
    let stack = Stack::start().await;
    let api = stack.client();
    let tool = |name: &str| json!({"name": name, "parameters": {"type": "object"}});
    api.post("/v1/agents", json!({"name": "a", "client_tools": [tool("math")]})).await.expect_problem(400, "tool_name_conflict");
    let agent = api.post("/v1/agents", json!({"name": "a", "client_tools": [tool("lookup_order")]})).await.expect(201);
    assert_eq!(agent["client_tools"][0]["timeout_secs"], 300, "default timeout");
    api.post("/v1/sessions", json!({"agent_id": agent["id"], "client_tools": [tool("lookup_order")]}))
        .await
        .expect_problem(400, "tool_name_conflict");
    let session = api.post("/v1/sessions", json!({"agent_id": agent["id"], "client_tools": [tool("ship")]})).await.expect(201);
    assert_eq!(session["client_tools"][0]["name"], "ship");
    let sid = session["id"].as_str().unwrap();
    let twice = json!({"results": [{"tool_call_id": "c", "output": "1"}, {"tool_call_id": "c", "output": "2"}]});
    api.post(&format!("/v1/sessions/{sid}/tool-results"), twice).await.expect_problem(400, "invalid_tool_results");
    // Not waiting: any id is unknown.
    post_result(&api, sid, "call_1", "x").await.expect_problem(422, "unknown_tool_call");
    let big = "x".repeat(256 * 1024 + 1);
    post_result(&api, sid, "call_1", &big).await.expect_problem(400, "invalid_body");
}

#[tokio::test]
async fn one_batch_runs_auto_tools_first_then_waits_for_a_client_tool_and_an_approval() {
    // Arrange: math is auto, lookup_order a client tool, current_time needs an approval.
    let stack = Stack::start().await;
    let api = stack.client();
    let session = waiting_session(&api, &["math", "current_time"], json!({"current_time": "ask"}), 300).await;

    // Act: one model reply calls all three.
    api.say(&session, r#"!tool math {"expression":"1+2"} !tool lookup_order {"order_id":"A1"} !tool current_time {}"#).await;
    let events = api.wait_for(&session, "turn.waiting", 1).await;

    // Assert: the auto tool ran before the wait; the wait covers the other two.
    let log = kinds(&events);
    let ran = log.iter().position(|k| *k == "tool.completed").expect("math ran");
    let waited = log.iter().position(|k| *k == "turn.waiting").unwrap();
    assert!(ran < waited, "{log:?}");
    assert_eq!(events[ran]["data"]["result"], "3");
    assert_eq!(events[waited]["data"]["waiting_for"].as_array().unwrap().len(), 2);
    let pending = api.get(&format!("/v1/sessions/{session}/pending")).await.expect(200)["data"].clone();
    let by_type = |t: &str| pending.as_array().unwrap().iter().find(|p| p["type"] == t).unwrap().clone();
    let (call, approval) = (by_type("tool_call"), by_type("approval"));

    // A partial answer keeps it waiting; the last one resumes it.
    let first = post_result(&api, &session, call["tool_call_id"].as_str().unwrap(), "shipped").await.expect(200);
    assert_eq!(first["resumed"], false);
    let url = format!("/v1/sessions/{session}/approvals/{}", approval["approval_id"].as_str().unwrap());
    let second =
        api.post(&url, json!({"decision": "approve", "arguments_sha256": approval["arguments_sha256"]})).await.expect(200);
    assert_eq!(second["resumed"], true);
    let events = api.wait_for(&session, "turn.completed", 1).await;
    assert_eq!(of_type(&events, "tool.completed").len(), 3);
    assert_eq!(of_type(&events, "output.message.completed").len(), 2);
    let last = of_type(&events, "output.message.completed").pop().unwrap().clone();
    assert!(last["data"]["message"]["content"][0]["text"].as_str().unwrap().starts_with("tools returned: "), "{last}");
    assert_once_each(&events);
}
