//! Runs one turn: start (or resume) it, then repeat "derive the next step from
//! the log → do it → commit its result" until the turn is sealed.
//!
//! Every commit is fenced by the lease's attempt number and keyed by a step key
//! unique within the turn, so a crash anywhere costs at most the step in flight,
//! and a step is never recorded twice.

use std::time::Duration;
use turnstone_core::ids::TurnId;

use rand::Rng;
use serde_json::json;
use tokio::sync::mpsc;
use turnstone_core::events::{self, Delta, NewEvent, types};
use turnstone_core::turns::{self, Lease, Outcome, Seal, Start, TurnContext, TurnTask, Usage};
use turnstone_core::validate::storable;
use turnstone_core::{Error, capabilities, providers, storage};

use crate::Context;
use crate::cancel::CancelGuard;
use crate::llm::{self, LlmEndpoint, LlmError, LlmReply, ToolSpec};
use crate::plan::{self, Step};

/// How a turn task ended for this worker.
#[derive(Debug, PartialEq, Eq)]
pub enum TurnEnd {
    /// This worker sealed the turn.
    Sealed,
    /// The turn was already sealed (duplicate or late task).
    AlreadySealed,
    /// Another worker holds a newer lease; this one stopped writing.
    LeaseLost,
    /// The drain deadline passed mid-turn; the task is released to another worker.
    Released,
    /// The turn waits for people: its task became the wait's deadline timer,
    /// in the transaction that parked it. Nothing to acknowledge, nothing held.
    Parked,
}

/// Test hook: `TURNSTONE_CRASH_AT=<point>` aborts the process at that point,
/// so tests can kill a worker at every step boundary. Inert otherwise.
pub(crate) fn crash_point(point: &str) {
    if std::env::var("TURNSTONE_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("crash point {point} reached: aborting");
        std::process::abort();
    }
}

/// Commits a step and records its events in the in-memory log. A unique
/// violation means an earlier attempt already committed it: the log is then
/// re-read, so the next step is derived from what the database holds.
async fn commit(
    ctx: &Context,
    lease: &Lease,
    tc: &mut TurnContext,
    events: Vec<NewEvent>,
    iterations: i32,
    usage: Usage,
) -> Result<(), Error> {
    match turns::commit_step(&ctx.pool, lease, events, iterations, usage).await {
        Ok(appended) => {
            tc.history.extend(appended.into_iter().map(std::sync::Arc::new));
            Ok(())
        }
        Err(e) if e.is_unique_violation() => {
            *tc = turns::load_context(&ctx.pool, lease).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// [`commit`] for a step whose storage tool wrote in `tx`: the writes commit
/// with the step's events, and roll back with them when the step was already
/// committed by an earlier attempt (then the log is re-read) or the lease is lost.
async fn commit_with(
    ctx: &Context,
    lease: &Lease,
    tc: &mut TurnContext,
    tx: turns::StepTx,
    events: Vec<NewEvent>,
) -> Result<(), Error> {
    match tx.commit(lease, events, 0, Usage::default()).await {
        Ok(appended) => {
            tc.history.extend(appended.into_iter().map(std::sync::Arc::new));
            Ok(())
        }
        Err(e) if e.is_unique_violation() => {
            *tc = turns::load_context(&ctx.pool, lease).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Runs a `files` or `kv` tool on the step's transaction. Arguments that are
/// not a JSON object are the model's mistake: a tool error.
async fn run_storage_tool(tx: &mut turns::StepTx, lease: &Lease, call: &llm::ToolCall) -> Result<storage::tools::Run, Error> {
    let args = if call.arguments.trim().is_empty() { Ok(json!({})) } else { serde_json::from_str(&call.arguments) };
    match args {
        Ok(args @ serde_json::Value::Object(_)) => {
            let scope = storage::tools::Scope { org_id: lease.org_id, session_id: lease.session_id, turn_id: lease.turn_id };
            storage::tools::execute(tx.conn(), scope, &call.name, &args).await
        }
        Ok(_) => Ok(storage::tools::Run { result: Err("arguments must be a JSON object".into()), events: vec![] }),
        Err(e) => Ok(storage::tools::Run { result: Err(format!("arguments are not valid JSON: {e}")), events: vec![] }),
    }
}

/// Runs the turn to its end. Database errors bubble up so the task is retried;
/// everything the model or a tool does wrong ends the turn with an event instead.
///
/// The log is read once, right after the start commits (with the other turns
/// its batch started, see [`crate::start`]); afterwards the worker keeps it in memory (it is the only writer while it holds the lease)
/// and adds what each commit appended.
#[tracing::instrument(name = "turn", skip_all, fields(turn_id = %task.turn_id, org_id = %task.org_id))]
///
/// `queue_task` is the queue row this run holds: sealing the turn completes it
/// in the same transaction (then [`TurnEnd::Sealed`] means it is gone).
pub async fn run(ctx: &Context, task: TurnTask, queue_task: Option<turns::QueueTask>) -> Result<TurnEnd, Error> {
    let (mut lease, tc) = match ctx.starter.start(task).await? {
        Start::Sealed => return Ok(TurnEnd::AlreadySealed),
        Start::Run(lease, tc) => (lease, tc),
    };
    lease.task = queue_task;
    let mut cancel = ctx.cancels.register(task.org_id, task.turn_id);
    if tc.history.iter().any(|e| e.turn_id == Some(task.turn_id) && e.kind == types::TURN_RESUMED) {
        crash_point("resuming");
    }
    if tc.cancel_requested {
        seal(ctx, &lease, Outcome::Cancelled).await?;
        return Ok(TurnEnd::Sealed);
    }
    match drive(ctx, &lease, tc, &mut cancel).await {
        Err(Error::LeaseLost) => Ok(TurnEnd::LeaseLost),
        other => other,
    }
}

/// Whether the turn's log already holds an event of `kind` for `iteration`.
fn has_marker(tc: &TurnContext, turn_id: TurnId, kind: &str, iteration: i32) -> bool {
    tc.history.iter().any(|e| {
        e.turn_id == Some(turn_id)
            && e.kind == kind
            && e.data.get("iteration").and_then(serde_json::Value::as_i64) == Some(i64::from(iteration))
    })
}

/// What interrupted a model call, if anything.
enum Interrupt {
    Cancelled,
    TimedOut,
    Released,
}

async fn drive(ctx: &Context, lease: &Lease, mut tc: TurnContext, cancel: &mut CancelGuard) -> Result<TurnEnd, Error> {
    let mut endpoint: Option<LlmEndpoint> = None;
    loop {
        if cancel.is_cancelled() {
            seal(ctx, lease, Outcome::Cancelled).await?;
            return Ok(TurnEnd::Sealed);
        }
        // Time spent waiting for people does not count against the cap.
        let deadline = lease.started_at
            + chrono::Duration::seconds(i64::from(tc.max_turn_secs))
            + chrono::Duration::milliseconds((tc.waited_secs * 1000.0) as i64);
        let left = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
        if left.is_zero() {
            return time_out(ctx, lease, &tc).await;
        }
        match plan::next_step(&tc, lease.turn_id) {
            Step::Seal => {
                crash_point("before_seal");
                seal(ctx, lease, Outcome::Completed).await?;
                return Ok(TurnEnd::Sealed);
            }
            Step::CallModel { iteration } if iteration > tc.max_iterations => {
                return fail(
                    ctx,
                    lease,
                    "iteration_limit",
                    format!("the agent's limit of {} model calls per turn was reached", tc.max_iterations),
                )
                .await;
            }
            Step::CallModel { iteration } => {
                let ep = match &endpoint {
                    Some(ep) => ep.clone(),
                    None => match resolve_endpoint(ctx, lease, &tc) {
                        Ok(e) => {
                            let ep = LlmEndpoint {
                                base_url: e.base_url,
                                api_key: e.api_key.map(|k| k.expose_secret().to_owned()),
                                model: e.model_name,
                                timeout: ctx.config.llm_timeout,
                                http: ctx.http.clone(),
                            };
                            endpoint = Some(ep.clone());
                            ep
                        }
                        Err(Error::Invalid { code, message }) => return fail(ctx, lease, code, message).await,
                        Err(Error::Crypto(why)) => {
                            tracing::error!(turn_id = %lease.turn_id, why, "provider key cannot be opened");
                            return fail(
                                ctx,
                                lease,
                                "provider_key_unavailable",
                                "the provider's API key cannot be decrypted".into(),
                            )
                            .await;
                        }
                        Err(e) => return Err(e),
                    },
                };
                if !has_marker(&tc, lease.turn_id, types::REASON_STARTED, iteration) {
                    commit(ctx, lease, &mut tc, vec![turns::reason_started(iteration)], 0, Usage::default()).await?;
                }
                let system = capabilities::system_prompt(&tc.system_prompt, &tc.capabilities);
                let messages = plan::prompt(&tc, system);
                let tools: Vec<ToolSpec> = capabilities::tools_for(&tc.capabilities)
                    .into_iter()
                    .map(|t| ToolSpec { name: t.name.into(), description: t.description.into(), parameters: (t.parameters)() })
                    .chain(tc.client_tools.iter().map(|t| ToolSpec {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: t.parameters.clone(),
                    }))
                    .collect();
                let mut abort = ctx.abort.clone();
                // Dropping the call future aborts the HTTP stream at once.
                let call = ModelCall { lease, iteration, endpoint: &ep, messages: &messages, tools: &tools };
                let outcome = tokio::select! {
                    r = call_model(ctx, &call) => Ok(r),
                    _ = cancel.cancelled() => Err(Interrupt::Cancelled),
                    _ = tokio::time::sleep(left) => Err(Interrupt::TimedOut),
                    _ = abort.wait_for(|a| *a) => Err(Interrupt::Released),
                };
                let reply = match outcome {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        tracing::warn!(turn_id = %lease.turn_id, code = e.code(), error = %e, "model call failed");
                        return fail(ctx, lease, e.code(), e.to_string()).await;
                    }
                    Err(Interrupt::Cancelled) => {
                        seal(ctx, lease, Outcome::Cancelled).await?;
                        return Ok(TurnEnd::Sealed);
                    }
                    Err(Interrupt::TimedOut) => return time_out(ctx, lease, &tc).await,
                    Err(Interrupt::Released) => return Ok(TurnEnd::Released),
                };
                let usage =
                    Usage { input_tokens: reply.usage.input_tokens as i64, output_tokens: reply.usage.output_tokens as i64 };
                // Model output is untrusted text: make sure it can be stored (no NUL).
                let calls: Vec<llm::ToolCall> = reply
                    .tool_calls
                    .iter()
                    .map(|c| llm::ToolCall {
                        id: storable(&c.id).into_owned(),
                        name: storable(&c.name).into_owned(),
                        arguments: storable(&c.arguments).into_owned(),
                    })
                    .collect();
                let data = turns::assistant_message_data(&storable(&reply.content), &json!(calls), usage, iteration, &ep.model);
                let output = NewEvent::step(types::OUTPUT_MESSAGE_COMPLETED, format!("llm:{iteration}"), data);
                if calls.is_empty() {
                    // A final answer: the output and the seal commit together.
                    crash_point("before_seal");
                    let seal =
                        Seal { lease: lease.clone(), events: vec![output], iterations: 1, usage, outcome: Outcome::Completed };
                    ctx.sealer.seal(seal).await?;
                    return Ok(TurnEnd::Sealed);
                }
                crash_point("before_llm_commit");
                commit(ctx, lease, &mut tc, vec![output], 1, usage).await?;
                crash_point("after_llm_commit");
            }
            Step::Wait { iteration, calls } => {
                let now = chrono::Utc::now();
                let waits: Vec<turns::WaitCall> = calls
                    .into_iter()
                    .map(|(call, kind)| {
                        let secs = match kind {
                            turns::WaitKind::ClientTool => {
                                tc.client_tools.iter().find(|t| t.name == call.name).map_or(300, |t| t.timeout_secs)
                            }
                            turns::WaitKind::Approval => tc.approval_timeout_secs,
                        };
                        turns::WaitCall {
                            kind,
                            tool_call_id: call.id,
                            name: call.name,
                            arguments: call.arguments,
                            deadline_at: now + chrono::Duration::seconds(i64::from(secs)),
                        }
                    })
                    .collect();
                let open_next = iteration < tc.max_iterations;
                crash_point("before_wait_commit");
                match turns::park(&ctx.pool, lease, iteration, &waits, open_next).await? {
                    turns::Parked::Waiting => {
                        crash_point("after_wait_commit");
                        return Ok(TurnEnd::Parked);
                    }
                    turns::Parked::Superseded(appended) => {
                        tc.history.extend(appended.into_iter().map(std::sync::Arc::new));
                    }
                    turns::Parked::Cancelled => {
                        seal(ctx, lease, Outcome::Cancelled).await?;
                        return Ok(TurnEnd::Sealed);
                    }
                }
            }
            Step::RunTool { iteration, call, denied } => {
                let step = format!("{iteration}:{}", call.id);
                let started =
                    json!({ "iteration": iteration, "tool_call_id": call.id, "name": call.name, "arguments": call.arguments });
                // Today's tools finish in microseconds, so `tool.started` commits
                // with the result; a slow tool would commit it first.
                let mut events = vec![NewEvent::step(types::TOOL_STARTED, format!("tool_started:{step}"), started)];
                // A storage tool writes in the step's own transaction, so its
                // writes commit with `tool.completed` below, or not at all.
                let (result, mut step_tx) = if denied {
                    (Err(json!({ "error": "denied", "reason": "the agent's tool policy denies this tool" }).to_string()), None)
                } else if capabilities::uses_storage(&tc.capabilities, &call.name) {
                    let mut tx = turns::StepTx::begin(&ctx.pool, lease).await?;
                    let run = run_storage_tool(&mut tx, lease, &call).await?;
                    events.extend(run.events);
                    (run.result, Some(tx))
                } else {
                    (capabilities::execute(&tc.capabilities, &call.name, &call.arguments), None)
                };
                let mut data =
                    json!({ "iteration": iteration, "tool_call_id": call.id, "name": call.name, "is_error": result.is_err() });
                match result {
                    Ok(r) => data["result"] = json!(r),
                    Err(e) => data["error"] = json!(e),
                }
                events.push(NewEvent::step(types::TOOL_COMPLETED, format!("tool:{step}"), data));
                // The last result of an iteration also opens the next model call.
                let last_of_iteration = plan::open_tool_calls(&tc, lease.turn_id) == 1;
                if last_of_iteration && iteration < tc.max_iterations {
                    events.push(turns::reason_started(iteration + 1));
                }
                crash_point("before_tool_commit");
                match step_tx.take() {
                    Some(tx) => commit_with(ctx, lease, &mut tc, tx, events).await?,
                    None => commit(ctx, lease, &mut tc, events, 0, Usage::default()).await?,
                }
                crash_point("after_tool_commit");
            }
        }
    }
}

/// The turn's model endpoint, read with its context; only the provider key is opened here.
fn resolve_endpoint(ctx: &Context, lease: &Lease, tc: &TurnContext) -> Result<providers::Endpoint, Error> {
    tc.endpoint.as_ref().ok_or_else(providers::no_model)?.open(&ctx.config.keys, lease.org_id)
}

/// Fails a turn that outlived its agent's `max_turn_secs`.
async fn time_out(ctx: &Context, lease: &Lease, tc: &TurnContext) -> Result<TurnEnd, Error> {
    fail(ctx, lease, "turn_timeout", format!("the turn ran longer than the agent's {} s limit", tc.max_turn_secs)).await
}

async fn fail(ctx: &Context, lease: &Lease, code: &str, message: String) -> Result<TurnEnd, Error> {
    // Provider error text is untrusted: keep it storable.
    let message = storable(&message).into_owned();
    seal(ctx, lease, Outcome::Failed { code: code.to_owned(), message }).await?;
    Ok(TurnEnd::Sealed)
}

/// Seals the turn with no last step, batched with other turns ending now (see [`crate::seal`]).
async fn seal(ctx: &Context, lease: &Lease, outcome: Outcome) -> Result<(), Error> {
    ctx.sealer.seal(Seal::bare(lease, outcome)).await
}

/// One model call of a turn: where to, what to send, and whose deltas these are.
struct ModelCall<'a> {
    lease: &'a Lease,
    iteration: i32,
    endpoint: &'a LlmEndpoint,
    messages: &'a [llm::ChatMessage],
    tools: &'a [ToolSpec],
}

/// One model call with retries: exponential backoff with full jitter,
/// honouring the provider's Retry-After (capped), for retryable failures only.
async fn call_model(ctx: &Context, call: &ModelCall<'_>) -> Result<LlmReply, LlmError> {
    let lease = call.lease;
    let mut attempt = 1;
    loop {
        let result = stream_once(ctx, call).await;
        match result {
            Err(e) if e.is_retryable() && attempt < ctx.config.llm_max_attempts => {
                let base = ctx.config.llm_backoff.saturating_mul(1 << (attempt - 1).min(10));
                let jittered = base.mul_f64(rand::rng().random_range(0.0..1.0));
                let wait = e.retry_after().map_or(jittered, |ra| ra.min(Duration::from_secs(30)).max(jittered));
                tracing::info!(turn_id = %lease.turn_id, attempt, code = e.code(), wait_ms = wait.as_millis() as u64, "retrying model call");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Streams one call, forwarding text deltas to SSE viewers through NOTIFY
/// (never stored) from a side task so the stream is never blocked. Deltas are
/// gathered for `delta_window` per NOTIFY; a reply complete within the first
/// window publishes none (its completed event follows at once).
async fn stream_once(ctx: &Context, call: &ModelCall<'_>) -> Result<LlmReply, LlmError> {
    let ModelCall { lease, iteration, endpoint: ep, messages, tools } = *call;
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let pool = ctx.pool.clone();
    let window = ctx.config.delta_window;
    let (session_id, turn_id) = (lease.session_id, lease.turn_id);
    let publisher = tokio::spawn(async move {
        let mut published = false;
        while let Some(mut text) = rx.recv().await {
            let flush_at = tokio::time::Instant::now() + window;
            let mut ended = false;
            loop {
                tokio::select! {
                    more = rx.recv() => match more {
                        Some(more) => text.push_str(&more),
                        None => { ended = true; break; }
                    },
                    _ = tokio::time::sleep_until(flush_at) => break,
                }
            }
            if ended && !published {
                return;
            }
            let delta = Delta { session_id, turn_id, iteration, text, ts: chrono::Utc::now() };
            if let Err(e) = events::publish_delta(&pool, delta).await {
                tracing::debug!(error = %e, "delta not published");
            }
            published = true;
            if ended {
                return;
            }
        }
    });
    let mut on_delta = |d: &str| {
        let _ = tx.send(d.to_owned());
    };
    let result = llm::stream_chat(ep, messages, tools, &mut on_delta).await;
    drop(tx);
    let _ = publisher.await;
    result
}
