//! The session filesystem (`/v1/sessions/{id}/files`): raw-byte upload and
//! download with entity tags, ranges and preconditions; listing, delete,
//! move/copy and search.

use futures::StreamExt;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Body, IntoResponse, Request, Response};
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::{ApiResponse, OpenApi};
use turnstone_core::storage::files::{self, Precondition, Search};
use turnstone_core::storage::{By, FilePath, Writer};
use turnstone_core::{db, limits};

use super::Tag;
use crate::AppState;
use crate::auth::ApiKey;
use crate::error::{ApiError, Problem};
use crate::text::Text;
use crate::wire::rules::{self, Id};
use crate::wire::{FileDeleted, FileList, FileMeta, FileSearch, FileTransfer, SearchMatch, SearchResult};

pub struct FilesApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
enum FileWritten {
    /// The file was created.
    #[oai(status = 201)]
    Created(Json<FileMeta>, #[oai(header = "ETag")] String),
    /// The file was replaced.
    #[oai(status = 200)]
    Replaced(Json<FileMeta>, #[oai(header = "ETag")] String),
}

#[derive(ApiResponse)]
enum FileMoved {
    /// The target was created.
    #[oai(status = 201)]
    Created(Json<FileMeta>, #[oai(header = "ETag")] String),
    /// The target existed and was replaced (`overwrite`).
    #[oai(status = 200)]
    Replaced(Json<FileMeta>, #[oai(header = "ETag")] String),
}

/// A quoted entity tag, as the `ETag` header carries it.
fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// The entity tag an `If-Match` names: one strong tag, quoted (a bare one is accepted too).
fn if_match_tag(value: Option<&Text>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.map(|v| v.0.trim()) else { return Ok(None) };
    let tag = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
    if tag.is_empty() || tag.len() > 64 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(
            "invalid_precondition",
            "If-Match must name one entity tag, as the ETag header gave it",
        ));
    }
    Ok(Some(tag.to_owned()))
}

/// Whether an `If-None-Match` is `*`; anything else is refused on a write.
fn if_none_match_any(value: Option<&Text>) -> Result<bool, ApiError> {
    match value.map(|v| v.0.trim()) {
        None => Ok(false),
        Some("*") => Ok(true),
        Some(_) => Err(ApiError::bad_request("invalid_precondition", "on a write, If-None-Match may only be *")),
    }
}

/// Whether an `If-None-Match` on a read names the current tag (or `*`).
fn none_match_hit(value: Option<&str>, etag: &str) -> bool {
    value.is_some_and(|v| v.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/").trim_matches('"') == etag))
}

/// Whether a `Range` applies under `If-Range` (RFC 9110 13.1.5): without one, yes; with one, only
/// when it names the current entity tag, strongly compared. A date never matches (no
/// `Last-Modified` is sent), so the whole file is sent.
fn range_applies(if_range: Option<&str>, etag: &str) -> bool {
    if_range.is_none_or(|v| v.trim().strip_prefix('"').and_then(|v| v.strip_suffix('"')) == Some(etag))
}

/// A `Range: bytes=…` header resolved against the content's length: `None`
/// to send it whole (no header, or several ranges), `Err` when unsatisfiable.
fn byte_range(value: Option<&str>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else { return Err(()) };
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 || len == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len - 1)
        }
        (s, "") => (s.parse().map_err(|_| ())?, len.saturating_sub(1)),
        (s, e) => {
            let (s, e): (u64, u64) = (s.parse().map_err(|_| ())?, e.parse().map_err(|_| ())?);
            if e < s {
                return Err(());
            }
            (s, e.min(len.saturating_sub(1)))
        }
    };
    if start >= len { Err(()) } else { Ok(Some((start, end))) }
}

/// `GET …/files/content`: the bytes, a range of them, or not-modified.
pub enum FileContent {
    Full { content: Vec<u8>, content_type: String, etag: String },
    Partial { content: Vec<u8>, content_type: String, etag: String, range: String },
    NotModified { etag: String },
    Unsatisfiable { len: u64 },
}

impl IntoResponse for FileContent {
    fn into_response(self) -> Response {
        let header_value =
            |s: &str| HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
        match self {
            FileContent::Full { content, content_type, etag } => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, header_value(&content_type))
                .header(header::ETAG, quoted(&etag))
                .header(header::ACCEPT_RANGES, "bytes")
                .body(content),
            FileContent::Partial { content, content_type, etag, range } => Response::builder()
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, header_value(&content_type))
                .header(header::ETAG, quoted(&etag))
                .header(header::CONTENT_RANGE, range)
                .body(content),
            FileContent::NotModified { etag } => {
                Response::builder().status(StatusCode::NOT_MODIFIED).header(header::ETAG, quoted(&etag)).body(Body::empty())
            }
            FileContent::Unsatisfiable { len } => {
                let p =
                    Problem::new(StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable", "the Range lies outside the file");
                let body =
                    serde_json::json!({"type": p.kind, "title": p.title, "status": p.status, "detail": p.detail, "code": p.code});
                Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .content_type("application/problem+json")
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(body.to_string())
            }
        }
    }
}

fn string_header(name: &str, description: &str) -> MetaHeader {
    MetaHeader {
        name: name.into(),
        description: Some(description.into()),
        required: true,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
    }
}

impl ApiResponse for FileContent {
    fn meta() -> MetaResponses {
        let bytes = || {
            vec![MetaMediaType {
                content_type: "application/octet-stream",
                schema: MetaSchemaRef::Inline(Box::new(MetaSchema { format: Some("binary"), ..MetaSchema::new("string") })),
            }]
        };
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "The file's bytes. The `Content-Type` header is the one the file was written with (`application/octet-stream` when none was).",
                    status: Some(200),
                    status_range: None,
                    content: bytes(),
                    headers: vec![
                        string_header("ETag", "The version's quoted entity tag."),
                        string_header("Accept-Ranges", "`bytes`."),
                    ],
                },
                MetaResponse {
                    description: "The requested byte range (a single `Range: bytes=…`).",
                    status: Some(206),
                    status_range: None,
                    content: bytes(),
                    headers: vec![
                        string_header("ETag", "The version's quoted entity tag."),
                        string_header("Content-Range", "`bytes start-end/size`."),
                    ],
                },
                MetaResponse {
                    description: "`If-None-Match` names the current version.",
                    status: Some(304),
                    status_range: None,
                    content: vec![],
                    headers: vec![string_header("ETag", "The version's quoted entity tag.")],
                },
                MetaResponse {
                    description: "The `Range` lies outside the file.",
                    status: Some(416),
                    status_range: None,
                    content: vec![MetaMediaType {
                        content_type: "application/problem+json",
                        schema: MetaSchemaRef::Reference("Problem".into()),
                    }],
                    headers: vec![string_header("Content-Range", "`bytes */size`.")],
                },
            ],
        }
    }

    fn register(registry: &mut Registry) {
        <Problem as poem_openapi::types::Type>::register(registry);
    }
}

/// Reads a body of at most `limit` bytes, refusing it (413 `file_too_large`)
/// as soon as it is longer — from its `Content-Length`, or while it streams in.
async fn read_limited(req: &Request, body: Body, limit: i64) -> Result<Vec<u8>, ApiError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "file_too_large", format!("a file is at most {limit} bytes in this org"));
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = std::pin::pin!(body.into_bytes_stream());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request("bad_request", format!("the body could not be read: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(too_large());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn path_of(p: &Text) -> Result<FilePath, ApiError> {
    Ok(FilePath::parse("path", &p.0)?)
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::Files")]
impl FilesApi {
    /// Write a file: the request body is its content, byte for byte, and its
    /// `Content-Type` is stored and returned on read. `If-Match: "<etag>"`
    /// replaces only that version; `If-None-Match: *` only creates (412
    /// `precondition_failed` otherwise). A body over the org's per-file limit
    /// (10 MiB by default) is refused while it streams in (413 `file_too_large`).
    #[oai(path = "/sessions/:session_id/files/content", method = "put", operation_id = "writeFile")]
    #[allow(clippy::too_many_arguments)] // each is an input of the HTTP operation
    async fn write(
        &self,
        auth: ApiKey,
        req: &Request,
        session_id: Path<Id<rules::Session>>,
        /// The file's absolute path.
        path: Query<rules::FilePath>,
        #[oai(name = "If-Match")] if_match: Header<Option<Text>>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<Text>>,
        body: Binary<Body>,
    ) -> Result<FileWritten, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let path = path_of(&path.0.0)?;
        let pre = match (if_match_tag(if_match.0.as_ref())?, if_none_match_any(if_none_match.0.as_ref())?) {
            (Some(_), true) => {
                return Err(ApiError::bad_request("invalid_precondition", "send If-Match or If-None-Match, not both"));
            }
            (Some(tag), false) => Precondition::Matches(tag),
            (None, true) => Precondition::Absent,
            (None, false) => Precondition::None,
        };
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .unwrap_or("application/octet-stream")
            .to_owned();
        files::validate_content_type(&content_type)?;
        let limit = files::max_file_bytes(&mut *self.state.org_tx(org).await?, org, session).await?;
        let content = read_limited(req, body.0, limit).await?;
        let mut c = db::autocommit(&self.state.pool).await?;
        let written =
            files::write(&mut c, Writer { org_id: org, session_id: session, by: By::Api }, &path, &content, &content_type, &pre)
                .await?;
        c.commit().await?;
        let etag = quoted(&written.value.etag);
        Ok(if written.created {
            FileWritten::Created(Json(written.value.into()), etag)
        } else {
            FileWritten::Replaced(Json(written.value.into()), etag)
        })
    }

    /// Read a file's bytes. `If-None-Match` naming the current version answers
    /// 304; one `Range: bytes=…` answers 206 with that part, unless an `If-Range`
    /// names another version (then the whole file, 200).
    #[oai(path = "/sessions/:session_id/files/content", method = "get", operation_id = "readFile")]
    async fn read(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        /// The file's absolute path.
        path: Query<rules::FilePath>,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<Text>>,
        #[oai(name = "Range")] range: Header<Option<Text>>,
        /// `"<etag>"`: apply `Range` only if the file is still that version.
        #[oai(name = "If-Range")]
        if_range: Header<Option<Text>>,
    ) -> Result<FileContent, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let path = path_of(&path.0.0)?;
        let mut tx = self.state.org_tx(org).await?;
        let inm = if_none_match.0.as_ref().map(|t| t.0.as_str());
        if inm.is_some() {
            files::ensure_session(&mut tx, org, session).await?;
            if let Some(meta) = files::stat(&mut tx, org, session, &path).await?
                && none_match_hit(inm, &meta.etag)
            {
                return Ok(FileContent::NotModified { etag: meta.etag });
            }
        }
        let (meta, content) = files::read(&mut tx, org, session, &path).await?;
        let len = content.len() as u64;
        let range = range
            .0
            .as_ref()
            .map(|t| t.0.as_str())
            .filter(|_| range_applies(if_range.0.as_ref().map(|t| t.0.as_str()), &meta.etag));
        Ok(match byte_range(range, len) {
            Ok(None) => FileContent::Full { content, content_type: meta.content_type, etag: meta.etag },
            Ok(Some((start, end))) => FileContent::Partial {
                content: content[start as usize..=end as usize].to_vec(),
                content_type: meta.content_type,
                etag: meta.etag,
                range: format!("bytes {start}-{end}/{len}"),
            },
            Err(()) => FileContent::Unsatisfiable { len },
        })
    }

    /// List a directory: its files and subdirectories (or with
    /// `recursive=true` every file below it), by path.
    #[oai(path = "/sessions/:session_id/files", method = "get", operation_id = "listFiles")]
    async fn list(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        /// The directory (default `/`).
        dir: Query<Option<rules::DirPath>>,
        /// Every file below `dir`, not only its direct entries.
        #[oai(default)]
        recursive: Query<bool>,
        /// Page size (default 50).
        limit: Query<Option<crate::wire::PageLimit>>,
        /// Cursor: `next_cursor` of the previous page (a path).
        after: Query<Option<rules::DirPath>>,
    ) -> Result<Json<FileList>, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let dir = FilePath::parse_dir("dir", dir.0.as_ref().map_or("/", |d| d.0.0.as_str()))?;
        let limit = super::page_limit(limit.0, limits::MAX_PAGE_LIMIT)?;
        let after = after.0.as_ref().map(|a| FilePath::parse_dir("after", &a.0.0)).transpose()?;
        let mut tx = self.state.org_tx(org).await?;
        let (entries, more) =
            files::list(&mut tx, org, session, &dir, recursive.0, after.as_ref().map(FilePath::as_str), limit).await?;
        let next = if more { entries.last().map(|e| e.path().to_owned()) } else { None };
        Ok(Json(FileList { data: entries.into_iter().map(Into::into).collect(), next_cursor: next.into() }))
    }

    /// Delete a file (optionally only the version `If-Match` names), or with
    /// `recursive=true` a directory and everything below it.
    #[oai(path = "/sessions/:session_id/files", method = "delete", operation_id = "deleteFile")]
    async fn delete(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        /// The file's (or directory's) absolute path.
        path: Query<rules::FilePath>,
        /// Delete a directory and everything below it.
        #[oai(default)]
        recursive: Query<bool>,
        #[oai(name = "If-Match")] if_match: Header<Option<Text>>,
    ) -> Result<Json<FileDeleted>, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let path = path_of(&path.0.0)?;
        let tag = if_match_tag(if_match.0.as_ref())?;
        let mut c = db::autocommit(&self.state.pool).await?;
        let gone =
            files::delete(&mut c, Writer { org_id: org, session_id: session, by: By::Api }, &path, tag.as_deref(), recursive.0)
                .await?;
        c.commit().await?;
        Ok(Json(FileDeleted { path: path.to_string(), files: gone.value.files, bytes: gone.value.bytes }))
    }

    /// Move (rename) a file. The target gets a new etag.
    #[oai(path = "/sessions/:session_id/files/move", method = "post", operation_id = "moveFile")]
    async fn move_file(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        body: Json<FileTransfer>,
    ) -> Result<FileMoved, ApiError> {
        self.transfer(auth, session_id, body, false).await
    }

    /// Copy a file. The copy gets its own etag.
    #[oai(path = "/sessions/:session_id/files/copy", method = "post", operation_id = "copyFile")]
    async fn copy_file(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        body: Json<FileTransfer>,
    ) -> Result<FileMoved, ApiError> {
        self.transfer(auth, session_id, body, true).await
    }

    /// Search the session's text files line by line with a regular expression
    /// (binary files are skipped), in path order.
    #[oai(path = "/sessions/:session_id/files/search", method = "post", operation_id = "searchFiles")]
    async fn search(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        body: Json<FileSearch>,
    ) -> Result<Json<SearchResult>, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let limit = match body.0.limit.map(u32::from) {
            None => 100,
            Some(n) if (1..=turnstone_core::storage::MAX_SEARCH_RESULTS).contains(&n) => n,
            Some(_) => return Err(ApiError::bad_request("invalid_limit", "limit must be 1-1000")),
        };
        let search = Search::new(&body.0.pattern.0, body.0.glob.as_ref().map(|g| g.0.as_str()))?;
        let mut tx = self.state.org_tx(org).await?;
        let found = files::search(&mut tx, org, session, &search, limit).await?;
        Ok(Json(SearchResult { data: found.into_iter().map(SearchMatch::from).collect() }))
    }
}

impl FilesApi {
    async fn transfer(
        &self,
        auth: ApiKey,
        session_id: Path<Id<rules::Session>>,
        body: Json<FileTransfer>,
        copy: bool,
    ) -> Result<FileMoved, ApiError> {
        let org = auth.0.org_id;
        let session = session_id.0.id()?;
        let from = FilePath::parse("from", &body.0.from.0.0)?;
        let to = FilePath::parse("to", &body.0.to.0.0)?;
        let mut c = db::autocommit(&self.state.pool).await?;
        let moved = files::move_or_copy(
            &mut c,
            Writer { org_id: org, session_id: session, by: By::Api },
            &from,
            &to,
            body.0.overwrite.unwrap_or(false),
            copy,
        )
        .await?;
        c.commit().await?;
        let etag = quoted(&moved.value.etag);
        Ok(if moved.created {
            FileMoved::Created(Json(moved.value.into()), etag)
        } else {
            FileMoved::Replaced(Json(moved.value.into()), etag)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(byte_range(None, 10), Ok(None));
        assert_eq!(byte_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(byte_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(byte_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(byte_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(byte_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(byte_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(byte_range(Some("bytes=4-2"), 10), Err(()));
        assert_eq!(byte_range(Some("bytes=x"), 10), Err(()));
    }

    #[test]
    fn preconditions() {
        assert!(none_match_hit(Some("\"abc\""), "abc"));
        assert!(none_match_hit(Some("W/\"x\", \"abc\""), "abc"));
        assert!(none_match_hit(Some("*"), "abc"));
        assert!(!none_match_hit(Some("\"abd\""), "abc"));
        assert_eq!(if_match_tag(Some(&Text("\"ab12\"".into()))).unwrap(), Some("ab12".into()));
        assert!(if_match_tag(Some(&Text("\"a\", \"b\"".into()))).is_err());
    }

    #[test]
    fn if_range_applies_a_range_only_to_the_version_it_names() {
        assert!(range_applies(None, "ab12"));
        assert!(range_applies(Some("\"ab12\""), "ab12"));
        assert!(!range_applies(Some("\"ab13\""), "ab12"));
        assert!(!range_applies(Some("W/\"ab12\""), "ab12"), "a weak tag never matches strongly");
        assert!(!range_applies(Some("Sun, 06 Dec 2026 04:00:00 GMT"), "ab12"));
    }
}
