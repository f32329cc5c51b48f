//! `turnstone chat`: each line read is posted as a message; the reply streams back as it is
//! written (the deltas), tool calls and results one compact line each.
//!
//! One event stream stays open for the whole chat, opened after the session's last stored event,
//! so every event of the turns posted here is seen once ([`EventStream`] resumes with
//! `Last-Event-ID`). Deltas are lost while reconnecting; the completed message then prints the
//! part not printed yet, so the reply reads whole, once. Ctrl-C during a turn cancels it, a second
//! Ctrl-C (or one between turns) exits. From a pipe it reads one message per line and exits after
//! the last reply; it exits 1 if a turn failed.
//!
//! A turn that waits asks on stderr and reads the answer as the next input line: a client tool's
//! result (posted as typed), or `approve? [y/N]` for a call under an `ask` policy (`y`/`yes`
//! approves the arguments shown, by their `arguments_sha256`; anything else denies).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, IsTerminal, Write};

use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::api::{Client, arg, call, types};
use crate::args::ChatTarget;
use crate::failure::Failure;
use crate::output::Format;
use crate::stream::{EventStream, Frame};
use crate::waiting;

pub async fn run(c: &Client, o: Format, target: ChatTarget) -> Result<(), Failure> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Failure::usage(format!("SIGINT handler: {e}")))?;
    let session = match (target.session, target.agent) {
        (Some(id), _) => call(c.get_session(&arg("session id", &id)?)).await?,
        (None, Some(agent)) => {
            let body: types::SessionCreate = serde_json::from_value(json!({ "agent_id": agent }))
                .map_err(|e| Failure::usage(format!("--agent {agent:?}: {e}")))?;
            let created = call(c.create_session(None, &body)).await?;
            eprintln!("session {} (continue it with: turnstone chat --session {})", created.id, created.id);
            created
        }
        (None, None) => return Err(Failure::usage("chat needs --agent or --session")),
    };
    let since = match session.last_sequence {
        0 => None,
        last => {
            let events = call(c.list_events(&arg("session id", &session.id)?, Some(last - 1), None, None)).await?;
            events.data.first().map(|e| e.id.clone())
        }
    };
    let session_id: types::PostMessageSessionId = arg("session id", &session.id)?;
    let mut stream = EventStream::new(c.clone(), session.id.clone(), since);

    // Open before the first message, so that its first deltas are not missed.
    stream.open().await?;

    let interactive = std::io::stdin().is_terminal();
    let mut lines = read_lines();
    let mut failed = false;
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        // Between turns the stream is read too, so that it is open and current when a turn starts.
        let line = loop {
            tokio::select! {
                line = lines.recv() => break line,
                frame = stream.next() => {
                    if let Frame::Reconnecting { why, cycled: false } = frame? {
                        eprintln!("(reconnecting: {why})");
                    }
                }
                _ = sigint.recv() => return Err(Failure::Interrupted),
            }
        };
        let Some(line) = line else { break };
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let body: types::MessageCreate = serde_json::from_value(json!({ "content": [{ "type": "text", "text": text }] }))
            .map_err(|e| Failure::usage(format!("message: {e}")))?;
        let accepted = call(c.post_message(&session_id, None, &body)).await?;
        let mut turn = Turn::new(accepted.turn_id, o, !stream.is_open());
        let mut cancelling = false;
        loop {
            tokio::select! {
                frame = stream.next() => match frame? {
                    Frame::Event(event) => {
                        let ended = turn.event(&event);
                        for ask in std::mem::take(&mut turn.asks) {
                            answer(c, &session.id, ask, &mut lines, &mut sigint).await?;
                        }
                        if ended {
                            break;
                        }
                    }
                    Frame::Delta(delta) => turn.delta(&delta),
                    Frame::Reconnecting { why, cycled } => {
                        turn.missed_deltas = true;
                        if !cycled {
                            eprintln!("(reconnecting: {why})");
                        }
                    }
                },
                _ = sigint.recv() => {
                    if cancelling {
                        return Err(Failure::Interrupted);
                    }
                    cancelling = true;
                    eprintln!("\n(cancelling the turn; Ctrl-C again to quit)");
                    match call(c.cancel_turn(&arg("session id", &session.id)?, None)).await {
                        Ok(_) => {}
                        // The turn ended meanwhile: its last events are on the way.
                        Err(Failure::Api { code, .. }) if code == "session_idle" => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        failed |= turn.failed;
    }
    match failed {
        true => Err(Failure::Quiet(1)),
        false => Ok(()),
    }
}

/// What a waiting turn asks of the user.
enum Ask {
    /// A client tool's result: the next line read.
    Result { call_id: String },
    /// A decision on an approval: the next line read, `y`/`yes` approves.
    Approval { approval_id: String, sha256: String },
}

/// Reads the answer to `ask` from the chat's input and posts it. Nothing is sent at end of input:
/// the turn keeps waiting (`turnstone sessions pending` shows it).
async fn answer(
    c: &Client,
    session: &str,
    ask: Ask,
    lines: &mut mpsc::Receiver<String>,
    sigint: &mut tokio::signal::unix::Signal,
) -> Result<(), Failure> {
    eprint!("{}", if matches!(ask, Ask::Result { .. }) { "result> " } else { "approve? [y/N] " });
    let _ = std::io::stderr().flush();
    let line = tokio::select! {
        line = lines.recv() => line,
        _ = sigint.recv() => return Err(Failure::Interrupted),
    };
    let Some(line) = line else {
        eprintln!("\n(input ended while the turn waits; see: turnstone sessions pending {session})");
        return Err(Failure::Quiet(1));
    };
    match ask {
        Ask::Result { call_id } => {
            waiting::post_result(c, session, &call_id, line.trim_end_matches('\r'), false).await?;
        }
        Ask::Approval { approval_id, sha256 } => {
            let yes = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
            waiting::decide(c, session, &approval_id, yes, None, &sha256).await?;
        }
    }
    Ok(())
}

/// Standard input, a line at a time, from a thread (reading a terminal blocks); closed at EOF.
fn read_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What is shown of one turn.
struct Turn {
    id: String,
    format: Format,
    /// Text printed from deltas, by model iteration, until its message completes.
    printed: BTreeMap<i64, String>,
    /// Iterations whose message completed: a late delta of one is not printed twice.
    done: BTreeSet<i64>,
    /// The stream was not open for a while during this turn: deltas may have been lost, so the
    /// turn's later deltas are not printed (they could leave a hole); each completed message
    /// prints what is missing after the contiguous start printed before.
    missed_deltas: bool,
    failed: bool,
    /// What the last event asked of the user (client tool results, approvals), in order.
    asks: Vec<Ask>,
}

impl Turn {
    fn new(id: String, format: Format, missed_deltas: bool) -> Turn {
        Turn { id, format, printed: BTreeMap::new(), done: BTreeSet::new(), missed_deltas, failed: false, asks: Vec::new() }
    }

    fn delta(&mut self, delta: &Value) {
        if delta["turn_id"] != self.id.as_str() {
            return;
        }
        if self.format == Format::Json {
            return emit(&delta.to_string(), true);
        }
        let iteration = delta["data"]["iteration"].as_i64().unwrap_or(0);
        let Some(text) = delta["data"]["delta"].as_str() else { return };
        if self.done.contains(&iteration) || self.missed_deltas {
            return;
        }
        self.printed.entry(iteration).or_default().push_str(text);
        emit(text, false);
    }

    /// Shows a stored event of this turn; true when it ends the turn.
    fn event(&mut self, event: &Value) -> bool {
        if event["turn_id"] != self.id.as_str() {
            return false;
        }
        let kind = event["type"].as_str().unwrap_or_default();
        let data = &event["data"];
        match kind {
            "tool.call_requested" => {
                for call in data["calls"].as_array().into_iter().flatten() {
                    let name = call["name"].as_str().unwrap_or("?");
                    eprintln!("  ? {name}({}) asks for its result", waiting::arguments(&call["arguments"]));
                    let call_id = call["tool_call_id"].as_str().unwrap_or_default().to_owned();
                    self.asks.push(Ask::Result { call_id });
                }
            }
            "tool.approval_requested" => {
                let name = data["name"].as_str().unwrap_or("?");
                eprintln!("  ? {name}({}) needs approval", waiting::arguments(&data["arguments"]));
                let approval_id = data["approval_id"].as_str().unwrap_or_default().to_owned();
                let sha256 = data["arguments_sha256"].as_str().unwrap_or_default().to_owned();
                self.asks.push(Ask::Approval { approval_id, sha256 });
            }
            _ => {}
        }
        if self.format == Format::Json {
            emit(&event.to_string(), true);
        } else {
            match kind {
                "output.message.completed" => {
                    let iteration = data["iteration"].as_i64().unwrap_or(0);
                    let text: String =
                        data["message"]["content"].as_array().into_iter().flatten().filter_map(|p| p["text"].as_str()).collect();
                    let printed = self.printed.remove(&iteration).unwrap_or_default();
                    self.done.insert(iteration);
                    match text.strip_prefix(printed.as_str()) {
                        Some(rest) => emit(rest, false),
                        None => emit(&format!("\n{text}"), false),
                    }
                    if !text.is_empty() || !printed.is_empty() {
                        emit("", true);
                    }
                    for call in data["message"]["tool_calls"].as_array().into_iter().flatten() {
                        let name = call["name"].as_str().unwrap_or("?");
                        emit(&format!("  → {name}({})", call["arguments"].as_str().unwrap_or("")), true);
                    }
                }
                "tool.completed" => {
                    let name = data["name"].as_str().unwrap_or("?");
                    match data["is_error"].as_bool() {
                        Some(true) => emit(&format!("  ✗ {name}: {}", crate::output::cell(&data["error"])), true),
                        _ => emit(&format!("  ← {name}: {}", crate::output::cell(&data["result"])), true),
                    }
                }
                "turn.cancelled" => eprintln!("(turn cancelled)"),
                _ => {}
            }
        }
        match kind {
            "turn.completed" | "turn.cancelled" => true,
            "turn.failed" => {
                eprintln!(
                    "error: the turn failed: {}: {}",
                    data["error_code"].as_str().unwrap_or("?"),
                    data["message"].as_str().unwrap_or("")
                );
                self.failed = true;
                true
            }
            _ => false,
        }
    }
}

fn emit(text: &str, newline: bool) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if newline {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}
