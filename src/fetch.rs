//! Fetching documents from other servers (`derp.urls`, the OIDC provider): the
//! reqwest client headway builds (rustls on ring, a timeout, its user agent), reads
//! capped at a size, and errors with their causes on one line.

use std::time::Duration;

/// How a client treats redirects.
#[derive(Clone, Copy, Debug)]
pub enum Redirects {
    /// Up to five (a DERP map moved elsewhere).
    Follow,
    /// None: an API's answer is its own (the OIDC provider).
    Refuse,
}

/// A client whose every request ends within `timeout`.
pub fn client(timeout: Duration, redirects: Redirects) -> Result<reqwest::Client, String> {
    // reqwest is built without a crypto provider; ring is the one the rest of headway
    // uses. Installing fails only when a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(match redirects {
            Redirects::Follow => reqwest::redirect::Policy::limited(5),
            Redirects::Refuse => reqwest::redirect::Policy::none(),
        })
        .user_agent(concat!("headway/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|err| error_chain(&err))
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Longer than the cap (by its `Content-Length`, or as it arrived).
    TooLarge,
    /// The connection failed; its error on one line.
    Failed(String),
}

/// The whole body, refused once it would pass `cap` bytes.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| ReadError::Failed(error_chain(&err.without_url())))?
    {
        if body.len() + chunk.len() > cap {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes on one line (reqwest's own message alone says little).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
