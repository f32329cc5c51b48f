//! The tools of the `files` and `kv` capabilities. They run on the step's
//! transaction ([`crate::turns::StepTx`]): what they write commits with the
//! step's `tool.completed`, or not at all.
//!
//! A tool's mistake (no such file, a stale etag, a bad path) is a tool error,
//! text the model reads and recovers from; only a database failure is an `Err`.

use crate::ids::{OrgId, SessionId, TurnId};
use serde_json::{Value, json};
use sqlx::PgConnection;

use super::files::{self, Entry as FileEntry, Precondition, Search};
use super::{By, FilePath, Writer, kv};
use crate::capabilities::ToolDef;
use crate::error::{Error, Result};
use crate::events::NewEvent;

/// Lines `read_file` returns when the model names no `limit`, and at most.
pub const DEFAULT_READ_LINES: i64 = 2000;
/// Most text `read_file` returns at once, in bytes.
pub const MAX_READ_BYTES: usize = 64 * 1024;
/// Most entries `list_files`, matches `search_files` and keys `kv_list` return.
pub const MAX_TOOL_LIST: u32 = 200;
/// Most edits in one `edit_file`.
pub const MAX_EDITS: usize = 100;

/// The prompt of the `files` capability, written for a model.
pub const FILES_PROMPT: &str = "\
You have a private filesystem for this conversation; it persists between turns, and the user can upload \
and download its files. Paths are absolute, like /notes/todo.md; directories exist while they hold files.
- Look before you change: `list_files` shows what exists, `read_file` returns a file's lines and its `etag` \
(a version tag). `search_files` finds lines matching a regular expression, optionally only in files matching a glob.
- To change part of a file, prefer `edit_file` with exact `old_text` snippets copied from `read_file` (each must \
occur exactly once; include more surrounding text if it is not unique) instead of rewriting the whole file.
- `write_file` without `expected_etag` only creates a new file; to replace an existing one, pass the `etag` \
you read. If a call says the etag does not match, the file changed since you read it: read it again, then retry.
- `delete_file` and `move_file` remove and rename files. Binary files cannot be shown; say so rather than guess their content.";

/// The prompt of the `kv` capability, written for a model.
pub const KV_PROMPT: &str = "\
You have a private key-value store for this conversation, to remember facts and state between turns. Keys are \
up to 256 characters of letters, digits and . _ : - (for example `user:name` or `task.3.status`); values are any \
JSON up to 64 KiB. `kv_get` reads a key with its `version`; `kv_set` writes one (pass `expected_version` to \
change it only if nobody else did since you read it, and `ttl_secs` to let it expire); `kv_delete` removes one; \
`kv_list` lists keys by prefix. Check the store before asking the user for something you may have saved.";

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required, "additionalProperties": false })
}

fn path_schema(description: &str) -> Value {
    json!({ "type": "string", "minLength": 2, "maxLength": super::MAX_PATH_BYTES, "description": description })
}

fn etag_schema(description: &str) -> Value {
    json!({ "type": "string", "maxLength": 64, "description": description })
}

/// The `files` capability's tools.
pub static FILE_TOOLS: &[ToolDef] = &[
    ToolDef {
        name: "read_file",
        description: "Reads a text file's lines (numbered from 1) and returns them with the file's etag.",
        parameters: || {
            object(
                json!({
                    "path": path_schema("Absolute path, e.g. /notes/todo.md."),
                    "offset": { "type": "integer", "minimum": 1, "description": "First line to return (default 1)." },
                    "limit": { "type": "integer", "minimum": 1, "maximum": DEFAULT_READ_LINES, "description": "How many lines (default 2000)." }
                }),
                &["path"],
            )
        },
    },
    ToolDef {
        name: "write_file",
        description: "Creates a file, or replaces one when expected_etag is its current etag.",
        parameters: || {
            object(
                json!({
                    "path": path_schema("Absolute path of the file."),
                    "content": { "type": "string", "description": "The whole new content (text)." },
                    "expected_etag": etag_schema("The etag of the version you replace; omit to create a new file only.")
                }),
                &["path", "content"],
            )
        },
    },
    ToolDef {
        name: "edit_file",
        description: "Replaces exact snippets of a text file; each old_text must occur exactly once.",
        parameters: || {
            object(
                json!({
                    "path": path_schema("Absolute path of the file."),
                    "expected_etag": etag_schema("The etag you read; the edit fails if the file changed since."),
                    "edits": {
                        "type": "array", "minItems": 1, "maxItems": MAX_EDITS,
                        "items": object(json!({
                            "old_text": { "type": "string", "minLength": 1, "description": "Exact text to replace, unique in the file." },
                            "new_text": { "type": "string", "description": "Its replacement." }
                        }), &["old_text", "new_text"])
                    }
                }),
                &["path", "edits"],
            )
        },
    },
    ToolDef {
        name: "list_files",
        description: "Lists a directory's files and subdirectories (or every file below it, recursively).",
        parameters: || {
            object(
                json!({
                    "dir": { "type": "string", "maxLength": super::MAX_PATH_BYTES, "description": "Directory (default /)." },
                    "recursive": { "type": "boolean", "description": "List every file below, not just one level." }
                }),
                &[],
            )
        },
    },
    ToolDef {
        name: "search_files",
        description: "Finds lines matching a regular expression in the text files, optionally only files matching a glob.",
        parameters: || {
            object(
                json!({
                    "pattern": { "type": "string", "minLength": 1, "maxLength": super::MAX_PATTERN_BYTES, "description": "A regular expression (Rust regex syntax)." },
                    "glob": { "type": "string", "maxLength": super::MAX_PATH_BYTES, "description": "Only paths matching this glob, e.g. /notes/** or *.md." }
                }),
                &["pattern"],
            )
        },
    },
    ToolDef {
        name: "delete_file",
        description: "Deletes a file.",
        parameters: || {
            object(
                json!({
                    "path": path_schema("Absolute path of the file."),
                    "expected_etag": etag_schema("Delete only this version.")
                }),
                &["path"],
            )
        },
    },
    ToolDef {
        name: "move_file",
        description: "Moves (renames) a file; the target must not exist.",
        parameters: || {
            object(json!({ "from": path_schema("The file to move."), "to": path_schema("Its new path.") }), &["from", "to"])
        },
    },
];

/// The `kv` capability's tools.
pub static KV_TOOLS: &[ToolDef] = &[
    ToolDef {
        name: "kv_get",
        description: "Reads a key's value and version.",
        parameters: || object(json!({ "key": key_schema() }), &["key"]),
    },
    ToolDef {
        name: "kv_set",
        description: "Sets a key to a JSON value.",
        parameters: || {
            object(
                json!({
                    "key": key_schema(),
                    "value": { "description": "Any JSON value, at most 64 KiB." },
                    "expected_version": { "type": "integer", "minimum": 1, "description": "Change it only if this is still its version." },
                    "ttl_secs": { "type": "integer", "minimum": 1, "maximum": super::MAX_TTL_SECS, "description": "Expire after this many seconds." }
                }),
                &["key", "value"],
            )
        },
    },
    ToolDef { name: "kv_delete", description: "Deletes a key.", parameters: || object(json!({ "key": key_schema() }), &["key"]) },
    ToolDef {
        name: "kv_list",
        description: "Lists keys (with versions) starting with a prefix.",
        parameters: || {
            object(
                json!({ "prefix": { "type": "string", "maxLength": super::MAX_KEY_BYTES, "description": "Key prefix (default: all keys)." } }),
                &[],
            )
        },
    },
];

fn key_schema() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": super::MAX_KEY_BYTES, "pattern": "^[A-Za-z0-9._:-]+$" })
}

/// Whether `tool` is one of these capabilities' (it then runs through [`execute`]).
pub fn handles(tool: &str) -> bool {
    FILE_TOOLS.iter().chain(KV_TOOLS).any(|t| t.name == tool)
}

/// Whose storage a tool reaches, and the turn it runs for.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub turn_id: TurnId,
}

/// A tool's result for the model, and the events its writes add to the step.
#[derive(Debug)]
pub struct Run {
    pub result: std::result::Result<String, String>,
    pub events: Vec<NewEvent>,
}

/// Why a tool call failed: the model's mistake, told to it, or the database's.
enum Failure {
    Model(String),
    Core(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Core(e)
    }
}

/// Runs a storage tool on `conn`, the step's transaction.
pub async fn execute(conn: &mut PgConnection, scope: Scope, tool: &str, args: &Value) -> Result<Run> {
    let mut events = Vec::new();
    let result = match run(conn, scope, tool, args, &mut events).await {
        Ok(text) => Ok(text),
        Err(Failure::Model(why)) => Err(why),
        Err(Failure::Core(e @ (Error::Database(_) | Error::Queue(_) | Error::Batched(_)))) => return Err(e),
        Err(Failure::Core(e)) => Err(tool_error(&e)),
    };
    if result.is_err() {
        events.clear();
    }
    Ok(Run { result, events })
}

/// A failure in words a model can act on.
fn tool_error(e: &Error) -> String {
    match e {
        Error::NotFound("file") => "no such file (list_files shows what exists)".into(),
        Error::NotFound("key") => "no such key (it was never set, was deleted, or expired)".into(),
        Error::PreconditionFailed(_) => {
            "the version you named is not the current one: it changed since you read it (or exists when you meant to create it); read it again and retry".into()
        }
        other => other.to_string(),
    }
}

fn str_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, Failure> {
    args.get(name).and_then(Value::as_str).ok_or_else(|| Failure::Model(format!("missing string argument {name:?}")))
}

fn opt_str<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, Failure> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Failure::Model(format!("argument {name:?} must be a string"))),
    }
}

fn opt_int(args: &Value, name: &str) -> Result<Option<i64>, Failure> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or_else(|| Failure::Model(format!("argument {name:?} must be an integer"))),
    }
}

fn meta_json(m: &files::FileMeta) -> Value {
    json!({ "path": m.path, "size": m.size, "etag": m.etag, "content_type": m.content_type, "updated_at": m.updated_at })
}

async fn run(conn: &mut PgConnection, s: Scope, tool: &str, args: &Value, events: &mut Vec<NewEvent>) -> Result<String, Failure> {
    let w = Writer { org_id: s.org_id, session_id: s.session_id, by: By::Tool { turn_id: s.turn_id } };
    let (org, session) = (s.org_id, s.session_id);
    let out = match tool {
        "read_file" => {
            let path = FilePath::parse("path", str_arg(args, "path")?)?;
            let (meta, content) = files::read(conn, org, session, &path).await?;
            let offset = opt_int(args, "offset")?.unwrap_or(1).max(1);
            let limit = opt_int(args, "limit")?.unwrap_or(DEFAULT_READ_LINES).clamp(1, DEFAULT_READ_LINES);
            read_lines(&meta, &content, offset, limit)
        }
        "write_file" => {
            let path = FilePath::parse("path", str_arg(args, "path")?)?;
            let content = str_arg(args, "content")?;
            let pre = match opt_str(args, "expected_etag")? {
                Some(e) => Precondition::Matches(e.to_owned()),
                None => Precondition::Absent,
            };
            let w = files::write(conn, w, &path, content.as_bytes(), "text/plain; charset=utf-8", &pre).await?;
            events.extend(w.event);
            json!({ "written": meta_json(&w.value), "created": w.created })
        }
        "edit_file" => {
            let path = FilePath::parse("path", str_arg(args, "path")?)?;
            let edits =
                args.get("edits").and_then(Value::as_array).filter(|e| !e.is_empty() && e.len() <= MAX_EDITS).ok_or_else(
                    || Failure::Model(format!("edits must be a list of 1-{MAX_EDITS} {{old_text, new_text}} objects")),
                )?;
            let (meta, content) = files::read(conn, org, session, &path).await?;
            if let Some(expected) = opt_str(args, "expected_etag")?
                && expected != meta.etag
            {
                return Err(Error::PreconditionFailed(String::new()).into());
            }
            let Some(text) = files::as_text(&content) else {
                return Err(Failure::Model("the file is binary; edit_file changes text files only".into()));
            };
            let mut text = text.to_owned();
            for (i, edit) in edits.iter().enumerate() {
                let old = edit.get("old_text").and_then(Value::as_str).filter(|s| !s.is_empty());
                let new = edit.get("new_text").and_then(Value::as_str);
                let (Some(old), Some(new)) = (old, new) else {
                    return Err(Failure::Model(format!("edit {} needs a non-empty old_text and a new_text", i + 1)));
                };
                match text.matches(old).count() {
                    1 => text = text.replacen(old, new, 1),
                    0 => return Err(Failure::Model(format!("edit {}: old_text does not occur in the file", i + 1))),
                    n => {
                        return Err(Failure::Model(format!(
                            "edit {}: old_text occurs {n} times; include more surrounding text so it occurs once",
                            i + 1
                        )));
                    }
                }
            }
            let pre = Precondition::Matches(meta.etag.clone());
            let w = files::write(conn, w, &path, text.as_bytes(), &meta.content_type, &pre).await?;
            events.extend(w.event);
            json!({ "edited": meta_json(&w.value), "edits": edits.len() })
        }
        "list_files" => {
            let dir = FilePath::parse_dir("dir", opt_str(args, "dir")?.unwrap_or("/"))?;
            let recursive = args.get("recursive").and_then(Value::as_bool).unwrap_or(false);
            let (entries, more) = files::list(conn, org, session, &dir, recursive, None, MAX_TOOL_LIST).await?;
            let entries: Vec<Value> = entries
                .iter()
                .map(|e| match e {
                    FileEntry::File(m) => json!({ "type": "file", "path": m.path, "size": m.size, "etag": m.etag }),
                    FileEntry::Directory { path, files, .. } => json!({ "type": "directory", "path": path, "files": files }),
                })
                .collect();
            json!({ "dir": dir.as_str(), "entries": entries, "truncated": more })
        }
        "search_files" => {
            let search = Search::new(str_arg(args, "pattern")?, opt_str(args, "glob")?)?;
            let found = files::search(conn, org, session, &search, MAX_TOOL_LIST).await?;
            let matches: Vec<Value> = found.iter().map(|m| json!({ "path": m.path, "line": m.line, "text": m.text })).collect();
            json!({ "matches": matches, "truncated": matches.len() >= MAX_TOOL_LIST as usize })
        }
        "delete_file" => {
            let path = FilePath::parse("path", str_arg(args, "path")?)?;
            let w = files::delete(conn, w, &path, opt_str(args, "expected_etag")?, false).await?;
            events.extend(w.event);
            json!({ "deleted": path.as_str() })
        }
        "move_file" => {
            let from = FilePath::parse("from", str_arg(args, "from")?)?;
            let to = FilePath::parse("to", str_arg(args, "to")?)?;
            let w = files::move_or_copy(conn, w, &from, &to, false, false).await?;
            events.extend(w.event);
            json!({ "moved": { "from": from.as_str(), "to": meta_json(&w.value) } })
        }
        "kv_get" => {
            let e = kv::get(conn, org, session, str_arg(args, "key")?).await?;
            json!({ "key": e.key, "value": e.value, "version": e.version, "expires_at": e.expires_at })
        }
        "kv_set" => {
            let key = str_arg(args, "key")?;
            let value = args.get("value").ok_or_else(|| Failure::Model("missing argument \"value\"".into()))?;
            let pre = opt_int(args, "expected_version")?.map_or(Precondition::None, Precondition::Matches);
            let w = kv::set(conn, w, key, value, opt_int(args, "ttl_secs")?, &pre).await?;
            events.extend(w.event);
            json!({ "key": w.value.key, "version": w.value.version, "expires_at": w.value.expires_at })
        }
        "kv_delete" => {
            let w = kv::delete(conn, w, str_arg(args, "key")?, None).await?;
            events.extend(w.event);
            json!({ "deleted": str_arg(args, "key")? })
        }
        "kv_list" => {
            let (keys, more) = kv::list(conn, org, session, opt_str(args, "prefix")?.unwrap_or(""), None, MAX_TOOL_LIST).await?;
            let keys: Vec<Value> = keys.iter().map(|e| json!({ "key": e.key, "version": e.version })).collect();
            json!({ "keys": keys, "truncated": more })
        }
        other => return Err(Failure::Model(format!("tool {other:?} has no implementation"))),
    };
    Ok(out.to_string())
}

/// `read_file`'s answer: the lines asked for, bounded by [`MAX_READ_BYTES`],
/// or a note that the file is binary.
fn read_lines(meta: &files::FileMeta, content: &[u8], offset: i64, limit: i64) -> Value {
    let mut out = meta_json(meta);
    let Some(text) = files::as_text(content) else {
        out["binary"] = json!(true);
        out["note"] = json!("binary content is not shown");
        return out;
    };
    let total = text.lines().count() as i64;
    let mut shown = String::new();
    let mut last = offset - 1;
    for line in text.lines().skip((offset - 1) as usize).take(limit as usize) {
        if shown.len() + line.len() + 1 > MAX_READ_BYTES && last >= offset {
            break;
        }
        shown.push_str(line);
        shown.push('\n');
        last += 1;
    }
    out["total_lines"] = json!(total);
    out["first_line"] = json!(offset);
    out["last_line"] = json!(last);
    out["content"] = json!(shown);
    if last < total {
        out["next_offset"] = json!(last + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> files::FileMeta {
        files::FileMeta {
            path: "/a".into(),
            size: 0,
            etag: "e".into(),
            content_type: "text/plain".into(),
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn reads_lines_and_hides_binary() {
        let v = read_lines(&meta(), b"one\ntwo\nthree\n", 2, 1);
        assert_eq!(v["content"], "two\n");
        assert_eq!(v["next_offset"], 3);
        assert_eq!(v["total_lines"], 3);
        let b = read_lines(&meta(), b"\x00\xff", 1, 10);
        assert_eq!(b["binary"], true);
        assert!(b.get("content").is_none());
    }

    #[test]
    fn every_tool_has_an_object_schema() {
        for t in FILE_TOOLS.iter().chain(KV_TOOLS) {
            let s = (t.parameters)();
            assert_eq!(s["type"], "object", "{}", t.name);
            assert!(handles(t.name));
        }
        assert!(!handles("math"));
    }
}
