//! The session filesystem: files are rows (`files`, bytes in `content`);
//! directories are implicit, the prefixes of files' paths.
//!
//! Writes are routines ([`WRITE_ROUTINE`], [`DELETE_ROUTINE`],
//! [`MOVE_ROUTINE`]): the session's lock, then one statement that checks the
//! precondition and the limits, writes with a compare-and-set on the `etag`,
//! keeps `session_storage` and appends the event. Reads are plain statements
//! in the caller's org-scoped transaction.

use crate::ids::{OrgId, SessionId};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, Row};

use super::{By, FilePath, Writer, new_etag, verdict_error};
use crate::db::Routine;
use crate::error::{Error, Result};
use crate::events::{self, NewEvent};
use crate::ids::{EventId, TypedId};

/// Event types of the filesystem.
pub mod types {
    pub const FILE_WRITTEN: &str = "file.written";
    pub const FILE_DELETED: &str = "file.deleted";
    pub const FILE_MOVED: &str = "file.moved";
}

/// A file's metadata.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileMeta {
    pub path: String,
    pub size: i64,
    pub etag: String,
    pub content_type: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a write did, and the event it appended (REST) or that the step's
/// transaction must append (a tool).
#[derive(Debug, Clone)]
pub struct Written<T> {
    pub value: T,
    /// True when the write created the file (or key).
    pub created: bool,
    /// The event, for a tool's step to append; `None` when the statement appended it.
    pub event: Option<NewEvent>,
}

/// A write's precondition: `If-Match` (this version only) or `If-None-Match: *` (create only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition<V> {
    #[default]
    None,
    Matches(V),
    Absent,
}

impl<V: Clone> Precondition<V> {
    fn matches(&self) -> Option<V> {
        match self {
            Precondition::Matches(v) => Some(v.clone()),
            _ => None,
        }
    }
    fn absent(&self) -> bool {
        matches!(self, Precondition::Absent)
    }
}

/// The prelude of every storage routine: the org's scope and the session's
/// lock (`$6`), as every writer of a session takes first. Inside a step's
/// transaction both are already in force and repeat harmlessly.
pub(crate) const LOCK_PRELUDE: &str = "PERFORM turnstone.enter_org($1);
         PERFORM turnstone_lock_sessions(ARRAY[$6]);";

/// Parameters shared by the storage routines after [`events::APPEND_PARAMS`]:
/// the session, the writing turn (none for the API), whether the statement
/// appends its own event, and that event's id.
pub(crate) const WRITER_PARAMS: [(&str, &str); 4] =
    [("session", "uuid"), ("writer_turn", "uuid"), ("announce", "bool"), ("event_id", "uuid")];

/// `by` of an event written by `$7` (the writing turn).
const BY_SQL: &str = "CASE WHEN $7 IS NULL THEN 'api' ELSE 'tool' END";

/// The org's limits and whether the session is the org's (`$1`, `$6`).
const LIMITS_CTE: &str = "lim AS (
                SELECT o.max_file_bytes, o.max_session_bytes, o.max_session_files, o.max_storage_bytes,
                       EXISTS (SELECT 1 FROM sessions s WHERE s.org_id = $1 AND s.id = $6) AS session_ok
                  FROM orgs o WHERE o.id = $1
             ), used AS (
                SELECT coalesce((SELECT u.files FROM session_storage u WHERE u.org_id = $1 AND u.session_id = $6), 0) AS files,
                       coalesce((SELECT u.bytes FROM session_storage u WHERE u.org_id = $1 AND u.session_id = $6), 0) AS bytes,
                       coalesce((SELECT sum(u.bytes) FROM session_storage u WHERE u.org_id = $1), 0) AS org_bytes
             )";

/// `turnstone.write_file`: creates or replaces one file.
pub(crate) static WRITE_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| Routine {
    name: "write_file",
    params: [
        &events::APPEND_PARAMS[..],
        &WRITER_PARAMS[..],
        &[
            ("file_path", "text"),
            ("file_content", "bytea"),
            ("file_content_type", "text"),
            ("new_etag", "text"),
            ("if_match", "text"),
            ("if_none_match", "bool"),
            ("ancestors", "text[]"),
            ("below_lo", "text"),
            ("below_hi", "text"),
        ],
    ]
    .concat(),
    returns: "verdict text, created bool, path text, size int8, etag text, content_type text, \
              created_at timestamptz, updated_at timestamptz",
    prelude: LOCK_PRELUDE,
    settings: "",
    query: format!(
        "WITH {LIMITS_CTE}, cur AS (
                SELECT f.etag, f.size FROM files f WHERE f.org_id = $1 AND f.session_id = $6 AND f.path = $10
             ), verdict AS (
                SELECT CASE
                    WHEN NOT lim.session_ok THEN 'not_found'
                    WHEN $14::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cur WHERE cur.etag = $14) THEN 'precondition_failed'
                    WHEN $15 AND EXISTS (SELECT 1 FROM cur) THEN 'precondition_failed'
                    WHEN octet_length($11) > lim.max_file_bytes THEN 'file_too_large'
                    WHEN EXISTS (SELECT 1 FROM files f WHERE f.org_id = $1 AND f.session_id = $6
                                    AND (f.path = ANY($16) OR (f.path >= $17 AND f.path < $18))) THEN 'path_conflict'
                    WHEN NOT EXISTS (SELECT 1 FROM cur) AND used.files >= lim.max_session_files THEN 'too_many_files'
                    WHEN used.bytes + octet_length($11) - coalesce((SELECT size FROM cur), 0) > lim.max_session_bytes
                        THEN 'session_storage_full'
                    WHEN used.org_bytes + octet_length($11) - coalesce((SELECT size FROM cur), 0) > lim.max_storage_bytes
                        THEN 'storage_quota_exceeded'
                    ELSE 'ok' END AS v,
                       (SELECT size FROM cur) AS old_size
                  FROM lim, used
             ), written AS (
                INSERT INTO files AS f (org_id, session_id, path, content, size, etag, content_type)
                SELECT $1, $6, $10, $11, octet_length($11), $13, $12 FROM verdict WHERE v = 'ok'
                ON CONFLICT (session_id, path) DO UPDATE
                   SET content = EXCLUDED.content, size = EXCLUDED.size, etag = EXCLUDED.etag,
                       content_type = EXCLUDED.content_type, updated_at = now()
                 WHERE NOT $15 AND ($14::text IS NULL OR f.etag = $14)
                RETURNING f.path, f.size, f.etag, f.content_type, f.created_at, f.updated_at, (f.xmax = 0) AS created
             ), counted AS (
                INSERT INTO session_storage AS u (session_id, org_id, files, bytes)
                SELECT $6, $1, CASE WHEN w.created THEN 1 ELSE 0 END, w.size - coalesce(v.old_size, 0) FROM written w, verdict v
                ON CONFLICT (session_id) DO UPDATE SET files = u.files + EXCLUDED.files, bytes = u.bytes + EXCLUDED.bytes
             ), new_events AS (
                SELECT $6::uuid AS session_id, $9::uuid AS id, 'file.written' AS type,
                       jsonb_build_object('path', path, 'size', size, 'etag', etag, 'by', {BY_SQL}) AS data,
                       NULL::text AS step_key, $7::uuid AS turn_id, 1 AS ord
                  FROM written WHERE $8
             ), {append}
             SELECT v.v, w.created, w.path::text, w.size, w.etag, w.content_type, w.created_at, w.updated_at
               FROM verdict v CROSS JOIN wake LEFT JOIN written w ON true",
        append = events::append_ctes("ARRAY[$6::uuid]"),
    ),
});

/// `turnstone.delete_files`: one file, or (`recursive`) everything below a directory.
pub(crate) static DELETE_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| {
    Routine {
    name: "delete_files",
    params: [
        &events::APPEND_PARAMS[..],
        &WRITER_PARAMS[..],
        &[("file_path", "text"), ("if_match", "text"), ("recursive", "bool"), ("below_lo", "text"), ("below_hi", "text")],
    ]
    .concat(),
    returns: "verdict text, files int8, bytes int8",
    prelude: LOCK_PRELUDE,
    settings: "",
    query: format!(
        "WITH lim AS (
                SELECT EXISTS (SELECT 1 FROM sessions s WHERE s.org_id = $1 AND s.id = $6) AS session_ok
             ), cur AS (
                SELECT f.etag FROM files f WHERE f.org_id = $1 AND f.session_id = $6 AND f.path = $10
             ), verdict AS (
                SELECT CASE
                    WHEN NOT lim.session_ok THEN 'not_found'
                    WHEN EXISTS (SELECT 1 FROM cur) THEN
                         CASE WHEN $11::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM cur WHERE cur.etag = $11)
                              THEN 'precondition_failed' ELSE 'ok' END
                    WHEN $11::text IS NOT NULL THEN 'precondition_failed'
                    WHEN EXISTS (SELECT 1 FROM files f WHERE f.org_id = $1 AND f.session_id = $6 AND f.path >= $13 AND f.path < $14)
                         THEN CASE WHEN $12 THEN 'ok' ELSE 'directory_not_empty' END
                    ELSE 'file_not_found' END AS v
                  FROM lim
             ), deleted AS (
                DELETE FROM files f
                 WHERE f.org_id = $1 AND f.session_id = $6 AND (SELECT v FROM verdict) = 'ok'
                   AND ((f.path = $10 AND ($11::text IS NULL OR f.etag = $11)) OR ($12 AND f.path >= $13 AND f.path < $14))
                RETURNING f.size
             ), gone AS (
                SELECT count(*) AS files, coalesce(sum(size), 0)::int8 AS bytes FROM deleted
             ), counted AS (
                UPDATE session_storage u SET files = u.files - g.files, bytes = u.bytes - g.bytes
                  FROM gone g WHERE u.org_id = $1 AND u.session_id = $6 AND g.files > 0
             ), new_events AS (
                SELECT $6::uuid AS session_id, $9::uuid AS id, 'file.deleted' AS type,
                       jsonb_build_object('path', $10::text, 'files', g.files, 'by', {BY_SQL}) AS data,
                       NULL::text AS step_key, $7::uuid AS turn_id, 1 AS ord
                  FROM gone g WHERE $8 AND g.files > 0
             ), {append}
             SELECT v.v, g.files, g.bytes FROM verdict v CROSS JOIN gone g CROSS JOIN wake",
        append = events::append_ctes("ARRAY[$6::uuid]"),
    ),
}
});

/// `turnstone.move_file`: moves (or copies) one file to another path.
pub(crate) static MOVE_ROUTINE: std::sync::LazyLock<Routine> = std::sync::LazyLock::new(|| {
    Routine {
    name: "move_file",
    params: [
        &events::APPEND_PARAMS[..],
        &WRITER_PARAMS[..],
        &[
            ("from_path", "text"),
            ("to_path", "text"),
            ("overwrite", "bool"),
            ("copy", "bool"),
            ("new_etag", "text"),
            ("ancestors", "text[]"),
            ("below_lo", "text"),
            ("below_hi", "text"),
        ],
    ]
    .concat(),
    returns: "verdict text, created bool, path text, size int8, etag text, content_type text, \
              created_at timestamptz, updated_at timestamptz",
    prelude: LOCK_PRELUDE,
    settings: "",
    query: format!(
        "WITH {LIMITS_CTE}, src AS (
                SELECT f.content, f.size, f.content_type FROM files f WHERE f.org_id = $1 AND f.session_id = $6 AND f.path = $10
             ), dst AS (
                SELECT f.size FROM files f WHERE f.org_id = $1 AND f.session_id = $6 AND f.path = $11
             ), verdict AS (
                SELECT CASE
                    WHEN NOT lim.session_ok THEN 'not_found'
                    WHEN NOT EXISTS (SELECT 1 FROM src) THEN 'file_not_found'
                    WHEN EXISTS (SELECT 1 FROM dst) AND NOT $12 THEN 'file_exists'
                    WHEN EXISTS (SELECT 1 FROM files f WHERE f.org_id = $1 AND f.session_id = $6 AND f.path <> $10
                                    AND (f.path = ANY($15) OR (f.path >= $16 AND f.path < $17))) THEN 'path_conflict'
                    WHEN $13 AND NOT EXISTS (SELECT 1 FROM dst) AND used.files >= lim.max_session_files THEN 'too_many_files'
                    WHEN $13 AND used.bytes + (SELECT size FROM src) - coalesce((SELECT size FROM dst), 0) > lim.max_session_bytes
                        THEN 'session_storage_full'
                    WHEN $13 AND used.org_bytes + (SELECT size FROM src) - coalesce((SELECT size FROM dst), 0) > lim.max_storage_bytes
                        THEN 'storage_quota_exceeded'
                    ELSE 'ok' END AS v,
                       (SELECT size FROM dst) AS old_size
                  FROM lim, used
             ), written AS (
                INSERT INTO files AS f (org_id, session_id, path, content, size, etag, content_type)
                SELECT $1, $6, $11, src.content, src.size, $14, src.content_type FROM src, verdict WHERE verdict.v = 'ok'
                ON CONFLICT (session_id, path) DO UPDATE
                   SET content = EXCLUDED.content, size = EXCLUDED.size, etag = EXCLUDED.etag,
                       content_type = EXCLUDED.content_type, updated_at = now()
                 WHERE $12
                RETURNING f.path, f.size, f.etag, f.content_type, f.created_at, f.updated_at, (f.xmax = 0) AS created
             ), removed AS (
                DELETE FROM files f WHERE f.org_id = $1 AND f.session_id = $6 AND f.path = $10 AND NOT $13
                   AND EXISTS (SELECT 1 FROM written)
                RETURNING f.size
             ), counted AS (
                UPDATE session_storage u
                   SET files = u.files + CASE WHEN w.created THEN 1 ELSE 0 END - (SELECT count(*) FROM removed),
                       bytes = u.bytes + w.size - coalesce(v.old_size, 0) - coalesce((SELECT sum(size) FROM removed), 0)
                  FROM written w, verdict v WHERE u.org_id = $1 AND u.session_id = $6
             ), new_events AS (
                SELECT $6::uuid AS session_id, $9::uuid AS id,
                       CASE WHEN $13 THEN 'file.written' ELSE 'file.moved' END AS type,
                       CASE WHEN $13 THEN jsonb_build_object('path', path, 'size', size, 'etag', etag, 'by', {BY_SQL})
                            ELSE jsonb_build_object('from', $10::text, 'to', path, 'size', size, 'etag', etag, 'by', {BY_SQL}) END AS data,
                       NULL::text AS step_key, $7::uuid AS turn_id, 1 AS ord
                  FROM written WHERE $8
             ), {append}
             SELECT v.v, w.created, w.path::text, w.size, w.etag, w.content_type, w.created_at, w.updated_at
               FROM verdict v CROSS JOIN wake LEFT JOIN written w ON true",
        append = events::append_ctes("ARRAY[$6::uuid]"),
    ),
}
});

/// Binds a storage routine's first nine parameters: the append's, then [`WRITER_PARAMS`].
fn bind_writer<'q>(routine: &Routine, w: Writer) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let q = sqlx::query(sqlx::AssertSqlSafe(routine.call()));
    events::bind_append_query(q, w.org_id).bind(w.session_id).bind(w.by.turn()).bind(w.by == By::Api).bind(EventId::new())
}

/// The event of a tool's write, for its step to append (the API's write appended it already).
fn step_event(by: By, kind: &'static str, data: serde_json::Value) -> Option<NewEvent> {
    match by {
        By::Api => None,
        By::Tool { .. } => {
            let mut data = data;
            data["by"] = json!("tool");
            Some(NewEvent::new(kind, data))
        }
    }
}

fn meta_of(row: &sqlx::postgres::PgRow) -> Result<Option<(FileMeta, bool)>> {
    let path: Option<String> = row.try_get("path")?;
    let Some(path) = path else { return Ok(None) };
    Ok(Some((
        FileMeta {
            path,
            size: row.try_get("size")?,
            etag: row.try_get("etag")?,
            content_type: row.try_get("content_type")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        },
        row.try_get("created")?,
    )))
}

/// Checks a content type: visible ASCII and spaces, at most 255 bytes.
pub fn validate_content_type(ct: &str) -> Result<()> {
    if ct.is_empty() || ct.len() > super::MAX_CONTENT_TYPE_BYTES || !ct.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Error::invalid("invalid_content_type", "a content type is 1-255 visible ASCII characters"));
    }
    Ok(())
}

/// Writes a file on `conn` (alone, it is its own transaction; in a step's, it
/// commits with the step). Fails with the verdict's error, writing nothing.
pub async fn write(
    conn: &mut PgConnection,
    w: Writer,
    path: &FilePath,
    content: &[u8],
    content_type: &str,
    pre: &Precondition<String>,
) -> Result<Written<FileMeta>> {
    validate_content_type(content_type)?;
    let (lo, hi) = path.below();
    let row = bind_writer(&WRITE_ROUTINE, w)
        .bind(path.as_str())
        .bind(content)
        .bind(content_type)
        .bind(new_etag())
        .bind(pre.matches())
        .bind(pre.absent())
        .bind(path.ancestors())
        .bind(lo)
        .bind(hi)
        .fetch_one(conn)
        .await?;
    let verdict: String = row.try_get("verdict")?;
    if verdict != "ok" {
        return Err(verdict_error(&verdict, "file"));
    }
    let (meta, created) = meta_of(&row)?.ok_or_else(|| verdict_error("precondition_failed", "file"))?;
    let event = step_event(w.by, types::FILE_WRITTEN, json!({ "path": meta.path, "size": meta.size, "etag": meta.etag }));
    Ok(Written { value: meta, created, event })
}

/// What a delete removed.
#[derive(Debug, Clone, Copy)]
pub struct Deleted {
    pub files: i64,
    pub bytes: i64,
}

/// Deletes a file, or with `recursive` a directory and everything below it.
pub async fn delete(
    conn: &mut PgConnection,
    w: Writer,
    path: &FilePath,
    if_match: Option<&str>,
    recursive: bool,
) -> Result<Written<Deleted>> {
    let (lo, hi) = path.below();
    let row = bind_writer(&DELETE_ROUTINE, w)
        .bind(path.as_str())
        .bind(if_match)
        .bind(recursive)
        .bind(lo)
        .bind(hi)
        .fetch_one(conn)
        .await?;
    let verdict: String = row.try_get("verdict")?;
    if verdict != "ok" {
        return Err(verdict_error(&verdict, "file"));
    }
    let gone = Deleted { files: row.try_get("files")?, bytes: row.try_get("bytes")? };
    if gone.files == 0 {
        return Err(verdict_error("precondition_failed", "file"));
    }
    let event = step_event(w.by, types::FILE_DELETED, json!({ "path": path.as_str(), "files": gone.files }));
    Ok(Written { value: gone, created: false, event })
}

/// Moves (or with `copy`, copies) a file; the target gets a new etag.
pub async fn move_or_copy(
    conn: &mut PgConnection,
    w: Writer,
    from: &FilePath,
    to: &FilePath,
    overwrite: bool,
    copy: bool,
) -> Result<Written<FileMeta>> {
    if from == to {
        return Err(Error::invalid("same_path", "from and to are the same path"));
    }
    let (lo, hi) = to.below();
    let row = bind_writer(&MOVE_ROUTINE, w)
        .bind(from.as_str())
        .bind(to.as_str())
        .bind(overwrite)
        .bind(copy)
        .bind(new_etag())
        .bind(to.ancestors())
        .bind(lo)
        .bind(hi)
        .fetch_one(conn)
        .await?;
    let verdict: String = row.try_get("verdict")?;
    if verdict != "ok" {
        return Err(verdict_error(&verdict, "file"));
    }
    let (meta, created) = meta_of(&row)?.ok_or_else(|| verdict_error("file_exists", "file"))?;
    let event = if copy {
        step_event(w.by, types::FILE_WRITTEN, json!({ "path": meta.path, "size": meta.size, "etag": meta.etag }))
    } else {
        step_event(
            w.by,
            types::FILE_MOVED,
            json!({ "from": from.as_str(), "to": meta.path, "size": meta.size, "etag": meta.etag }),
        )
    };
    Ok(Written { value: meta, created, event })
}

const META_COLUMNS: &str = "path::text AS path, size, etag, content_type, created_at, updated_at";

/// Fails with `NotFound("session")` unless the session is the org's.
pub async fn ensure_session(conn: &mut PgConnection, org_id: OrgId, session_id: SessionId) -> Result<()> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM sessions WHERE org_id = $1 AND id = $2")
        .bind(org_id)
        .bind(session_id)
        .fetch_optional(conn)
        .await?;
    found.map(|_| ()).ok_or(Error::NotFound("session"))
}

/// The org's limit on one file's size (an API checks it while a body streams in),
/// if the session is the org's.
pub async fn max_file_bytes(conn: &mut PgConnection, org_id: OrgId, session_id: SessionId) -> Result<i64> {
    sqlx::query_scalar(
        "SELECT o.max_file_bytes FROM orgs o WHERE o.id = $1 AND EXISTS (SELECT 1 FROM sessions s WHERE s.org_id = $1 AND s.id = $2)",
    )
    .bind(org_id)
    .bind(session_id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("session"))
}

/// A file's metadata and content; `None` when the session has no such file
/// (`NotFound("session")` when the session is not the org's).
pub async fn read(conn: &mut PgConnection, org_id: OrgId, session_id: SessionId, path: &FilePath) -> Result<(FileMeta, Vec<u8>)> {
    let row = sqlx::query(
        "SELECT s.id, f.path::text AS path, f.size, f.etag, f.content_type, f.created_at, f.updated_at, f.content
           FROM sessions s LEFT JOIN files f ON f.org_id = s.org_id AND f.session_id = s.id AND f.path = $3
          WHERE s.org_id = $1 AND s.id = $2",
    )
    .bind(org_id)
    .bind(session_id)
    .bind(path.as_str())
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound("session"))?;
    let path: Option<String> = row.try_get("path")?;
    if path.is_none() {
        return Err(Error::NotFound("file"));
    }
    let meta = FileMeta::from_row_ref(&row)?;
    Ok((meta, row.try_get("content")?))
}

/// A file's metadata only (`If-None-Match` on a read answers without the bytes).
pub async fn stat(conn: &mut PgConnection, org_id: OrgId, session_id: SessionId, path: &FilePath) -> Result<Option<FileMeta>> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {META_COLUMNS} FROM files WHERE org_id = $1 AND session_id = $2 AND path = $3"
    )))
    .bind(org_id)
    .bind(session_id)
    .bind(path.as_str())
    .fetch_optional(conn)
    .await?)
}

impl FileMeta {
    fn from_row_ref(row: &sqlx::postgres::PgRow) -> Result<FileMeta> {
        Ok(FileMeta {
            path: row.try_get("path")?,
            size: row.try_get("size")?,
            etag: row.try_get("etag")?,
            content_type: row.try_get("content_type")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone)]
pub enum Entry {
    File(FileMeta),
    /// A subdirectory: its path, the bytes and files below it, its latest change.
    Directory {
        path: String,
        size: i64,
        files: i64,
        updated_at: DateTime<Utc>,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::File(f) => &f.path,
            Entry::Directory { path, .. } => path,
        }
    }
}

/// Lists `dir`: its files and subdirectories (or, `recursive`, every file
/// below it), by path, after the cursor `after` (a path), at most `limit`.
/// Returns the entries and whether more follow.
pub async fn list(
    conn: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    dir: &FilePath,
    recursive: bool,
    after: Option<&str>,
    limit: u32,
) -> Result<(Vec<Entry>, bool)> {
    ensure_session(conn, org_id, session_id).await?;
    let (lo, hi) = dir.below();
    // Each row is a file, or (not recursive) the subdirectory its path passes
    // through: the part up to the next `/` after the directory's prefix.
    let rows = sqlx::query(
        "WITH below AS (
            SELECT f.path::text AS path, f.size, f.etag, f.content_type, f.created_at, f.updated_at,
                   CASE WHEN $6 THEN NULL ELSE nullif(strpos(substr(f.path, length($3) + 1), '/'), 0) END AS slash
              FROM files f WHERE f.org_id = $1 AND f.session_id = $2 AND f.path >= $3 AND f.path < $4
         ), entries AS (
            SELECT CASE WHEN slash IS NULL THEN path ELSE left(path, length($3) + slash - 1) END AS entry,
                   slash IS NOT NULL AS is_dir, path, size, etag, content_type, created_at, updated_at
              FROM below
         )
         SELECT entry, is_dir, CASE WHEN is_dir THEN NULL ELSE max(etag) END AS etag,
                CASE WHEN is_dir THEN NULL ELSE max(content_type) END AS content_type,
                sum(size)::int8 AS size, count(*) AS files, min(created_at) AS created_at, max(updated_at) AS updated_at
           FROM entries
          WHERE $5::text IS NULL OR entry COLLATE \"C\" > $5
          GROUP BY entry, is_dir ORDER BY entry COLLATE \"C\" LIMIT $7",
    )
    .bind(org_id)
    .bind(session_id)
    .bind(&lo)
    .bind(&hi)
    .bind(after)
    .bind(recursive)
    .bind(i64::from(limit) + 1)
    .fetch_all(conn)
    .await?;
    let more = rows.len() > limit as usize;
    let mut out = Vec::with_capacity(rows.len().min(limit as usize));
    for row in rows.into_iter().take(limit as usize) {
        let path: String = row.try_get("entry")?;
        let size: i64 = row.try_get("size")?;
        let updated_at = row.try_get("updated_at")?;
        out.push(if row.try_get::<bool, _>("is_dir")? {
            Entry::Directory { path, size, files: row.try_get("files")?, updated_at }
        } else {
            Entry::File(FileMeta {
                path,
                size,
                etag: row.try_get("etag")?,
                content_type: row.try_get("content_type")?,
                created_at: row.try_get("created_at")?,
                updated_at,
            })
        });
    }
    Ok((out, more))
}

/// One line that matched a search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub path: String,
    /// 1-based.
    pub line: i64,
    /// The line, cut to [`MAX_MATCH_LINE_CHARS`].
    pub text: String,
}

/// Longest line text a match carries.
pub const MAX_MATCH_LINE_CHARS: usize = 500;

/// A compiled search: the pattern (the `regex` crate: linear time, no
/// backtracking, its program bounded by [`super::MAX_REGEX_BYTES`]) and an optional glob on paths.
pub struct Search {
    pattern: regex::Regex,
    glob: Option<globset::GlobMatcher>,
}

impl Search {
    pub fn new(pattern: &str, glob: Option<&str>) -> Result<Search> {
        if pattern.is_empty() || pattern.len() > super::MAX_PATTERN_BYTES {
            return Err(Error::invalid("invalid_pattern", "a pattern is 1-1000 bytes"));
        }
        let pattern = regex::RegexBuilder::new(pattern)
            .size_limit(super::MAX_REGEX_BYTES)
            .dfa_size_limit(super::MAX_REGEX_BYTES)
            .build()
            .map_err(|e| Error::invalid("invalid_pattern", format!("the pattern is not a valid regular expression: {e}")))?;
        let glob = match glob {
            None => None,
            Some(g) if g.is_empty() || g.len() > super::MAX_PATH_BYTES => {
                return Err(Error::invalid("invalid_glob", "a glob is 1-1024 bytes"));
            }
            Some(g) => Some(
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| Error::invalid("invalid_glob", format!("the glob is not valid: {e}")))?
                    .compile_matcher(),
            ),
        };
        Ok(Search { pattern, glob })
    }

    /// Whether a path is searched: the glob matches it, or its file name when the glob has no `/`.
    fn wants(&self, path: &str) -> bool {
        match &self.glob {
            None => true,
            Some(g) => g.is_match(path) || g.is_match(path.rsplit('/').next().unwrap_or(path)),
        }
    }
}

/// Searches the session's text files (binary ones are skipped) line by line,
/// in path order, for at most `limit` matches.
pub async fn search(
    conn: &mut PgConnection,
    org_id: OrgId,
    session_id: SessionId,
    search: &Search,
    limit: u32,
) -> Result<Vec<Match>> {
    ensure_session(&mut *conn, org_id, session_id).await?;
    let paths: Vec<String> =
        sqlx::query_scalar("SELECT path::text FROM files WHERE org_id = $1 AND session_id = $2 ORDER BY path")
            .bind(org_id)
            .bind(session_id)
            .fetch_all(&mut *conn)
            .await?;
    let mut out = Vec::new();
    for path in paths.into_iter().filter(|p| search.wants(p)) {
        let content: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT content FROM files WHERE org_id = $1 AND session_id = $2 AND path = $3")
                .bind(org_id)
                .bind(session_id)
                .bind(&path)
                .fetch_optional(&mut *conn)
                .await?;
        let Some(text) = content.as_deref().and_then(as_text) else { continue };
        for (i, line) in text.lines().enumerate() {
            if search.pattern.is_match(line) {
                out.push(Match {
                    path: path.clone(),
                    line: i as i64 + 1,
                    text: line.chars().take(MAX_MATCH_LINE_CHARS).collect(),
                });
                if out.len() >= limit as usize {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The content as text, unless it is binary (not UTF-8, or holding NUL).
pub fn as_text(content: &[u8]) -> Option<&str> {
    std::str::from_utf8(content).ok().filter(|s| !s.contains('\0'))
}
