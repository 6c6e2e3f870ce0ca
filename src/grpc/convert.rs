//! The only place where `headscale.v1` protobuf messages meet domain types.

use super::pb;
use crate::state::{self, NodeView, RouteView};
use crate::types::{ApiKey, PreAuthKey, RegisterMethod, Timestamp, User};
use tonic::Status;

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A protobuf timestamp as a UTC time; out-of-range values are a clear error.
pub fn from_timestamp(field: &str, ts: &prost_types::Timestamp) -> Result<Timestamp, Status> {
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| chrono::DateTime::from_timestamp(ts.seconds, nanos))
        .ok_or_else(|| Status::invalid_argument(format!("{field} is not a valid timestamp")))
}

pub fn user(u: &User) -> pb::User {
    pb::User {
        id: u.id.0,
        name: u.name.to_string(),
        created_at: Some(timestamp(u.created_at)),
        display_name: u.display_name.clone(),
        email: u.email.clone(),
        provider_id: u.provider_id.clone(),
        provider: u.provider.clone(),
        profile_pic_url: u.profile_pic_url.clone(),
    }
}

/// `key_text` is the full secret right after creation; listings show the masked form.
pub fn preauth_key(k: &PreAuthKey, owner: Option<&User>, key_text: Option<&str>) -> pb::PreAuthKey {
    pb::PreAuthKey {
        user: owner.map(user),
        id: k.id.0,
        key: key_text.map_or_else(|| k.masked(), str::to_owned),
        reusable: k.reusable,
        ephemeral: k.ephemeral,
        used: k.used,
        expiration: k.expiration.map(timestamp),
        created_at: Some(timestamp(k.created_at)),
        acl_tags: k.tags.clone(),
    }
}

pub fn api_key(k: &ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.0,
        prefix: k.masked(),
        expiration: k.expiration.map(timestamp),
        created_at: Some(timestamp(k.created_at)),
        last_seen: k.last_seen.map(timestamp),
    }
}

fn register_method(m: RegisterMethod) -> pb::RegisterMethod {
    match m {
        RegisterMethod::Unspecified => pb::RegisterMethod::Unspecified,
        RegisterMethod::AuthKey => pb::RegisterMethod::AuthKey,
        RegisterMethod::Cli => pb::RegisterMethod::Cli,
        RegisterMethod::Oidc => pb::RegisterMethod::Oidc,
    }
}

fn strings<T: ToString>(items: impl IntoIterator<Item = T>) -> Vec<String> {
    items.into_iter().map(|i| i.to_string()).collect()
}

pub fn node(v: &NodeView) -> pb::Node {
    let n = &v.node;
    pb::Node {
        id: n.id.0,
        machine_key: n.machine_key.to_string(),
        node_key: n.node_key.to_string(),
        disco_key: n.disco_key.to_string(),
        ip_addresses: strings(n.ip_addresses()),
        name: n.hostname.clone(),
        user: v.user.as_ref().map(user),
        // A connected node is being seen now, as Headscale reports it; the stored
        // time is when its last session ended.
        last_seen: if v.online {
            Some(timestamp(chrono::Utc::now()))
        } else {
            n.last_seen.map(timestamp)
        },
        expiry: n.expiry.map(timestamp),
        pre_auth_key: v
            .auth_key
            .as_ref()
            .map(|k| preauth_key(k, v.auth_key_user.as_ref(), None)),
        created_at: Some(timestamp(n.created_at)),
        register_method: register_method(n.register_method).into(),
        given_name: n.given_name.to_string(),
        online: v.online,
        approved_routes: strings(v.approved_routes()),
        available_routes: strings(v.advertised_routes()),
        // What the node serves, as Headscale lists it: the subnet routes it is
        // primary for, then its approved exit routes.
        subnet_routes: strings(
            v.primary_routes.iter().copied().chain(
                v.approved_routes()
                    .into_iter()
                    .filter(|r| r.prefix_len() == 0),
            ),
        ),
        tags: n.tags.clone(),
    }
}

/// A node as `ListNodes` shows it: a tagged node under Headscale's pseudo-user
/// `tagged-devices`, as `nodes list` prints it.
pub fn listed_node(v: &NodeView) -> pb::Node {
    let mut out = node(v);
    if out.user.is_none() && !v.node.tags.is_empty() {
        out.user = Some(pb::User {
            id: TAGGED_DEVICES_ID,
            name: "tagged-devices".into(),
            display_name: "Tagged Devices".into(),
            ..pb::User::default()
        });
    }
    out
}

/// The id Headscale gives its pseudo-user of tagged nodes (clients see the same).
const TAGGED_DEVICES_ID: u64 = 2_147_455_555;

pub fn route(r: &RouteView) -> pb::Route {
    pb::Route {
        id: r.route.id.0,
        node: Some(node(&r.node)),
        prefix: r.route.prefix.to_string(),
        advertised: r.route.advertised,
        enabled: r.route.approved,
        is_primary: r.is_primary,
        created_at: Some(timestamp(r.route.created_at)),
        updated_at: Some(timestamp(r.route.updated_at)),
        deleted_at: None,
    }
}

/// Maps a state error to a gRPC status; internal causes are logged, never sent.
pub fn status(err: state::Error) -> Status {
    use state::Error as E;
    if let Some(why) = err.storage_unavailable() {
        tracing::error!("admin request refused: {why}");
        return Status::unavailable(why);
    }
    match err {
        E::NotFound(m) => Status::not_found(m),
        E::AlreadyExists(m) => Status::already_exists(m),
        E::InvalidArgument(m) => Status::invalid_argument(m),
        E::FailedPrecondition(m) => Status::failed_precondition(m),
        E::ResourceExhausted(m) => Status::resource_exhausted(m),
        E::Unauthenticated(m) => Status::unauthenticated(m),
        E::PermissionDenied(m) => Status::permission_denied(m),
        E::Unimplemented(m) => Status::unimplemented(m),
        E::Internal(cause) => {
            tracing::error!(error = %cause, "admin request failed");
            Status::internal("internal error; the server log has the details")
        }
    }
}
