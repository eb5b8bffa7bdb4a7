//! Who moderates: the names listed with `--moderators`, when their identity
//! is trusted. A listed name is trusted when an authenticating proxy names
//! the caller, or when it is claimed with the moderator key (the secret in
//! `--moderator-key-file`); without that proof nobody may claim it or speak
//! under it, in any spelling with the same [`NameKey`].
//!
//! A session of a listed name can only be made with that proof (`Join`
//! refuses it otherwise), so holding such a session is the proof: a replica
//! that finds a session made on another one needs to know nothing else.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;
use thiserror::Error;

use super::name_key::NameKey;

#[derive(Debug, Error)]
pub enum RolesError {
    #[error("reading the moderator key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the moderator key file {0} is empty: put a long random secret in it")]
    Empty(PathBuf),
    #[error(
        "the moderator key file {path} can be read by others (mode {mode:o}): \
         make it readable by the server's user only (chmod 600)"
    )]
    Readable { path: PathBuf, mode: u32 },
}

/// The moderators' names and the key that proves one; cheap to share.
#[derive(Debug, Default)]
pub struct Roles {
    moderators: HashSet<NameKey>,
    key: Option<Vec<u8>>,
}

impl Roles {
    /// `names` moderate; `key`, if given, proves one without a proxy.
    pub fn new<S: AsRef<str>>(names: &[S], key: Option<Vec<u8>>) -> Self {
        Self {
            moderators: names
                .iter()
                .map(|n| n.as_ref().trim())
                .filter(|n| !n.is_empty())
                .map(NameKey::of)
                .collect(),
            key,
        }
    }

    /// The names in `names`, with the key read from `key_file`: refused if
    /// the file is empty or anyone but its owner may read it.
    pub fn load<S: AsRef<str>>(names: &[S], key_file: Option<&Path>) -> Result<Self, RolesError> {
        let key = key_file.map(read_key).transpose()?;
        Ok(Self::new(names, key))
    }

    /// Whether `name` is a moderator's, and so reserved to its proof.
    pub fn is_listed(&self, name: &str) -> bool {
        !self.moderators.is_empty() && self.moderators.contains(&NameKey::of(name))
    }

    /// Whether `key` is the moderator key (compared in constant time).
    pub fn key_opens(&self, key: &str) -> bool {
        match &self.key {
            Some(secret) if !key.is_empty() => bool::from(secret.ct_eq(key.as_bytes())),
            _ => false,
        }
    }
}

/// The key in `path`, without trailing whitespace (an editor's newline).
fn read_key(path: &Path) -> Result<Vec<u8>, RolesError> {
    let read = |source| RolesError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(RolesError::Readable {
                path: path.to_owned(),
                mode,
            });
        }
    }
    let _ = metadata;
    let mut key = std::fs::read(path).map_err(read)?;
    while key.last().is_some_and(u8::is_ascii_whitespace) {
        key.pop();
    }
    if key.is_empty() {
        return Err(RolesError::Empty(path.to_owned()));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_names_are_found_in_any_spelling() {
        let roles = Roles::new(&["Ada", " bob "], None);
        assert!(roles.is_listed("ada"));
        assert!(roles.is_listed("ADA"));
        assert!(roles.is_listed("Bob"));
        assert!(!roles.is_listed("carol"));
        assert!(!Roles::default().is_listed("ada"));
    }

    #[test]
    fn only_the_key_opens() {
        let roles = Roles::new(&["ada"], Some(b"s3cret".to_vec()));
        assert!(roles.key_opens("s3cret"));
        assert!(!roles.key_opens("s3cre"));
        assert!(!roles.key_opens(""));
        assert!(!Roles::new(&["ada"], None).key_opens("s3cret"));
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_must_be_private_and_not_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("roles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("key");
        std::fs::write(&file, "s3cret\n\n").expect("write key");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let roles = Roles::load(&["ada"], Some(&file)).expect("a private key file loads");
        assert!(roles.key_opens("s3cret"), "the trailing newline is ignored");

        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            Roles::load(&["ada"], Some(&file)),
            Err(RolesError::Readable { .. })
        ));

        std::fs::write(&file, " \n").expect("write key");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            Roles::load(&["ada"], Some(&file)),
            Err(RolesError::Empty(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
