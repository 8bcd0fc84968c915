//! Configuration errors, each naming the file and the key at fault.

use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid YAML.
    #[error("{path}: not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key has a wrong type or value.
    #[error("{}{key}: {message}", in_file(file.as_deref()))]
    Invalid {
        /// The file the key was read from, once known (a master config and its includes are
        /// merged before they are read, so the loader fills this in last).
        file: Option<PathBuf>,
        /// The key path, e.g. `saltgate.hooks[2].verify.github.secret_file`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn in_file(file: Option<&Path>) -> String {
    file.map(|f| format!("{}: ", f.display()))
        .unwrap_or_default()
}

impl ConfigError {
    /// An invalid value at `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            file: None,
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key path at fault, for an invalid value.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } | Self::Yaml { .. } => None,
        }
    }

    /// The file named in the error.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Self::Invalid { file, .. } => file.as_deref(),
            Self::Read { path, .. } | Self::Yaml { path, .. } => Some(path),
        }
    }

    /// Names `file` as where the key was read, unless a file is named already.
    pub(crate) fn in_file(mut self, path: &Path) -> Self {
        if let Self::Invalid { file, .. } = &mut self {
            file.get_or_insert_with(|| path.to_path_buf());
        }
        self
    }

    /// Adds context to an invalid value's message (which rule it is in, say).
    pub(crate) fn with_note(mut self, note: &str) -> Self {
        if let Self::Invalid { message, .. } = &mut self {
            message.push_str(" (");
            message.push_str(note);
            message.push(')');
        }
        self
    }
}

/// Deserializes `value` as a `T`, naming the key path (below `prefix`) at fault.
pub(crate) fn parse_at<T: serde::de::DeserializeOwned>(
    value: serde_yaml::Value,
    prefix: Option<&str>,
) -> Result<T, ConfigError> {
    at_key(serde_path_to_error::deserialize(value), prefix)
}

/// A deserialisation result, its error naming the key path (below `prefix`) at fault.
pub(crate) fn at_key<T>(
    result: Result<T, serde_path_to_error::Error<serde_yaml::Error>>,
    prefix: Option<&str>,
) -> Result<T, ConfigError> {
    result.map_err(|e| {
        let path = e.path().to_string();
        let key = match (prefix, path.as_str()) {
            (Some(p), ".") => p.to_owned(),
            (Some(p), rest) if rest.starts_with('[') => format!("{p}{rest}"),
            (Some(p), rest) => format!("{p}.{rest}"),
            (None, rest) => rest.to_owned(),
        };
        ConfigError::invalid(key, e.into_inner().to_string())
    })
}
