//! `oidc.*`: single sign-on through an OpenID Connect provider, with Headscale
//! 0.29's keys and defaults; reads the client secret file (`client_secret_path`).

use super::apply::flag;
use super::legacy::Layer;
use super::load::{ConfigError, Warning};
use super::values::{Setting, describe, scalar_text};
use std::collections::BTreeMap;
use std::path::Path;
use yaml_serde::Value;

/// `oidc.*` once `oidc.issuer` is set (setting the issuer is what turns OIDC on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oidc {
    /// `oidc.issuer`: the provider's issuer URL; its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// `oidc.client_secret`, or the trimmed contents of `oidc.client_secret_path`.
    /// Empty only for a public client with PKCE.
    pub client_secret: String,
    /// `oidc.scope`: default `openid profile email`.
    pub scope: Vec<String>,
    /// `oidc.extra_params`: added to the authorization URL (e.g. `domain_hint`).
    pub extra_params: BTreeMap<String, String>,
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    /// `oidc.email_verified_required` (default true): an unverified email is not
    /// trusted for the allow rules, nor kept on the user.
    pub email_verified_required: bool,
    /// `oidc.use_expiry_from_token`: the node expires with the ID token.
    pub use_expiry_from_token: bool,
    /// `oidc.pkce.enabled` + `oidc.pkce.method`.
    pub pkce: Option<PkceMethod>,
    /// `oidc.only_start_if_oidc_is_available` (default true).
    pub only_start_if_available: bool,
}

impl Oidc {
    /// A provider with Headscale's defaults for everything else.
    pub fn with_defaults(issuer: String, client_id: String, client_secret: String) -> Oidc {
        Oidc {
            issuer,
            client_id,
            client_secret,
            scope: ["openid", "profile", "email"].map(String::from).to_vec(),
            extra_params: BTreeMap::new(),
            allowed_domains: Vec::new(),
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            email_verified_required: true,
            use_expiry_from_token: false,
            pkce: None,
            only_start_if_available: true,
        }
    }
}

/// How the PKCE code challenge is derived from the verifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PkceMethod {
    S256,
    Plain,
}

impl PkceMethod {
    /// The `code_challenge_method` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S256 => "S256",
            Self::Plain => "plain",
        }
    }
}

/// Builds `Oidc` from the layer; `None` when `oidc.issuer` is unset or empty.
pub(crate) fn build(s: &Layer, warnings: &mut Vec<Warning>) -> Result<Option<Oidc>, ConfigError> {
    let issuer_setting = s.get("oidc.issuer");
    let issuer = match issuer_setting {
        Some(v) => v.optional_text()?.map(|t| t.trim().to_owned()),
        None => None,
    };
    if let Some(v) = s.get("oidc.enabled") {
        warnings.push(
            v.warning("has no effect: OIDC is on exactly when oidc.issuer is set, as in Headscale"),
        );
    }
    let Some(issuer) = issuer else {
        // Settings that need an issuer, written without one, do nothing: say so
        // (empty values and Headscale's defaults, as in its example, say nothing).
        let meaningful = |v: &&Setting| match &v.value {
            Value::Null => false,
            // Any scope means nothing without a provider to ask.
            Value::Sequence(_) if v.written == "oidc.scope" => false,
            Value::Sequence(items) => !items.is_empty(),
            Value::Mapping(map) => !map.is_empty(),
            other => {
                let text = scalar_text(other).unwrap_or_default();
                let key = v.written.as_str();
                match key {
                    "oidc.pkce.enabled" | "oidc.use_expiry_from_token" => text == "true",
                    "oidc.email_verified_required" | "oidc.only_start_if_oidc_is_available" => {
                        text == "false"
                    }
                    "oidc.pkce.method" => !text.is_empty() && text != "S256",
                    _ => !text.trim().is_empty(),
                }
            }
        };
        let orphans: Vec<&Setting> = super::keys::KEYS
            .iter()
            .filter(|k| k.path.starts_with("oidc.") && k.path != "oidc.enabled")
            .filter_map(|k| s.get(k.path))
            .filter(meaningful)
            .collect();
        if let Some(first) = orphans.first() {
            warnings.push(first.warning(
                "has no effect without oidc.issuer, nor has the rest of oidc: nodes register with pre-auth keys or from the CLI",
            ));
        }
        return Ok(None);
    };
    let issuer_setting = issuer_setting.expect("an issuer was read from it");
    let url = url::Url::parse(&issuer).map_err(|e| {
        issuer_setting.error(format!(
            "{issuer:?} is not a URL ({e}); expected the provider's issuer, e.g. https://accounts.google.com"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(issuer_setting.error(format!(
            "{issuer:?} is not an http(s) URL; expected the provider's issuer, e.g. https://accounts.google.com"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(issuer_setting.error(format!(
            "{issuer:?} has a query or fragment; an issuer is a plain URL such as https://login.example.com/realms/main"
        )));
    }

    let mut oidc = Oidc::with_defaults(issuer, String::new(), String::new());
    if let Some(v) = s.get("oidc.client_id") {
        oidc.client_id = v.optional_text()?.unwrap_or_default().trim().to_owned();
    }
    if oidc.client_id.is_empty() {
        return Err(issuer_setting.error(
            "needs oidc.client_id: the id the provider gave headway when you registered it as a client",
        ));
    }
    let secret = match s.get("oidc.client_secret") {
        Some(v) => v.optional_text()?.map(|t| (v, t.trim().to_owned())),
        None => None,
    };
    let secret_path = match s.get("oidc.client_secret_path") {
        Some(v) => v.optional_text()?.map(|t| (v, t)),
        None => None,
    };
    match (secret, secret_path) {
        (Some(_), Some((v, _))) => {
            return Err(v.error(
                "oidc.client_secret and oidc.client_secret_path are mutually exclusive; keep one",
            ));
        }
        (Some((_, secret)), None) => oidc.client_secret = secret,
        (None, Some((v, path))) => oidc.client_secret = read_secret(v, &path)?,
        (None, None) => {}
    }

    if let Some(v) = s.get("oidc.scope") {
        let scope = v.list()?;
        if !scope.is_empty() {
            oidc.scope = scope;
        }
        if !oidc.scope.iter().any(|s| s == "openid") {
            return Err(v.error(
                "must include openid: without it the provider sends no ID token (expected e.g. [openid, profile, email])",
            ));
        }
    }
    if let Some(v) = s.get("oidc.extra_params") {
        oidc.extra_params = extra_params(v)?;
    }
    for (key, field) in [
        ("oidc.allowed_domains", &mut oidc.allowed_domains),
        ("oidc.allowed_users", &mut oidc.allowed_users),
        ("oidc.allowed_groups", &mut oidc.allowed_groups),
    ] {
        if let Some(v) = s.get(key) {
            *field = v.names()?;
        }
    }
    flag(
        s,
        "oidc.email_verified_required",
        &mut oidc.email_verified_required,
    )?;
    flag(
        s,
        "oidc.use_expiry_from_token",
        &mut oidc.use_expiry_from_token,
    )?;
    flag(
        s,
        "oidc.only_start_if_oidc_is_available",
        &mut oidc.only_start_if_available,
    )?;
    let mut pkce_enabled = false;
    flag(s, "oidc.pkce.enabled", &mut pkce_enabled)?;
    let method = match s.get("oidc.pkce.method") {
        Some(v) if v.optional_text()?.is_some() => match v.choice(&["S256", "plain"])? {
            "plain" => PkceMethod::Plain,
            _ => PkceMethod::S256,
        },
        _ => PkceMethod::S256,
    };
    if pkce_enabled {
        oidc.pkce = Some(method);
    } else if let Some(v) = s.get("oidc.pkce.method")
        && method != PkceMethod::S256
    {
        // Headscale's example keeps `method: S256` beside `enabled: false`;
        // only a method chosen in vain is worth a word.
        warnings.push(v.warning("has no effect while oidc.pkce.enabled is false"));
    }
    if oidc.client_secret.is_empty() && oidc.pkce.is_none() {
        return Err(issuer_setting.error(
            "needs oidc.client_secret or oidc.client_secret_path (or, for a public client, oidc.pkce.enabled: true)",
        ));
    }
    Ok(Some(oidc))
}

/// `oidc.extra_params`: a mapping of single values.
fn extra_params(v: &Setting) -> Result<BTreeMap<String, String>, ConfigError> {
    let map = match &v.value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::Mapping(map) => map,
        other => {
            return Err(v.error(format!(
                "expected a mapping of parameter to value (e.g. domain_hint: example.com), found {}",
                describe(other)
            )));
        }
    };
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let name = scalar_text(name).unwrap_or_default();
        let value = scalar_text(value).ok_or_else(|| {
            v.error(format!(
                "{name}: expected a single value, found {}",
                describe(value)
            ))
        })?;
        if name.trim().is_empty() {
            return Err(v.error("a parameter name is empty"));
        }
        out.insert(name.trim().to_owned(), value);
    }
    Ok(out)
}

/// Reads the secret file; `$VAR` and `${VAR}` are expanded from the environment
/// first (systemd's `${CREDENTIALS_DIRECTORY}`), as Headscale does.
fn read_secret(v: &Setting, path: &str) -> Result<String, ConfigError> {
    let expanded = expand_env(path.trim());
    let secret = std::fs::read_to_string(Path::new(&expanded))
        .map_err(|e| v.error(format!("cannot read {expanded}: {e}")))?;
    let secret = secret.trim().to_owned();
    if secret.is_empty() {
        return Err(v.error(format!(
            "{expanded} is empty; it should hold the client secret"
        )));
    }
    Ok(secret)
}

/// `$NAME` and `${NAME}` replaced by the variable's value (empty when unset).
pub(crate) fn expand_env(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, next) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], &braced[end + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
        } else {
            out.push_str(&std::env::var(name).unwrap_or_default());
            rest = next;
        }
    }
    out.push_str(rest);
    out
}
