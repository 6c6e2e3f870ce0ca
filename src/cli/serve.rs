//! Commands about the server itself: `serve`, `configtest`, `version`,
//! `generate private-key` and `health`.

use super::Ctx;
use super::output::{self, Format, Obj};
use crate::config::{self, LogFormat};
use crate::grpc::pb;
use std::path::Path;

/// `serve`: load the config, set up logging from `log.*`, print the config's
/// warnings through the log, and run the server until it stops.
pub fn serve(config_flag: Option<&Path>) -> anyhow::Result<()> {
    let loaded = config::load(config_flag)?;
    init_logging(&loaded.config.log);
    match &loaded.path {
        Some(path) => tracing::info!(config = %path.display(), "configuration loaded"),
        None => tracing::info!("no config file found: using embedded defaults"),
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::server::serve(loaded.config))
}

/// Installs the global tracing subscriber; `RUST_LOG` overrides `log.level`.
fn init_logging(log: &config::Log) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    // Colours only for a person at a terminal; log files and journald get plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // `try_init`: a subscriber installed earlier (tests) wins; that is not an error.
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// `configtest`: every warning, then `config OK (<file>)`; a refusal is an error (exit 1).
pub fn configtest(config_flag: Option<&Path>) -> anyhow::Result<()> {
    let loaded = config::load(config_flag)?;
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    let policy = &loaded.config.policy;
    if policy.mode == config::PolicyMode::File
        && let Some(path) = &policy.path
    {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("policy.path {}: {e}", path.display()))?;
        crate::policy::Policy::parse(&text).map_err(|e| match e {
            crate::policy::Error::Syntax(s) => {
                anyhow::anyhow!("{}:{}:{}: {}", path.display(), s.line, s.column, s.message)
            }
            other => anyhow::anyhow!("{}: {other}", path.display()),
        })?;
        println!("policy OK ({})", path.display());
    }
    println!("{}", configtest_ok(loaded.path.as_deref()));
    Ok(())
}

fn configtest_ok(path: Option<&Path>) -> String {
    match path {
        Some(path) => format!("config OK ({})", path.display()),
        None => "config OK (embedded defaults)".to_owned(),
    }
}

pub fn version(format: Format) {
    let version = env!("CARGO_PKG_VERSION");
    output::print(
        format,
        || Obj::new().str("version", version).build(),
        || format!("headway version {version}\ncompatible with: Headscale 0.29 (headscale.v1 API)"),
    );
}

pub fn generate_private_key(format: Format) {
    let key = crate::types::PrivateKey::generate().to_text();
    output::print(
        format,
        || Obj::new().str("private_key", &key).build(),
        || key.clone(),
    );
}

/// `health`: exit 0 only when the server answers and its database does too.
pub async fn health(ctx: &mut Ctx) -> anyhow::Result<()> {
    let answer = super::rpc(ctx.client.health(pb::HealthRequest {}).await)?;
    if !answer.database_connectivity {
        anyhow::bail!("the server answers, but its database does not");
    }
    ctx.print(
        || {
            Obj::new()
                .bool("database_connectivity", answer.database_connectivity)
                .build()
        },
        || "healthy: the server and its database answer".to_owned(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configtest_names_the_file_or_the_defaults() {
        assert_eq!(
            configtest_ok(Some(Path::new("/etc/headway/config.yaml"))),
            "config OK (/etc/headway/config.yaml)"
        );
        assert_eq!(configtest_ok(None), "config OK (embedded defaults)");
    }
}
