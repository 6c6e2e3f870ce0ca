//! Environment overrides: `HEADWAY_<KEY>` and `HEADSCALE_<KEY>` for every known
//! key, with dots written as underscores (`HEADWAY_DATABASE_SQLITE_PATH`).
//!
//! Names are built from the key table rather than split on `_`, because keys
//! themselves contain underscores. Knows variable names and value syntax only.

use super::keys::{self, Role, Shape};
use super::legacy::Layer;
use super::load::ConfigError;
use super::values::{Setting, Source, split_list};
use yaml_serde::Value;

/// The two prefixes, weakest first: `HEADWAY_*` overrides `HEADSCALE_*`.
pub(crate) const PREFIXES: [&str; 2] = ["HEADSCALE", "HEADWAY"];

/// Every known key set under `prefix` in the environment.
///
/// An empty variable counts as unset, as in Headscale (viper ignores empty
/// variables), so a blank `HEADWAY_X=` line in a compose file changes nothing.
pub(crate) fn layer(
    prefix: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Layer, ConfigError> {
    let mut layer = Layer::new();
    for key in keys::KEYS {
        let suffix = keys::env_suffix(key.path);
        // `log_level` and `log.level` share LOG_LEVEL; the variable means the modern key.
        if key.role == Role::Legacy
            && keys::KEYS
                .iter()
                .any(|k| k.role != Role::Legacy && keys::env_suffix(k.path) == suffix)
        {
            continue;
        }
        let var = format!("{prefix}_{suffix}");
        let Some(text) = env(&var).filter(|t| !t.trim().is_empty()) else {
            continue;
        };
        let value = match key.shape {
            Shape::Scalar => Value::String(text),
            Shape::List => Value::Sequence(split_list(&text).into_iter().map(Value::String).collect()),
            // Maps and record lists are written inline as YAML or JSON, e.g. {"corp.example": ["10.0.0.53"]}.
            Shape::Structured if super::nesting::check(&text).is_err() => {
                return Err(ConfigError {
                    message: format!(
                        "environment variable {var}: {}: nested more than {} levels deep",
                        key.path,
                        super::nesting::MAX_NESTING
                    ),
                });
            }
            Shape::Structured => yaml_serde::from_str(&text).map_err(|e| ConfigError {
                message: format!(
                    "environment variable {var}: {}: not valid YAML or JSON ({e}); write it inline, e.g. {{\"corp.example\": [\"10.0.0.53\"]}}",
                    key.path
                ),
            })?,
        };
        layer.insert(
            key.path,
            Setting {
                value,
                source: Source::Env { var },
                written: key.path.to_owned(),
                raw: None,
            },
        );
    }
    Ok(layer)
}
