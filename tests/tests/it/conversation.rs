//! The conversation a model sees: each turn's input, then that turn's outputs,
//! whatever order the log received them in. Checked on the exact request
//! bodies a recording OpenAI-compatible endpoint received from real workers,
//! and on `GET …/messages`. (The simulator behind the recorder also refuses
//! any prompt a real API would refuse, so every other test guards the shape too.)

use serde_json::{Value, json};
use turnstone_tests::recorder::Recorder;
use turnstone_tests::{Client, Stack, StackOptions, procs};

const TOOL: &str = r#"!tool math {"expression":"6*7"}"#;

/// Makes a provider at `base_url` with model `sim-1` the org default.
async fn route_model_through(api: &Client, base_url: &str) {
    let provider = api.post("/v1/providers", json!({"name": "recorded", "base_url": base_url})).await.expect(201);
    api.post("/v1/models", json!({"provider_id": provider["id"], "name": "sim-1", "is_default": true})).await.expect(201);
}

/// A request's messages as `[role, text, tool_call_id or call ids]` triples.
fn shape(request: &Value) -> Vec<(String, String, String)> {
    request["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            let text = match &m["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
                _ => String::new(),
            };
            let ids = match (&m["tool_call_id"], &m["tool_calls"]) {
                (Value::String(id), _) => id.clone(),
                (_, Value::Array(calls)) => calls.iter().filter_map(|c| c["id"].as_str()).collect::<Vec<_>>().join(","),
                _ => String::new(),
            };
            (m["role"].as_str().unwrap_or_default().to_owned(), text, ids)
        })
        .collect()
}

fn msg(role: &str, text: &str, ids: &str) -> (String, String, String) {
    (role.to_owned(), text.to_owned(), ids.to_owned())
}

/// The id of the tool call in the first request answered with one (read back from the log).
async fn first_call_id(api: &Client, session: &str) -> String {
    let events = api.events(session).await;
    let call = events.iter().find(|e| e["type"] == "output.message.completed").expect("a model output");
    call["data"]["message"]["tool_calls"][0]["id"].as_str().expect("a tool call").to_owned()
}

/// The system message of the first prompt: the agent's prompt and its capabilities' instructions.
fn system_of(prompts: &[Vec<(String, String, String)>]) -> (String, String, String) {
    let system = prompts.first().and_then(|p| p.first()).expect("a prompt").clone();
    assert_eq!(system.0, "system");
    assert!(system.1.starts_with("Be brief."), "the agent's prompt first: {system:?}");
    system
}

/// `(role, text)` of `GET …/messages` in the given order.
async fn listed(api: &Client, session: &str, query: &str) -> Vec<(String, String)> {
    let page = api.get(&format!("/v1/sessions/{session}/messages{query}")).await.expect(200);
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"][0]["text"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_message_queued_between_a_tool_call_and_its_result_waits_for_the_whole_turn() {
    // Arrange: the model is reached through the recorder; the first worker dies
    // right after committing the model's tool call, before running the tool.
    let stack = Stack::start_with(StackOptions { workers: 0, ..Default::default() }).await;
    let api = stack.client();
    let recorder = Recorder::start(&stack.sim.base_url()).await;
    route_model_through(&api, &recorder.base_url).await;
    let session = api.session(&["math"]).await;
    let mut doomed = procs::worker(&stack, &[("TURNSTONE_CRASH_AT", "after_llm_commit".to_owned())]);
    api.say(&session, TOOL).await;
    assert_eq!(doomed.wait().await, None, "the worker died by signal after the tool call committed");

    // Act: a second message arrives while the first turn is between its call and its result.
    let queued = api.say(&session, "and now?").await;
    assert_eq!(queued["turn_status"], "pending");
    let _rescuer = procs::worker(&stack, &[]);
    api.wait_for(&session, "turn.completed", 2).await;

    // Assert: the exact prompts.
    let call = first_call_id(&api, &session).await;
    let requests = recorder.requests();
    let prompts: Vec<_> = requests.iter().map(shape).collect();
    let system = system_of(&prompts);
    let user1 = msg("user", TOOL, "");
    let assistant_call = msg("assistant", "", &call);
    let result = msg("tool", "42", &call);
    let answer = msg("assistant", "tool math returned: 42", "");
    let user2 = msg("user", "and now?", "");
    assert_eq!(
        prompts,
        vec![
            vec![system.clone(), user1.clone()],
            vec![system.clone(), user1.clone(), assistant_call.clone(), result.clone()],
            vec![system, user1, assistant_call, result, answer, user2],
        ],
        "the second turn sees the first turn whole, then its own input; the first never sees the second's"
    );

    // The message list follows the conversation by default; arrival order on request.
    let conversation = listed(&api, &session, "").await;
    let texts: Vec<&str> = conversation.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, [TOOL, "", "tool math returned: 42", "and now?", "echo: and now?"]);
    let arrival = listed(&api, &session, "?order=arrival").await;
    let texts: Vec<&str> = arrival.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, [TOOL, "", "and now?", "tool math returned: 42", "echo: and now?"]);
}

#[tokio::test]
async fn queued_turns_each_see_only_the_turns_before_them() {
    // Arrange: one in-process worker; the first model call is slow, so the
    // next two messages arrive while the first turn runs.
    let stack = Stack::start().await;
    let api = stack.client();
    let recorder = Recorder::start(&stack.sim.base_url()).await;
    route_model_through(&api, &recorder.base_url).await;
    let session = api.session(&["math"]).await;
    let first = r#"!sleep 300 !tool math {"expression":"6*7"}"#;

    // Act
    api.say(&session, first).await;
    api.say(&session, "second").await;
    api.say(&session, "third").await;
    api.wait_for(&session, "turn.completed", 3).await;

    // Assert
    let call = first_call_id(&api, &session).await;
    let prompts: Vec<_> = recorder.requests().iter().map(shape).collect();
    let system = system_of(&prompts);
    let turn1 = vec![
        msg("user", first, ""),
        msg("assistant", "", &call),
        msg("tool", "42", &call),
        msg("assistant", "tool math returned: 42", ""),
    ];
    let turn2 = vec![msg("user", "second", ""), msg("assistant", "echo: second", "")];
    let mut expected = vec![vec![system.clone(), turn1[0].clone()], [&[system.clone()], &turn1[..3]].concat()];
    expected.push([&[system.clone()], &turn1[..], &turn2[..1]].concat());
    expected.push([&[system], &turn1[..], &turn2[..], &[msg("user", "third", "")]].concat());
    assert_eq!(prompts, expected);

    // Paging through the conversation order with its cursor visits every message once.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = api.get(&format!("/v1/sessions/{session}/messages?limit=2&after_sequence={after}")).await.expect(200);
        seen.extend(page["data"].as_array().unwrap().iter().map(|m| m["content"][0]["text"].as_str().unwrap().to_owned()));
        match page["next_after_sequence"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, [first, "", "tool math returned: 42", "second", "echo: second", "third", "echo: third"]);
}
