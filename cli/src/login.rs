//! `turnstone login`: checks the URL and credentials against the API, then saves them as a named
//! profile in the profile file (mode 0600).

use crate::api::{self, call};
use crate::config::{self, DEFAULT_PROFILE, Profile, ProfileFile};
use crate::failure::Failure;

pub async fn run(
    url: Option<String>,
    api_key: Option<String>,
    operator_token: Option<String>,
    profile: Option<String>,
    verify: bool,
) -> Result<(), Failure> {
    let url = url.ok_or_else(|| Failure::usage("login needs --url"))?.trim_end_matches('/').to_owned();
    if api_key.is_none() && operator_token.is_none() {
        return Err(Failure::usage("login needs --key (an org API key) or --operator-token"));
    }
    if verify {
        if let Some(key) = &api_key {
            call(api::client(&url, key)?.list_capabilities()).await?;
        }
        if let Some(token) = &operator_token {
            call(api::client(&url, token)?.list_orgs(None, std::num::NonZeroU32::new(1))).await?;
        }
    }
    let name = profile.unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
    let path = config::path()?;
    let mut file = ProfileFile::load(&path)?;
    file.profiles.insert(name.clone(), Profile { url: Some(url.clone()), api_key, operator_token });
    file.save(&path)?;
    eprintln!("saved profile {name:?} ({url}) in {}", path.display());
    Ok(())
}
