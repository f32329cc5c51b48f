//! The session filesystem and key-value store: file metadata, listings,
//! move/copy and search requests, keys and their values.

use super::*;
use turnstone_core::storage::{files, kv};

/// A file's metadata.
#[derive(Debug, Object)]
pub struct FileMeta {
    /// Absolute path.
    pub path: String,
    /// Bytes.
    pub size: i64,
    /// The version's entity tag (the `ETag` header, unquoted): pass it quoted in `If-Match`.
    pub etag: String,
    /// As given when the file was written (`application/octet-stream` when none was).
    pub content_type: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<files::FileMeta> for FileMeta {
    fn from(m: files::FileMeta) -> Self {
        FileMeta {
            path: m.path,
            size: m.size,
            etag: m.etag,
            content_type: m.content_type,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

/// `file` or `directory`.
#[derive(Debug, Enum, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
pub enum FileEntryType {
    File,
    Directory,
}

/// One entry of a listing: a file, or a subdirectory (whose `etag`, `content_type`
/// and `created_at` are `null`; its `size` and `files` count what is below it).
#[derive(Debug, Object)]
pub struct FileEntry {
    pub path: String,
    #[oai(rename = "type")]
    pub kind: FileEntryType,
    /// Bytes (of the file, or of every file below the directory).
    pub size: i64,
    /// 1 for a file; the number of files below a directory.
    pub files: i64,
    pub etag: Nullable<String>,
    pub content_type: Nullable<String>,
    pub created_at: Nullable<DateTime<Utc>>,
    /// The file's, or the latest of the files below the directory.
    pub updated_at: DateTime<Utc>,
}

impl From<files::Entry> for FileEntry {
    fn from(e: files::Entry) -> Self {
        match e {
            files::Entry::File(m) => FileEntry {
                path: m.path,
                kind: FileEntryType::File,
                size: m.size,
                files: 1,
                etag: Some(m.etag).into(),
                content_type: Some(m.content_type).into(),
                created_at: Some(m.created_at).into(),
                updated_at: m.updated_at,
            },
            files::Entry::Directory { path, size, files, updated_at } => FileEntry {
                path,
                kind: FileEntryType::Directory,
                size,
                files,
                etag: None.into(),
                content_type: None.into(),
                created_at: None.into(),
                updated_at,
            },
        }
    }
}

#[derive(Debug, Object)]
pub struct FileList {
    pub data: Vec<FileEntry>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// Moves or copies one file.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct FileTransfer {
    pub from: rules::FilePath,
    pub to: rules::FilePath,
    /// Replace `to` if it exists (default false: 409 `file_exists`).
    pub overwrite: Option<bool>,
}

impl Example for FileTransfer {
    fn example() -> Self {
        example(json!({"from": "/drafts/report.md", "to": "/report.md", "overwrite": true}))
    }
}

/// A search of the session's text files.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct FileSearch {
    /// A regular expression (Rust `regex` syntax: linear time, no backreferences), matched per line.
    #[oai(validator(min_length = 1, max_length = 1000))]
    pub pattern: Text,
    /// Only files whose path (or, for a glob without `/`, whose name) matches, e.g. `/notes/**` or `*.md`.
    #[oai(validator(min_length = 1, max_length = 1024))]
    pub glob: Option<Text>,
    /// At most this many matches (default 100).
    pub limit: Option<rules::Bounded<u32, 1, { turnstone_core::storage::MAX_SEARCH_RESULTS as i64 }>>,
}

impl Example for FileSearch {
    fn example() -> Self {
        example(json!({"pattern": "TODO|FIXME", "glob": "*.md", "limit": 50}))
    }
}

/// A line that matched.
#[derive(Debug, Object)]
pub struct SearchMatch {
    pub path: String,
    /// 1-based line number.
    pub line: i64,
    /// The line (at most 500 characters of it).
    pub text: String,
}

#[derive(Debug, Object)]
pub struct SearchResult {
    pub data: Vec<SearchMatch>,
}

impl From<files::Match> for SearchMatch {
    fn from(m: files::Match) -> Self {
        SearchMatch { path: m.path, line: m.line, text: m.text }
    }
}

/// What a delete removed.
#[derive(Debug, Object)]
pub struct FileDeleted {
    pub path: String,
    /// Files removed (more than 1 for a directory).
    pub files: i64,
    /// Bytes freed.
    pub bytes: i64,
}

/// A value to store under a key.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
pub struct KvSet {
    /// Any JSON value, at most 64 KiB serialised.
    pub value: Value,
    /// Expire the key after this many seconds (default: never).
    pub ttl_secs: Option<rules::Bounded<i64, 1, { turnstone_core::storage::MAX_TTL_SECS }>>,
}

impl Example for KvSet {
    fn example() -> Self {
        example(json!({"value": {"name": "Ada", "plan": "pro"}, "ttl_secs": 3600}))
    }
}

/// A key, its value and version.
#[derive(Debug, Object)]
pub struct KvEntry {
    pub key: String,
    pub value: Value,
    /// Incremented by every write; pass it quoted in `If-Match`.
    pub version: i64,
    /// When the key expires; `null` for never.
    pub expires_at: Nullable<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<kv::Entry> for KvEntry {
    fn from(e: kv::Entry) -> Self {
        KvEntry { key: e.key, value: e.value, version: e.version, expires_at: e.expires_at.into(), updated_at: e.updated_at }
    }
}

#[derive(Debug, Object)]
pub struct KvList {
    pub data: Vec<KvEntry>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Nullable<String>,
}

/// A deleted key and the version it had.
#[derive(Debug, Object)]
pub struct KvDeleted {
    pub key: String,
    pub version: i64,
}
