//! What every nunchi program shares at its edge: the logging set-up and the errors of a
//! TOML configuration file.
//!
//! Logging: `tracing` events to stderr, filtered by an environment variable in
//! `tracing_subscriber`'s target syntax (`info`, `debug,sqlx=warn`). An unset or
//! unreadable variable leaves the program's default: `info`, with the given targets
//! quieter.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The filter `var` names, or `info` with each of `quiet` at its own level.
pub fn log_filter(var: &str, quiet: &[(&str, Level)]) -> Targets {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            quiet.iter().fold(
                Targets::new().with_default(Level::INFO),
                |t, (target, l)| t.with_target(*target, *l),
            )
        })
}

/// Sends this process' `tracing` events to stderr through [`log_filter`]`(var, quiet)`.
pub fn init_logging(var: &str, quiet: &[(&str, Level)]) {
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(log_filter(var, quiet))
        .init();
}

/// A configuration problem, naming the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for these settings.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line, column and key).
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid `{key}`: {message}")]
    Invalid {
        /// The key, as in the config file (a program's flag is `--` plus the key in
        /// kebab case).
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// The error for `key`'s value.
pub fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// Parses `text`, the TOML document at `path`.
pub fn parse_toml<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads and parses the TOML file at `path`.
pub fn read_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_info_with_quieter_targets() {
        let t = log_filter("NUNCHI_CLI_TEST_UNSET", &[("sqlx", Level::WARN)]);
        assert!(t.would_enable("nunchi", &Level::INFO));
        assert!(!t.would_enable("nunchi", &Level::DEBUG));
        assert!(t.would_enable("sqlx::query", &Level::WARN));
        assert!(!t.would_enable("sqlx::query", &Level::INFO));
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct C {
            a: u32,
        }
        let path = Path::new("x.toml");
        let e = parse_toml::<C>("b = 1", path).expect_err("unknown key");
        assert!(e.to_string().starts_with("config file x.toml: "), "{e}");
        assert!(e.to_string().contains("`b`"), "{e}");
        let e = read_toml::<C>(Path::new("/nonexistent/x.toml")).expect_err("no file");
        assert!(
            e.to_string()
                .starts_with("cannot read config file /nonexistent/x.toml"),
            "{e}"
        );
        assert_eq!(
            invalid("a", "must be above 0").to_string(),
            "invalid `a`: must be above 0"
        );
    }
}
