//! Where the CLI finds the API and its credentials. Each setting comes from the first of: a flag,
//! the environment (`TURNSTONE_URL`, `TURNSTONE_API_KEY`, `TURNSTONE_OPERATOR_TOKEN`; clap reads
//! both), then the selected profile of the profile file that `turnstone login` writes.
//!
//! The profile file is TOML, `$TURNSTONE_CONFIG`, else `$XDG_CONFIG_HOME/turnstone/config.toml`,
//! else `~/.config/turnstone/config.toml`; it holds secrets, so it is written with mode 0600 (its
//! directory 0700), by a rename of a complete file.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::failure::Failure;

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "default";

/// The profile file: named profiles.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProfileFile {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One named set of settings.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_token: Option<String>,
}

/// The settings a command runs with, after precedence.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub api_key: Option<String>,
    pub operator_token: Option<String>,
}

/// The profile file's path.
pub fn path() -> Result<PathBuf, Failure> {
    if let Some(p) = std::env::var_os("TURNSTONE_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => return Err(Failure::usage("no config directory: set TURNSTONE_CONFIG, XDG_CONFIG_HOME or HOME")),
        },
    };
    Ok(base.join("turnstone").join("config.toml"))
}

impl ProfileFile {
    /// Reads the file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<ProfileFile, Failure> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ProfileFile::default()),
            Err(e) => Err(Failure::usage(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes the file, mode 0600, replacing the old one whole.
    pub fn save(&self, path: &Path) -> Result<(), Failure> {
        let fail = |e: std::io::Error| Failure::usage(format!("{}: {e}", path.display()));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(fail)?;
        }
        let text = toml::to_string(self).map_err(|e| Failure::usage(e.to_string()))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(fail)?;
        // `mode` is masked by the umask; set it exactly.
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// Resolves the settings: flags and environment (already merged by clap) over the profile.
/// `profile` is the name given with `--profile`/`TURNSTONE_PROFILE`; a named profile must exist.
pub fn resolve(
    url: Option<String>,
    api_key: Option<String>,
    operator_token: Option<String>,
    profile: Option<&str>,
) -> Result<Settings, Failure> {
    let path = path()?;
    let file = ProfileFile::load(&path)?;
    let stored = match profile {
        Some(name) => file
            .profiles
            .get(name)
            .cloned()
            .ok_or_else(|| Failure::usage(format!("no profile {name:?} in {}", path.display())))?,
        None => file.profiles.get(DEFAULT_PROFILE).cloned().unwrap_or_default(),
    };
    let url = url
        .or(stored.url)
        .ok_or_else(|| Failure::usage("no API URL: pass --url, set TURNSTONE_URL, or run `turnstone login --url … --key …`"))?;
    Ok(Settings {
        url: url.trim_end_matches('/').to_owned(),
        api_key: api_key.or(stored.api_key),
        operator_token: operator_token.or(stored.operator_token),
    })
}
