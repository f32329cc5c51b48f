//! `turnstone sessions watch`: the session's stored events as they are appended, one line each
//! (the Event as a JSON line with `-o json`), across reconnects, until Ctrl-C or `--until`.

use std::io::Write;

use serde_json::Value;

use crate::api::{Client, arg, call, types};
use crate::failure::Failure;
use crate::output::{Format, cell};
use crate::stream::{EventStream, Frame};

pub async fn run(c: &Client, o: Format, session: String, since: Option<String>, until: Option<String>) -> Result<(), Failure> {
    // The session must exist and be the caller's: a clear 404 instead of a stream that fails later.
    call(c.get_session(&arg::<types::GetSessionSessionId>("session id", &session)?)).await?;
    let mut stream = EventStream::new(c.clone(), session, since);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame?,
            _ = &mut interrupt => return Ok(()),
        };
        match frame {
            Frame::Event(event) => {
                let line = match o {
                    Format::Json => event.to_string(),
                    Format::Table | Format::Id => event_line(&event),
                };
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                if until.as_deref().is_some_and(|u| event["type"] == u) {
                    return Ok(());
                }
            }
            Frame::Delta(_) => {}
            Frame::Reconnecting { why, cycled: false } => eprintln!("(reconnecting: {why})"),
            Frame::Reconnecting { cycled: true, .. } => {}
        }
    }
}

/// `   7  output.message.completed  trn_…  {…}`
pub fn event_line(event: &Value) -> String {
    format!(
        "{:>6}  {:<26}  {}  {}",
        event["sequence"],
        event["type"].as_str().unwrap_or("?"),
        cell(&event["turn_id"]),
        cell(&event["data"])
    )
}
