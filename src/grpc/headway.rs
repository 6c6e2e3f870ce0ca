//! `headway.v1.HeadwayService`: headway's own admin calls, served beside
//! `headscale.v1` (the web UI's one-time sign-in links).

use crate::state::State;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Generated protobuf types and the tonic client and server for `headway.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("headway.v1");
}

use pb::headway_service_server::{HeadwayService, HeadwayServiceServer};

/// The service implementation; cheap to clone.
#[derive(Clone, Debug)]
pub struct HeadwayApi {
    state: Arc<State>,
    /// `web_ui.enabled`: sign-in links are issued only when the UI is served.
    web_ui: bool,
}

impl HeadwayApi {
    pub fn new(state: Arc<State>, web_ui: bool) -> Self {
        Self { state, web_ui }
    }

    pub fn into_service(self) -> HeadwayServiceServer<HeadwayApi> {
        HeadwayServiceServer::new(self).max_decoding_message_size(64 << 10)
    }
}

/// The web UI path a sign-in link opens.
pub fn login_link_url(server_url: &str, secret: &str) -> String {
    format!("{}/admin/login/{secret}", server_url.trim_end_matches('/'))
}

#[tonic::async_trait]
impl HeadwayService for HeadwayApi {
    async fn create_login_link(
        &self,
        request: Request<pb::CreateLoginLinkRequest>,
    ) -> Result<Response<pb::CreateLoginLinkResponse>, Status> {
        if !self.web_ui {
            return Err(Status::failed_precondition(
                "the web UI is off (web_ui.enabled: false): no sign-in link to give",
            ));
        }
        let seconds = request.into_inner().valid_seconds;
        let lifetime = (seconds > 0).then(|| Duration::from_secs(seconds.into()));
        let opened = self
            .state
            .create_login_link(lifetime)
            .await
            .map_err(super::convert::status)?;
        tracing::info!(expires = %opened.session.expires_at, "web UI sign-in link issued");
        Ok(Response::new(pb::CreateLoginLinkResponse {
            url: login_link_url(&self.state.settings().server_url, &opened.secret),
            expiration: Some(super::convert::timestamp(opened.session.expires_at)),
        }))
    }
}
