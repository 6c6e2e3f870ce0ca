//! The composition root.

pub async fn serve(config: crate::config::Config) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!("server not built yet")
}
