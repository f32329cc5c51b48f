//! Session storage: a filesystem ([`files`]) and a key-value store ([`kv`]),
//! each isolated per session, and the tools that reach them ([`tools`]).
//!
//! Every write is one guarded statement — a compare-and-set on the file's
//! `etag` or the key's `version` that also checks the limits, keeps the
//! session's usage counters and appends its event — defined as a routine in
//! schema `turnstone` whose prelude takes the session's row lock, as every
//! writer of a session does first. Called alone it is the whole transaction
//! (the REST API); called inside a step's transaction
//! ([`crate::turns::StepTx`]) it commits, or not, with that step's
//! `tool.completed` (a tool), and then its event is part of the step's instead.
//!
//! # Layout
//! - `mod.rs`: paths, keys, who wrote ([`By`]), the limits' error codes.
//! - [`files`]: write, read, list, delete, move/copy and search.
//! - [`kv`]: set, get, delete and list.
//! - [`tools`]: the `files` and `kv` capabilities' tools, run in a step's transaction.

pub mod files;
pub mod kv;
pub mod tools;

use crate::ids::{EventId, OrgId, SessionId, TurnId, TypedId};

use crate::error::{Error, Result};

/// Longest path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Longest path segment, in bytes.
pub const MAX_SEGMENT_BYTES: usize = 255;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes of its JSON.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Longest `ttl_secs` (a year).
pub const MAX_TTL_SECS: i64 = 366 * 86_400;
/// Longest search pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1000;
/// Largest compiled search program (the `regex` crate's size limit).
pub const MAX_REGEX_BYTES: usize = 1 << 20;
/// Largest search result count.
pub const MAX_SEARCH_RESULTS: u32 = 1000;
/// Longest content type.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;

/// Who wrote: the REST API, or a tool of this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Api,
    Tool { turn_id: TurnId },
}

impl By {
    /// The turn of a tool's write (the event's `turn_id`).
    pub fn turn(self) -> Option<TurnId> {
        match self {
            By::Api => None,
            By::Tool { turn_id } => Some(turn_id),
        }
    }
}

/// Who writes to whose storage: the org and session written to, and the writer.
#[derive(Debug, Clone, Copy)]
pub struct Writer {
    pub org_id: OrgId,
    pub session_id: SessionId,
    pub by: By,
}

/// A valid absolute file path: UTF-8, `/`-separated, at most
/// [`MAX_PATH_BYTES`] with segments of at most [`MAX_SEGMENT_BYTES`], no
/// `.` or `..` segment, no `//`, no NUL or control characters, no trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FilePath(String);

impl FilePath {
    /// A file's path (not the root).
    pub fn parse(field: &str, s: &str) -> Result<FilePath> {
        let p = Self::parse_dir(field, s)?;
        if p.is_root() {
            return Err(Error::invalid("invalid_path", format!("{field} must name a file, not the root directory")));
        }
        Ok(p)
    }

    /// A directory's path: the root `/` too.
    pub fn parse_dir(field: &str, s: &str) -> Result<FilePath> {
        let bad = |why: &str| Err(Error::invalid("invalid_path", format!("{field} {s:?} is not a valid path: {why}")));
        if !s.starts_with('/') {
            return bad("it must start with /");
        }
        if s.len() > MAX_PATH_BYTES {
            return bad("longer than 1024 bytes");
        }
        if s.chars().any(char::is_control) {
            return bad("control or NUL characters");
        }
        if s == "/" {
            return Ok(FilePath(s.to_owned()));
        }
        for seg in s[1..].split('/') {
            match seg {
                "" => return bad("empty segment (// or a trailing /)"),
                "." | ".." => return bad(". and .. segments are not allowed"),
                seg if seg.len() > MAX_SEGMENT_BYTES => return bad("a segment longer than 255 bytes"),
                _ => {}
            }
        }
        Ok(FilePath(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The bounds of everything below this path as a directory: paths `p` with
    /// `lo <= p < hi` (bytewise; `'0'` follows `'/'`).
    pub fn below(&self) -> (String, String) {
        if self.is_root() { ("/".into(), "0".into()) } else { (format!("{}/", self.0), format!("{}0", self.0)) }
    }

    /// The paths of the directories above this one, which must not be files
    /// (`/a/b/c` → `/a`, `/a/b`).
    pub fn ancestors(&self) -> Vec<String> {
        self.0.match_indices('/').skip(1).map(|(i, _)| self.0[..i].to_owned()).collect()
    }
}

impl std::fmt::Display for FilePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a key: 1–[`MAX_KEY_BYTES`] bytes of `[A-Za-z0-9._:-]`.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_BYTES
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("invalid_key", format!("key {key:?} must be 1-256 characters of [A-Za-z0-9._:-]")))
    }
}

/// The error for a guarded write's verdict other than `ok` (the routines' first column).
pub(crate) fn verdict_error(verdict: &str, what: &str) -> Error {
    match verdict {
        "not_found" => Error::NotFound("session"),
        "file_not_found" => Error::NotFound("file"),
        "key_not_found" => Error::NotFound("key"),
        "precondition_failed" => {
            Error::PreconditionFailed(format!("the {what}'s current version does not match the request's precondition"))
        }
        "file_too_large" => {
            Error::TooLarge { code: "file_too_large", message: "the file is larger than the org's per-file limit".into() }
        }
        "session_storage_full" => Error::TooLarge {
            code: "session_storage_full",
            message: "the session's files would exceed its storage limit in bytes".into(),
        },
        "storage_quota_exceeded" => Error::TooLarge {
            code: "storage_quota_exceeded",
            message: "the org's storage quota in bytes would be exceeded".into(),
        },
        "too_many_files" => Error::conflict("too_many_files", "the session already holds its maximum number of files"),
        "too_many_keys" => Error::conflict("too_many_keys", "the session already holds its maximum number of keys"),
        "path_conflict" => Error::conflict(
            "path_conflict",
            "a file cannot be where a directory is, or below another file (directories are the paths of files)",
        ),
        "file_exists" => Error::conflict("file_exists", "the target exists; pass overwrite=true to replace it"),
        "directory_not_empty" => {
            Error::conflict("directory_not_empty", "the path is a directory; pass recursive=true to delete what it holds")
        }
        other => Error::Queue(format!("unexpected storage verdict {other:?}")),
    }
}

/// A fresh, unique entity tag: each write of a file gets its own.
pub(crate) fn new_etag() -> String {
    EventId::new().uuid().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for ok in ["/a", "/notes/todo.md", "/a b/ü.txt", "/.hidden", "/a..b"] {
            assert!(FilePath::parse("path", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "/", "//a", "/a/", "/a/../b", "/./a", "/a\0b", "/a\nb", "/a//b"] {
            assert!(FilePath::parse("path", bad).is_err(), "{bad:?}");
        }
        assert!(FilePath::parse("path", &format!("/{}", "a".repeat(256))).is_err());
        assert!(FilePath::parse("path", &format!("/{}", "a".repeat(255))).is_ok());
        assert!(FilePath::parse("path", &"/abcd".repeat(206)).is_err(), "over 1024 bytes");
        assert!(FilePath::parse_dir("dir", "/").is_ok());
        let p = FilePath::parse("path", "/a/b/c").unwrap();
        assert_eq!(p.ancestors(), vec!["/a", "/a/b"]);
        assert_eq!(p.below(), ("/a/b/c/".into(), "/a/b/c0".into()));
        assert_eq!(FilePath::parse_dir("d", "/").unwrap().below(), ("/".into(), "0".into()));
    }

    #[test]
    fn keys() {
        assert!(validate_key("a.b:c-d_e9").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a b").is_err());
        assert!(validate_key("a/b").is_err());
        assert!(validate_key(&"k".repeat(257)).is_err());
    }
}
