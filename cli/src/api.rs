//! The REST client, generated at build time from `openapi/openapi.json` by progenitor (`build.rs`),
//! and how the CLI builds one for a credential.
//!
//! Error responses are `application/problem+json`, which progenitor leaves as raw bytes (it types
//! `application/json` bodies only); [`Failure::from_client`] parses them.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use progenitor_client::{ByteStream, Error, ResponseValue};

use crate::failure::Failure;

#[allow(clippy::all, dead_code, unused_imports, mismatched_lifetime_syntaxes)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/client.rs"));
}

pub use generated::{Client, types};

/// Which credential a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// An org API key (`TURNSTONE_API_KEY`).
    ApiKey,
    /// The deployment's operator token (`TURNSTONE_OPERATOR_TOKEN`), for `orgs`.
    Operator,
}

/// A generated client whose requests carry `token` as a bearer token. Requests have no overall
/// timeout (a stream stays open for minutes); connecting does.
pub fn client(url: &str, token: &str) -> Result<Client, Failure> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Failure::usage("the API key or token has characters a header cannot carry"))?;
    auth.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("turnstone-cli/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::usage(e.to_string()))?;
    Ok(Client::new_with_client(url, http))
}

/// Awaits a generated-client call, turning its error into a [`Failure`].
pub async fn call<T>(request: impl Future<Output = Result<ResponseValue<T>, Error<ByteStream>>>) -> Result<T, Failure> {
    Ok(call_response(request).await?.into_inner())
}

/// [`call`] that keeps the response's status and headers (`files get` reads its `ETag`).
pub async fn call_response<T>(
    request: impl Future<Output = Result<ResponseValue<T>, Error<ByteStream>>>,
) -> Result<ResponseValue<T>, Failure> {
    match request.await {
        Ok(value) => Ok(value),
        Err(e) => Err(Failure::from_client(e).await),
    }
}

/// Parses an argument into a generated (validated) type: an id, a tag, a key. A value the
/// contract rejects is a usage error, found before anything is sent.
pub fn arg<T: FromStr>(what: &str, value: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| Failure::usage(format!("{what} {value:?}: {e}")))
}
