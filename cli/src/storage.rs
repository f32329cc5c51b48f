//! `files` and `kv`: a session's files and key-value store (issue 19's routes).
//!
//! Both raw-body operations go through the generated client: progenitor types
//! `application/octet-stream` as `format: binary`, so `write_file` takes any `Into<reqwest::Body>`
//! and `read_file` answers a [`progenitor_client::ByteStream`]. The bytes are never decoded as
//! text: `files get` writes them to stdout (or `--file`) exactly as the API sent them.
//!
//! Preconditions: an etag is sent quoted in `If-Match` (as the API prints it unquoted in `etag`,
//! the CLI adds the quotes); `--create-only` sends `If-None-Match: *`; a key's `--if-version N`
//! sends `If-Match: "N"`. A failed precondition is the API's 412 `precondition_failed`, exit 1.

use std::io::{Read, Write};
use std::path::Path;

use futures::TryStreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api::{Client, arg, call, call_response, types};
use crate::args::{self, FilePrecondition, Page};
use crate::failure::Failure;
use crate::output::{self, Format};

const FILE_ENTRY: &[&str] = &["type", "path", "size", "etag", "updated_at"];
const MATCH: &[&str] = &["path", "line", "text"];
const KV_ENTRY: &[&str] = &["key", "value", "version", "expires_at", "updated_at"];

/// A request body built from flags, parsed into the generated type (a value the contract rejects
/// is a usage error).
fn parse<T: DeserializeOwned>(value: Value) -> Result<T, Failure> {
    serde_json::from_value(value).map_err(|e| Failure::usage(format!("request body: {e}")))
}

/// An entity tag as `If-Match` wants it: quoted (`etag` members are printed without quotes).
fn quoted(tag: &str) -> String {
    if tag.starts_with('"') || tag.starts_with("W/") { tag.to_owned() } else { format!("\"{tag}\"") }
}

/// Everything on stdin, as bytes.
fn stdin_bytes() -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| Failure::usage(format!("stdin: {e}")))?;
    Ok(bytes)
}

pub async fn files(c: &Client, o: Format, verb: args::Files) -> Result<(), Failure> {
    use args::Files::*;
    match verb {
        Put { session, path, file, precondition: FilePrecondition { if_match, create_only } } => {
            let content = match &file {
                Some(local) => std::fs::read(local).map_err(|e| Failure::usage(format!("{}: {e}", local.display())))?,
                None => stdin_bytes()?,
            };
            let if_match = if_match.as_deref().map(quoted);
            let if_none_match = create_only.then_some("*");
            let r = call(c.write_file(
                &arg("session id", &session)?,
                &arg("path", &path)?,
                if_match.as_deref(),
                if_none_match,
                content,
            ))
            .await?;
            output::print_as(o, &r, &[], "path")
        }
        Get { session, path, file } => get(c, o, &session, &path, file.as_deref()).await,
        Ls { session, dir, recursive, page } => {
            let dir = dir.as_deref().map(|d| arg("--dir", d)).transpose()?;
            let after = page.after.as_deref().map(|a| arg("--after", a)).transpose()?;
            let r = call(c.list_files(&arg("session id", &session)?, after.as_ref(), dir.as_ref(), page.limit, Some(recursive)))
                .await?;
            output::print_as(o, &r, FILE_ENTRY, "path")
        }
        Rm { session, path, recursive, if_match } => {
            let if_match = if_match.as_deref().map(quoted);
            let r =
                call(c.delete_file(&arg("session id", &session)?, &arg("path", &path)?, Some(recursive), if_match.as_deref()))
                    .await?;
            output::print_as(o, &r, &[], "path")
        }
        Mv { session, from, to, overwrite } => {
            let b: types::FileTransfer = parse(json!({"from": from, "to": to, "overwrite": overwrite}))?;
            output::print_as(o, &call(c.move_file(&arg("session id", &session)?, &b)).await?, &[], "path")
        }
        Cp { session, from, to, overwrite } => {
            let b: types::FileTransfer = parse(json!({"from": from, "to": to, "overwrite": overwrite}))?;
            output::print_as(o, &call(c.copy_file(&arg("session id", &session)?, &b)).await?, &[], "path")
        }
        Search { session, pattern, glob, limit } => {
            let mut b = json!({"pattern": pattern});
            if let Some(glob) = glob {
                b["glob"] = json!(glob);
            }
            if let Some(limit) = limit {
                b["limit"] = json!(limit);
            }
            let b: types::FileSearch = parse(b)?;
            output::print_as(o, &call(c.search_files(&arg("session id", &session)?, &b)).await?, MATCH, "path")
        }
    }
}

/// `files get`: the content, byte for byte, to stdout; or to `local`, then its metadata (the
/// session path, the bytes written, the `ETag`) as `-o` says.
async fn get(c: &Client, o: Format, session: &str, path: &str, local: Option<&Path>) -> Result<(), Failure> {
    let response = call_response(c.read_file(&arg("session id", session)?, &arg("path", path)?, None, None, None)).await?;
    let etag =
        response.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(|v| v.trim_matches('"').to_owned());
    let mut stream = response.into_inner().into_inner();
    let write_fail = |what: &str, e: std::io::Error| Failure::usage(format!("{what}: {e}"));
    let mut size: u64 = 0;
    match local {
        None => {
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.try_next().await.map_err(|e| Failure::Connect(e.to_string()))? {
                out.write_all(&chunk).map_err(|e| write_fail("stdout", e))?;
            }
            out.flush().map_err(|e| write_fail("stdout", e))
        }
        Some(local) => {
            let name = local.display().to_string();
            let mut out = std::fs::File::create(local).map_err(|e| write_fail(&name, e))?;
            while let Some(chunk) = stream.try_next().await.map_err(|e| Failure::Connect(e.to_string()))? {
                out.write_all(&chunk).map_err(|e| write_fail(&name, e))?;
                size += chunk.len() as u64;
            }
            out.sync_all().map_err(|e| write_fail(&name, e))?;
            output::print_as(o, &json!({"path": path, "size": size, "etag": etag, "file": name}), &[], "path")
        }
    }
}

pub async fn kv(c: &Client, o: Format, verb: args::Kv) -> Result<(), Failure> {
    use args::Kv::*;
    match verb {
        Set { session, name, value, ttl, if_version, create_only } => {
            let text = match value.as_str() {
                "-" => String::from_utf8(stdin_bytes()?).map_err(|_| Failure::usage("stdin: the value is not UTF-8"))?,
                _ => value,
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| Failure::usage(format!("the value is not JSON ({e}); quote a string: '\"text\"'")))?;
            let mut b = json!({"value": value});
            if let Some(ttl) = ttl {
                b["ttl_secs"] = json!(ttl);
            }
            let b: types::KvSet = parse(b)?;
            let if_match = if_version.map(|v| quoted(&v.to_string()));
            let if_none_match = create_only.then_some("*");
            let r = call(c.set_key(&arg("session id", &session)?, &arg("key", &name)?, if_match.as_deref(), if_none_match, &b))
                .await?;
            output::print_as(o, &r, &[], "key")
        }
        Get { session, name } => {
            output::print_as(o, &call(c.get_key(&arg("session id", &session)?, &arg("key", &name)?)).await?, &[], "key")
        }
        Rm { session, name, if_version } => {
            let if_match = if_version.map(|v| quoted(&v.to_string()));
            let r = call(c.delete_key(&arg("session id", &session)?, &arg("key", &name)?, if_match.as_deref())).await?;
            output::print_as(o, &r, &[], "key")
        }
        Ls { session, prefix, page: Page { limit, after } } => {
            let prefix = prefix.as_deref().map(|p| arg("--prefix", p)).transpose()?;
            let after = after.as_deref().map(|a| arg("--after", a)).transpose()?;
            let r = call(c.list_keys(&arg("session id", &session)?, after.as_ref(), limit, prefix.as_ref())).await?;
            output::print_as(o, &r, KV_ENTRY, "key")
        }
    }
}
