//! One configuration value with where it came from, and its conversions into
//! typed values; every refusal names the file and line (or the environment
//! variable), the key, the bad value and what is allowed.
//!
//! Knows value syntax; which key needs which type is decided in `apply.rs`.

use super::load::{ConfigError, Warning};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;
use yaml_serde::Value;

/// Where a value was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    File { origin: String, line: Option<usize> },
    Env { var: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File {
                origin,
                line: Some(line),
            } => write!(f, "{origin}:{line}"),
            Source::File { origin, line: None } => f.write_str(origin),
            Source::Env { var } => write!(f, "environment variable {var}"),
        }
    }
}

/// A key's value as the admin wrote it.
#[derive(Clone, Debug)]
pub(crate) struct Setting {
    pub value: Value,
    pub source: Source,
    /// The key as written (a legacy name when one was mapped onto a modern key).
    pub written: String,
    /// The scalar text exactly as in the file, when the line index saw it.
    pub raw: Option<String>,
}

impl Setting {
    /// An error about this value: `config.yaml:7: prefixes.v4: <what>`.
    pub(crate) fn error(&self, what: impl fmt::Display) -> ConfigError {
        ConfigError {
            message: format!("{}: {}: {what}", self.source, self.written),
        }
    }

    /// A warning about this value, in the same shape as `error`.
    pub(crate) fn warning(&self, what: impl fmt::Display) -> Warning {
        Warning {
            message: format!("{}: {}: {what}", self.source, self.written),
        }
    }

    fn wrong_type(&self, expected: &str) -> ConfigError {
        self.error(format!(
            "expected {expected}, found {}",
            describe(&self.value)
        ))
    }

    /// A scalar as text; numbers and bools are spelled out, an empty value is "".
    pub(crate) fn text(&self) -> Result<String, ConfigError> {
        scalar_text(&self.value).ok_or_else(|| self.wrong_type("a single value"))
    }

    /// Text where an empty value means "not set".
    pub(crate) fn optional_text(&self) -> Result<Option<String>, ConfigError> {
        let text = self.text()?;
        Ok((!text.trim().is_empty()).then_some(text))
    }

    pub(crate) fn optional_path(&self) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.optional_text()?.map(PathBuf::from))
    }

    pub(crate) fn path(&self) -> Result<PathBuf, ConfigError> {
        self.optional_path()?
            .ok_or_else(|| self.error("must not be empty (expected a file path)"))
    }

    /// `true`/`false`, also `yes`/`no`, `on`/`off` and `1`/`0` as older YAML and Go allow.
    pub(crate) fn flag(&self) -> Result<Option<bool>, ConfigError> {
        match &self.value {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(_) | Value::Number(_) => {
                let text = self.text()?;
                match text.trim().to_ascii_lowercase().as_str() {
                    "" => Ok(None),
                    "true" | "yes" | "on" | "1" | "t" => Ok(Some(true)),
                    "false" | "no" | "off" | "0" | "f" => Ok(Some(false)),
                    _ => Err(self.error(format!(
                        "{text:?} is not a boolean (expected true or false)"
                    ))),
                }
            }
            _ => Err(self.wrong_type("true or false")),
        }
    }

    /// A whole number from `min` to `max`; callers narrow it to their field's type.
    pub(crate) fn number(&self, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
        let refuse = |shown: String| {
            self.error(format!("{shown} is not a whole number from {min} to {max}"))
        };
        let wide = match &self.value {
            Value::Null => return Ok(None),
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .ok_or_else(|| refuse(n.to_string()))?,
            Value::String(s) if s.trim().is_empty() => return Ok(None),
            Value::String(s) => s
                .trim()
                .parse::<i128>()
                .map_err(|_| refuse(format!("{s:?}")))?,
            _ => return Err(self.wrong_type("a whole number")),
        };
        if (i128::from(min)..=i128::from(max)).contains(&wide) {
            // In range of two i64 bounds, so the narrowing is exact.
            Ok(Some(wide as i64))
        } else {
            Err(refuse(wide.to_string()))
        }
    }

    /// A Go or Prometheus duration (`30s`, `1h30m`, `90d`); `0` is zero; empty means "not set".
    pub(crate) fn duration(&self) -> Result<Option<Duration>, ConfigError> {
        match &self.value {
            Value::Null => Ok(None),
            Value::Number(n) if n.as_u64() == Some(0) => Ok(Some(Duration::ZERO)),
            Value::Number(n) => Err(self.error(format!(
                "{n} has no unit (expected a duration such as 30s, 15m, 24h or 90d)"
            ))),
            Value::String(s) if s.trim().is_empty() => Ok(None),
            Value::String(s) => crate::types::duration::parse(s)
                .map(Some)
                .map_err(|_| {
                    self.error(format!(
                        "{s:?} is not a duration (expected a number with a unit: ms, s, m, h, d, w or y, e.g. 30s, 1h30m, 90d)"
                    ))
                }),
            _ => Err(self.wrong_type("a duration such as 30m")),
        }
    }

    /// A list of names (emails, groups, domains): entries trimmed, empty ones dropped.
    pub(crate) fn names(&self) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .list()?
            .into_iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect())
    }

    /// A list of scalars. A single string is split on commas and spaces, as from the environment.
    pub(crate) fn list(&self) -> Result<Vec<String>, ConfigError> {
        match &self.value {
            Value::Null => Ok(Vec::new()),
            Value::Sequence(items) => items
                .iter()
                .map(|item| {
                    scalar_text(item).ok_or_else(|| {
                        self.error(format!(
                            "list entries must be single values, found {}",
                            describe(item)
                        ))
                    })
                })
                .collect(),
            Value::String(s) => Ok(split_list(s)),
            _ => Err(self.wrong_type("a list")),
        }
    }

    /// One of `allowed`, compared without regard to case; returns the canonical spelling.
    pub(crate) fn choice(&self, allowed: &[&'static str]) -> Result<&'static str, ConfigError> {
        let text = self.text()?;
        allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(text.trim()))
            .copied()
            .ok_or_else(|| {
                self.error(format!(
                    "{text:?} is not allowed (expected one of: {})",
                    allowed.join(", ")
                ))
            })
    }

    /// `host:port`; Go's `:port` means every interface. Empty means "off".
    pub(crate) fn socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(text) = self.optional_text()? else {
            return Ok(None);
        };
        parse_socket_addr(text.trim()).map(Some).ok_or_else(|| {
            self.error(format!(
                "{text:?} is not a listen address (expected host:port, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080)"
            ))
        })
    }

    pub(crate) fn prefix_v4(&self) -> Result<Option<Ipv4Net>, ConfigError> {
        let Some(text) = self.optional_text()? else {
            return Ok(None);
        };
        match text.trim().parse::<IpNet>() {
            Ok(IpNet::V4(net)) => Ok(Some(net.trunc())),
            Ok(IpNet::V6(_)) => Err(self.error(format!(
                "{text:?} is an IPv6 prefix (expected an IPv4 prefix such as 100.64.0.0/10; IPv6 belongs in prefixes.v6)"
            ))),
            Err(_) => Err(self.error(format!(
                "{text:?} is not an IPv4 prefix (expected e.g. 100.64.0.0/10)"
            ))),
        }
    }

    pub(crate) fn prefix_v6(&self) -> Result<Option<Ipv6Net>, ConfigError> {
        let Some(text) = self.optional_text()? else {
            return Ok(None);
        };
        match text.trim().parse::<IpNet>() {
            Ok(IpNet::V6(net)) => Ok(Some(net.trunc())),
            Ok(IpNet::V4(_)) => Err(self.error(format!(
                "{text:?} is an IPv4 prefix (expected an IPv6 prefix such as fd7a:115c:a1e0::/48; IPv4 belongs in prefixes.v4)"
            ))),
            Err(_) => Err(self.error(format!(
                "{text:?} is not an IPv6 prefix (expected e.g. fd7a:115c:a1e0::/48)"
            ))),
        }
    }

    pub(crate) fn ipv4(&self) -> Result<Option<Ipv4Addr>, ConfigError> {
        let Some(text) = self.optional_text()? else {
            return Ok(None);
        };
        text.trim().parse().map(Some).map_err(|_| {
            self.error(format!(
                "{text:?} is not an IPv4 address (expected e.g. 198.51.100.1)"
            ))
        })
    }

    pub(crate) fn ipv6(&self) -> Result<Option<Ipv6Addr>, ConfigError> {
        let Some(text) = self.optional_text()? else {
            return Ok(None);
        };
        text.trim().parse().map(Some).map_err(|_| {
            self.error(format!(
                "{text:?} is not an IPv6 address (expected e.g. 2001:db8::1)"
            ))
        })
    }

    /// File mode bits written in octal: `"0770"`, `0770`, `770` or `0o770`.
    pub(crate) fn octal_mode(&self) -> Result<Option<u32>, ConfigError> {
        // An unquoted number was read as decimal or YAML octal, so go back to its digits.
        let text = match (&self.value, &self.raw) {
            (Value::Null, _) => return Ok(None),
            (Value::Number(_), Some(raw)) => raw.clone(),
            (Value::Number(n), None) => n.to_string(),
            (Value::String(s), _) => s.clone(),
            _ => return Err(self.wrong_type("an octal file mode such as \"0770\"")),
        };
        let digits = text.trim();
        let digits = digits
            .strip_prefix("0o")
            .or_else(|| digits.strip_prefix("0O"))
            .unwrap_or(digits);
        u32::from_str_radix(digits, 8)
            .ok()
            .filter(|mode| !digits.is_empty() && *mode <= 0o7777)
            .map(Some)
            .ok_or_else(|| {
                self.error(format!(
                    "{text:?} is not an octal file mode (expected e.g. \"0770\")"
                ))
            })
    }
}

/// Text of a scalar; `None` for lists and mappings.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(String::new()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Tagged(tagged) => scalar_text(&tagged.value),
        Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

/// How a value looks, for "expected X, found Y".
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Splits `a, b c` into entries, as lists are written in environment variables.
pub(crate) fn split_list(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn parse_socket_addr(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse() {
        return Some(addr);
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip: IpAddr = match host {
        // Go's `:8080` listens on every interface.
        "" => Ipv4Addr::UNSPECIFIED.into(),
        "localhost" => Ipv4Addr::LOCALHOST.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether `prefix` lies inside one of Tailscale's own ranges.
pub(crate) fn in_tailscale_range(prefix: &IpNet) -> bool {
    let cgnat: IpNet = "100.64.0.0/10".parse().expect("valid constant");
    let ula: IpNet = "fd7a:115c:a1e0::/48".parse().expect("valid constant");
    cgnat.contains(prefix) || ula.contains(prefix)
}

/// A Go listen address: `host:port` or `:port`, where the port may be a service
/// name (`http`, `https`), as Headscale's `tls_letsencrypt_listen` takes it.
pub(crate) fn go_listen_addr(text: &str) -> Option<SocketAddr> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let port: u16 = match port {
        "http" => 80,
        "https" => 443,
        number => number.parse().ok()?,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host.is_empty() {
        std::net::IpAddr::from([0, 0, 0, 0])
    } else {
        host.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}
