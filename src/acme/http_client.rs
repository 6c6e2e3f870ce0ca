//! The ACME client's HTTP: instant-acme's requests sent with headway's reqwest
//! (rustls on ring, the system's roots), so no second HTTP and TLS stack is built.

use bytes::Bytes;
use http_body_util::BodyExt;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// No ACME request may take longer than this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// ACME responses are small JSON documents and certificate chains.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

pub struct ReqwestClient(reqwest::Client);

impl ReqwestClient {
    pub fn new() -> Result<ReqwestClient, reqwest::Error> {
        // reqwest is built without a crypto provider; ring is headway's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("headway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(ReqwestClient)
    }
}

type Failure = instant_acme::Error;

impl HttpClient for ReqwestClient {
    fn request(
        &self,
        request: axum::http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, Failure>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let url = parts.uri.to_string();
            let mut response = client
                .request(parts.method, &url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| Failure::Other(Box::new(e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            let mut body = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| Failure::Other(Box::new(e)))?
            {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(Failure::Str("the ACME response is over 1 MiB"));
                }
                body.extend_from_slice(&chunk);
            }
            let mut builder = axum::http::Response::builder().status(status);
            if let Some(map) = builder.headers_mut() {
                *map = headers;
            }
            let response = builder.body(()).map_err(|e| Failure::Other(Box::new(e)))?;
            let (parts, ()) = response.into_parts();
            Ok(BytesResponse {
                parts,
                body: Box::new(Bytes::from(body)),
            })
        })
    }
}
