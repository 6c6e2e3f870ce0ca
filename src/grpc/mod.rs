//! The `headscale.v1` admin API: a thin tonic adapter over `state`.
//!
//! Each RPC validates its request, calls one `State` method, publishes the
//! returned `Change`, and converts the answer in `convert`. Knows nothing of
//! the database or the control protocol.

pub mod auth;
pub mod authority;
pub mod convert;
pub mod headway;
pub mod tls;

/// Generated protobuf types and the tonic client and server for `headscale.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("headscale.v1");
}

use crate::state::{self, Change, NodeView, State, UserFilter};
use crate::types::{ApiKeyId, NodeId, PreAuthKeyId, RouteId, UserId};
use pb::headscale_service_server::{HeadscaleService, HeadscaleServiceServer};
use std::sync::Arc;
use tonic::{Request, Response, Status};

type Reply<T> = Result<Response<T>, Status>;

/// The service's name, the first part of every call's path.
pub const SERVICE: &str = "headscale.v1.HeadscaleService";

/// Every method of [`SERVICE`] (`proto/headscale/v1/headscale.proto`, checked by a
/// test): the only values the per-method metrics label calls with.
pub const METHODS: &[&str] = &[
    "CreateUser",
    "RenameUser",
    "DeleteUser",
    "ListUsers",
    "CreatePreAuthKey",
    "ExpirePreAuthKey",
    "DeletePreAuthKey",
    "ListPreAuthKeys",
    "DebugCreateNode",
    "GetNode",
    "SetTags",
    "SetApprovedRoutes",
    "RegisterNode",
    "DeleteNode",
    "ExpireNode",
    "RenameNode",
    "ListNodes",
    "BackfillNodeIPs",
    "AuthRegister",
    "AuthApprove",
    "AuthReject",
    "CreateApiKey",
    "ExpireApiKey",
    "ListApiKeys",
    "DeleteApiKey",
    "GetPolicy",
    "SetPolicy",
    "CheckPolicy",
    "GetRoutes",
    "EnableRoute",
    "DisableRoute",
    "GetNodeRoutes",
    "DeleteRoute",
    "Health",
];

/// The layer that times every call by method (`headway_grpc_duration_seconds`).
pub fn metrics_layer(metrics: crate::metrics::GrpcMetrics) -> crate::metrics::record::GrpcLayer {
    crate::metrics::record::GrpcLayer::new(metrics, SERVICE, METHODS)
}

/// The service implementation; cheap to clone.
#[derive(Clone, Debug)]
pub struct AdminApi {
    state: Arc<State>,
}

impl AdminApi {
    pub fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// The tonic service, ready to add to a server.
    pub fn into_service(self) -> HeadscaleServiceServer<AdminApi> {
        // Headscale CLIs send small requests; 4 MiB is generous and bounds memory.
        HeadscaleServiceServer::new(self).max_decoding_message_size(4 << 20)
    }

    fn publish(&self, change: Change) {
        self.state.notifier().publish(change);
    }

    /// Publishes what a node mutation changed and converts the node for the reply.
    fn node_changed(
        &self,
        result: state::Result<(NodeView, Change)>,
    ) -> Result<Option<pb::Node>, Status> {
        let (view, change) = result.map_err(convert::status)?;
        self.publish(change);
        Ok(Some(convert::node(&view)))
    }

    /// Publishes what a mutation without a reply body changed.
    fn changed(&self, result: state::Result<Change>) -> Result<(), Status> {
        self.publish(result.map_err(convert::status)?);
        Ok(())
    }
}

fn required(field: &str, id: u64) -> Result<u64, Status> {
    if id == 0 {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(id)
    }
}

#[tonic::async_trait]
impl HeadscaleService for AdminApi {
    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Reply<pb::CreateUserResponse> {
        let r = req.into_inner();
        let (user, change) = self
            .state
            .create_user(&r.name, &r.display_name, &r.email, &r.picture_url)
            .await
            .map_err(convert::status)?;
        self.publish(change);
        Ok(Response::new(pb::CreateUserResponse {
            user: Some(convert::user(&user)),
        }))
    }

    async fn rename_user(
        &self,
        req: Request<pb::RenameUserRequest>,
    ) -> Reply<pb::RenameUserResponse> {
        let r = req.into_inner();
        let id = UserId(required("old_id", r.old_id)?);
        let (user, change) = self
            .state
            .rename_user(id, &r.new_name)
            .await
            .map_err(convert::status)?;
        self.publish(change);
        Ok(Response::new(pb::RenameUserResponse {
            user: Some(convert::user(&user)),
        }))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Reply<pb::DeleteUserResponse> {
        let id = UserId(required("id", req.into_inner().id)?);
        self.changed(self.state.delete_user(id).await)?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Reply<pb::ListUsersResponse> {
        let r = req.into_inner();
        let filter = UserFilter {
            id: (r.id != 0).then_some(UserId(r.id)),
            name: (!r.name.is_empty()).then_some(r.name),
            email: (!r.email.is_empty()).then_some(r.email),
        };
        let users = self
            .state
            .list_users(&filter)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.iter().map(convert::user).collect(),
        }))
    }

    async fn create_pre_auth_key(
        &self,
        req: Request<pb::CreatePreAuthKeyRequest>,
    ) -> Reply<pb::CreatePreAuthKeyResponse> {
        let r = req.into_inner();
        let user = (r.user != 0).then_some(UserId(r.user));
        let expiration = r
            .expiration
            .as_ref()
            .map(|t| convert::from_timestamp("expiration", t))
            .transpose()?;
        let created = self
            .state
            .create_preauth_key(user, r.reusable, r.ephemeral, expiration, &r.acl_tags)
            .await
            .map_err(convert::status)?;
        let owner = match user {
            Some(id) => Some(self.state.get_user(id).await.map_err(convert::status)?),
            None => None,
        };
        Ok(Response::new(pb::CreatePreAuthKeyResponse {
            pre_auth_key: Some(convert::preauth_key(
                &created.record,
                owner.as_ref(),
                Some(&created.secret),
            )),
        }))
    }

    async fn expire_pre_auth_key(
        &self,
        req: Request<pb::ExpirePreAuthKeyRequest>,
    ) -> Reply<pb::ExpirePreAuthKeyResponse> {
        let id = PreAuthKeyId(required("id", req.into_inner().id)?);
        self.state
            .expire_preauth_key(id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ExpirePreAuthKeyResponse {}))
    }

    async fn delete_pre_auth_key(
        &self,
        req: Request<pb::DeletePreAuthKeyRequest>,
    ) -> Reply<pb::DeletePreAuthKeyResponse> {
        let id = PreAuthKeyId(required("id", req.into_inner().id)?);
        self.state
            .delete_preauth_key(id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::DeletePreAuthKeyResponse {}))
    }

    async fn list_pre_auth_keys(
        &self,
        _req: Request<pb::ListPreAuthKeysRequest>,
    ) -> Reply<pb::ListPreAuthKeysResponse> {
        let keys = self
            .state
            .list_preauth_keys()
            .await
            .map_err(convert::status)?;
        let users = self
            .state
            .list_users(&UserFilter::default())
            .await
            .map_err(convert::status)?;
        let owner = |id| users.iter().find(|u| Some(u.id) == id);
        Ok(Response::new(pb::ListPreAuthKeysResponse {
            pre_auth_keys: keys
                .iter()
                .map(|k| convert::preauth_key(k, owner(k.user_id), None))
                .collect(),
        }))
    }

    async fn debug_create_node(
        &self,
        req: Request<pb::DebugCreateNodeRequest>,
    ) -> Reply<pb::DebugCreateNodeResponse> {
        let r = req.into_inner();
        let mut routes = Vec::new();
        for text in &r.routes {
            routes.push(text.trim().parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "{text:?} is not an IP prefix (expected e.g. 10.0.0.0/24)"
                ))
            })?);
        }
        let reg = self
            .state
            .begin_debug_registration(&r.key, &r.user, &r.name, routes)
            .await
            .map_err(convert::status)?;
        let user = self
            .state
            .find_user(&r.user)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::DebugCreateNodeResponse {
            node: Some(pb::Node {
                machine_key: reg.machine_key.to_string(),
                node_key: reg.node_key.to_string(),
                name: reg.hostname.clone(),
                given_name: crate::types::GivenName::sanitize(&reg.hostname).to_string(),
                user: Some(convert::user(&user)),
                available_routes: reg
                    .advertised_routes
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                ..pb::Node::default()
            }),
        }))
    }

    async fn get_node(&self, req: Request<pb::GetNodeRequest>) -> Reply<pb::GetNodeResponse> {
        let id = NodeId(required("node_id", req.into_inner().node_id)?);
        let view = self.state.node_view(id).await.map_err(convert::status)?;
        Ok(Response::new(pb::GetNodeResponse {
            node: Some(convert::node(&view)),
        }))
    }

    async fn set_tags(&self, req: Request<pb::SetTagsRequest>) -> Reply<pb::SetTagsResponse> {
        let r = req.into_inner();
        let id = NodeId(required("node_id", r.node_id)?);
        let node = self.node_changed(self.state.set_tags(id, &r.tags).await)?;
        Ok(Response::new(pb::SetTagsResponse { node }))
    }

    async fn set_approved_routes(
        &self,
        req: Request<pb::SetApprovedRoutesRequest>,
    ) -> Reply<pb::SetApprovedRoutesResponse> {
        let r = req.into_inner();
        let id = NodeId(required("node_id", r.node_id)?);
        let node = self.node_changed(self.state.set_approved_routes(id, &r.routes).await)?;
        Ok(Response::new(pb::SetApprovedRoutesResponse { node }))
    }

    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Reply<pb::RegisterNodeResponse> {
        let r = req.into_inner();
        let node = self.node_changed(self.state.complete_registration(&r.key, &r.user).await)?;
        Ok(Response::new(pb::RegisterNodeResponse { node }))
    }

    async fn delete_node(
        &self,
        req: Request<pb::DeleteNodeRequest>,
    ) -> Reply<pb::DeleteNodeResponse> {
        let id = NodeId(required("node_id", req.into_inner().node_id)?);
        self.changed(self.state.delete_node(id).await)?;
        Ok(Response::new(pb::DeleteNodeResponse {}))
    }

    async fn expire_node(
        &self,
        req: Request<pb::ExpireNodeRequest>,
    ) -> Reply<pb::ExpireNodeResponse> {
        let r = req.into_inner();
        let id = NodeId(required("node_id", r.node_id)?);
        let expiry = r
            .expiry
            .as_ref()
            .map(|t| convert::from_timestamp("expiry", t))
            .transpose()?;
        let node = self.node_changed(self.state.expire_node(id, expiry, r.disable_expiry).await)?;
        Ok(Response::new(pb::ExpireNodeResponse { node }))
    }

    async fn rename_node(
        &self,
        req: Request<pb::RenameNodeRequest>,
    ) -> Reply<pb::RenameNodeResponse> {
        let r = req.into_inner();
        let id = NodeId(required("node_id", r.node_id)?);
        let node = self.node_changed(self.state.rename_node(id, &r.new_name).await)?;
        Ok(Response::new(pb::RenameNodeResponse { node }))
    }

    async fn list_nodes(&self, req: Request<pb::ListNodesRequest>) -> Reply<pb::ListNodesResponse> {
        let r = req.into_inner();
        let views = self
            .state
            .list_nodes(Some(&r.user))
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ListNodesResponse {
            nodes: views.iter().map(convert::listed_node).collect(),
        }))
    }

    async fn backfill_node_i_ps(
        &self,
        req: Request<pb::BackfillNodeIPsRequest>,
    ) -> Reply<pb::BackfillNodeIPsResponse> {
        let (changes, change) = self
            .state
            .backfill_node_ips(req.into_inner().confirmed)
            .await
            .map_err(convert::status)?;
        self.publish(change);
        Ok(Response::new(pb::BackfillNodeIPsResponse { changes }))
    }

    async fn auth_register(
        &self,
        req: Request<pb::AuthRegisterRequest>,
    ) -> Reply<pb::AuthRegisterResponse> {
        let r = req.into_inner();
        let node =
            self.node_changed(self.state.complete_registration(&r.auth_id, &r.user).await)?;
        Ok(Response::new(pb::AuthRegisterResponse { node }))
    }

    async fn auth_approve(
        &self,
        req: Request<pb::AuthApproveRequest>,
    ) -> Reply<pb::AuthApproveResponse> {
        let (_, change) = self
            .state
            .approve_registration(&req.into_inner().auth_id)
            .await
            .map_err(convert::status)?;
        self.publish(change);
        Ok(Response::new(pb::AuthApproveResponse {}))
    }

    async fn auth_reject(
        &self,
        req: Request<pb::AuthRejectRequest>,
    ) -> Reply<pb::AuthRejectResponse> {
        self.state
            .reject_registration(&req.into_inner().auth_id)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::AuthRejectResponse {}))
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Reply<pb::CreateApiKeyResponse> {
        let r = req.into_inner();
        let expiration = r
            .expiration
            .as_ref()
            .map(|t| convert::from_timestamp("expiration", t))
            .transpose()?;
        let created = self
            .state
            .create_api_key(expiration)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: created.secret,
        }))
    }

    async fn expire_api_key(
        &self,
        req: Request<pb::ExpireApiKeyRequest>,
    ) -> Reply<pb::ExpireApiKeyResponse> {
        let r = req.into_inner();
        self.state
            .expire_api_key((r.id != 0).then_some(ApiKeyId(r.id)), &r.prefix)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::ExpireApiKeyResponse {}))
    }

    async fn list_api_keys(
        &self,
        _req: Request<pb::ListApiKeysRequest>,
    ) -> Reply<pb::ListApiKeysResponse> {
        let keys = self.state.list_api_keys().await.map_err(convert::status)?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.iter().map(convert::api_key).collect(),
        }))
    }

    async fn delete_api_key(
        &self,
        req: Request<pb::DeleteApiKeyRequest>,
    ) -> Reply<pb::DeleteApiKeyResponse> {
        let r = req.into_inner();
        self.state
            .delete_api_key((r.id != 0).then_some(ApiKeyId(r.id)), &r.prefix)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn get_policy(
        &self,
        _req: Request<pb::GetPolicyRequest>,
    ) -> Reply<pb::GetPolicyResponse> {
        let (policy, updated_at) = self.state.get_policy().await.map_err(convert::status)?;
        Ok(Response::new(pb::GetPolicyResponse {
            policy,
            updated_at: updated_at.map(convert::timestamp),
        }))
    }

    async fn set_policy(&self, req: Request<pb::SetPolicyRequest>) -> Reply<pb::SetPolicyResponse> {
        let text = req.into_inner().policy;
        let (loaded, change) = self
            .state
            .set_policy(&text)
            .await
            .map_err(convert::status)?;
        self.publish(change);
        tracing::info!("a new policy was set through the admin API");
        Ok(Response::new(pb::SetPolicyResponse {
            policy: loaded.text.clone(),
            updated_at: loaded.updated_at.map(convert::timestamp),
        }))
    }

    async fn check_policy(
        &self,
        req: Request<pb::CheckPolicyRequest>,
    ) -> Reply<pb::CheckPolicyResponse> {
        let text = req.into_inner().policy;
        self.state.check_policy(&text).map_err(convert::status)?;
        Ok(Response::new(pb::CheckPolicyResponse {}))
    }

    async fn get_routes(
        &self,
        _req: Request<pb::GetRoutesRequest>,
    ) -> Reply<pb::GetRoutesResponse> {
        let routes = self
            .state
            .list_routes(None)
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::GetRoutesResponse {
            routes: routes.iter().map(convert::route).collect(),
        }))
    }

    async fn enable_route(
        &self,
        req: Request<pb::EnableRouteRequest>,
    ) -> Reply<pb::EnableRouteResponse> {
        let id = RouteId(required("route_id", req.into_inner().route_id)?);
        self.changed(self.state.enable_route(id).await)?;
        Ok(Response::new(pb::EnableRouteResponse {}))
    }

    async fn disable_route(
        &self,
        req: Request<pb::DisableRouteRequest>,
    ) -> Reply<pb::DisableRouteResponse> {
        let id = RouteId(required("route_id", req.into_inner().route_id)?);
        self.changed(self.state.disable_route(id).await)?;
        Ok(Response::new(pb::DisableRouteResponse {}))
    }

    async fn get_node_routes(
        &self,
        req: Request<pb::GetNodeRoutesRequest>,
    ) -> Reply<pb::GetNodeRoutesResponse> {
        let id = NodeId(required("node_id", req.into_inner().node_id)?);
        let routes = self
            .state
            .list_routes(Some(id))
            .await
            .map_err(convert::status)?;
        Ok(Response::new(pb::GetNodeRoutesResponse {
            routes: routes.iter().map(convert::route).collect(),
        }))
    }

    async fn delete_route(
        &self,
        req: Request<pb::DeleteRouteRequest>,
    ) -> Reply<pb::DeleteRouteResponse> {
        let id = RouteId(required("route_id", req.into_inner().route_id)?);
        self.changed(self.state.delete_route(id).await)?;
        Ok(Response::new(pb::DeleteRouteResponse {}))
    }

    async fn health(&self, _req: Request<pb::HealthRequest>) -> Reply<pb::HealthResponse> {
        Ok(Response::new(pb::HealthResponse {
            database_connectivity: self.state.database_ok().await,
        }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_metrics_method_list_is_the_protos() {
        let proto = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("proto/headscale/v1/headscale.proto"),
        )
        .unwrap();
        assert!(proto.contains(&format!(
            "service {} {{",
            super::SERVICE.rsplit('.').next().unwrap()
        )));
        let declared: Vec<&str> = proto
            .lines()
            .filter_map(|line| line.trim().strip_prefix("rpc "))
            .filter_map(|rest| rest.split('(').next())
            .map(str::trim)
            .collect();
        assert_eq!(declared, super::METHODS);
    }
}
