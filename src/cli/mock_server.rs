//! Whole command runs against a stand-in gRPC server on a Unix socket (and once over
//! TCP with an API key): argv → compat → clap → RPCs → what the admin reads.
//! The stand-in answers from fixed data and records every request it gets.

use super::{ExitCode, Loaded, drive};
use crate::config::Config;
use crate::grpc::pb;
use crate::grpc::pb::headscale_service_server::{HeadscaleService, HeadscaleServiceServer};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

type Answer<T> = Result<Response<T>, Status>;

// 2024-01-02 03:04:05 UTC
const T0: i64 = 1_704_164_645;

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

fn users() -> Vec<pb::User> {
    vec![
        pb::User {
            id: 1,
            name: "default".into(),
            created_at: ts(T0),
            ..Default::default()
        },
        pb::User {
            id: 2,
            name: "bob".into(),
            created_at: ts(T0 + 60),
            ..Default::default()
        },
    ]
}

fn router() -> pb::Node {
    pb::Node {
        id: 6,
        name: "router".into(),
        given_name: "router".into(),
        user: users().into_iter().next(),
        ip_addresses: vec!["100.64.0.6".into()],
        approved_routes: vec!["10.0.0.0/8".into()],
        available_routes: vec!["10.0.0.0/8".into(), "192.168.100.0/24".into()],
        ..Default::default()
    }
}

#[derive(Clone, Default)]
struct Mock {
    /// Every request, as `Debug` text.
    calls: Arc<Mutex<Vec<String>>>,
}

impl Mock {
    fn record(&self, request: &impl std::fmt::Debug) {
        self.calls.lock().unwrap().push(format!("{request:?}"));
    }
}

/// Implements the service: the listed methods by hand, every other one as UNIMPLEMENTED.
macro_rules! service {
    ({ $($implemented:tt)* } $($name:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl HeadscaleService for Mock {
            $($implemented)*
            $(
                async fn $name(&self, request: Request<pb::$request>) -> Answer<pb::$response> {
                    self.record(request.get_ref());
                    Err(Status::unimplemented(concat!(stringify!($name), " is not in the mock")))
                }
            )*
        }
    };
}

service! {
    {
        async fn list_users(&self, request: Request<pb::ListUsersRequest>) -> Answer<pb::ListUsersResponse> {
            let filter = request.into_inner();
            self.record(&filter);
            let users = users()
                .into_iter()
                .filter(|u| filter.id == 0 || u.id == filter.id)
                .filter(|u| filter.name.is_empty() || u.name == filter.name)
                .collect();
            Ok(Response::new(pb::ListUsersResponse { users }))
        }

        async fn create_pre_auth_key(
            &self,
            request: Request<pb::CreatePreAuthKeyRequest>,
        ) -> Answer<pb::CreatePreAuthKeyResponse> {
            let request = request.into_inner();
            self.record(&request);
            let key = pb::PreAuthKey {
                user: users().into_iter().find(|u| u.id == request.user),
                id: 9,
                key: "hskey-auth-AAAAAAAAAAAA-secret".into(),
                reusable: request.reusable,
                expiration: request.expiration,
                acl_tags: request.acl_tags,
                ..Default::default()
            };
            Ok(Response::new(pb::CreatePreAuthKeyResponse { pre_auth_key: Some(key) }))
        }

        async fn list_pre_auth_keys(
            &self,
            request: Request<pb::ListPreAuthKeysRequest>,
        ) -> Answer<pb::ListPreAuthKeysResponse> {
            self.record(request.get_ref());
            let keys = vec![
                pb::PreAuthKey {
                    user: users().into_iter().next(),
                    id: 1,
                    key: "hskey-auth-AAAAAAAAAAAA-***".into(),
                    created_at: ts(T0),
                    ..Default::default()
                },
                pb::PreAuthKey {
                    user: users().into_iter().nth(1),
                    id: 2,
                    key: "hskey-auth-BBBBBBBBBBBB-***".into(),
                    created_at: ts(T0),
                    ..Default::default()
                },
            ];
            Ok(Response::new(pb::ListPreAuthKeysResponse { pre_auth_keys: keys }))
        }

        async fn expire_pre_auth_key(
            &self,
            request: Request<pb::ExpirePreAuthKeyRequest>,
        ) -> Answer<pb::ExpirePreAuthKeyResponse> {
            self.record(request.get_ref());
            Ok(Response::new(pb::ExpirePreAuthKeyResponse {}))
        }

        async fn get_node(&self, request: Request<pb::GetNodeRequest>) -> Answer<pb::GetNodeResponse> {
            self.record(request.get_ref());
            if request.get_ref().node_id != 6 {
                return Err(Status::not_found("node not found"));
            }
            Ok(Response::new(pb::GetNodeResponse { node: Some(router()) }))
        }

        async fn set_approved_routes(
            &self,
            request: Request<pb::SetApprovedRoutesRequest>,
        ) -> Answer<pb::SetApprovedRoutesResponse> {
            let request = request.into_inner();
            self.record(&request);
            let node = pb::Node { approved_routes: request.routes, ..router() };
            Ok(Response::new(pb::SetApprovedRoutesResponse { node: Some(node) }))
        }

        async fn register_node(
            &self,
            request: Request<pb::RegisterNodeRequest>,
        ) -> Answer<pb::RegisterNodeResponse> {
            self.record(request.get_ref());
            let node = pb::Node { id: 7, given_name: "laptop".into(), ..Default::default() };
            Ok(Response::new(pb::RegisterNodeResponse { node: Some(node) }))
        }

        async fn list_nodes(&self, request: Request<pb::ListNodesRequest>) -> Answer<pb::ListNodesResponse> {
            self.record(request.get_ref());
            Ok(Response::new(pb::ListNodesResponse { nodes: vec![router()] }))
        }

        async fn enable_route(&self, request: Request<pb::EnableRouteRequest>) -> Answer<pb::EnableRouteResponse> {
            self.record(request.get_ref());
            Ok(Response::new(pb::EnableRouteResponse {}))
        }

        async fn get_policy(&self, request: Request<pb::GetPolicyRequest>) -> Answer<pb::GetPolicyResponse> {
            self.record(request.get_ref());
            Err(Status::unimplemented("policy.mode is file: edit /etc/headway/acl.hujson"))
        }

        async fn health(&self, request: Request<pb::HealthRequest>) -> Answer<pb::HealthResponse> {
            self.record(request.get_ref());
            Ok(Response::new(pb::HealthResponse { database_connectivity: true }))
        }
    }
    create_user(CreateUserRequest) -> CreateUserResponse;
    rename_user(RenameUserRequest) -> RenameUserResponse;
    delete_user(DeleteUserRequest) -> DeleteUserResponse;
    delete_pre_auth_key(DeletePreAuthKeyRequest) -> DeletePreAuthKeyResponse;
    debug_create_node(DebugCreateNodeRequest) -> DebugCreateNodeResponse;
    set_tags(SetTagsRequest) -> SetTagsResponse;
    delete_node(DeleteNodeRequest) -> DeleteNodeResponse;
    expire_node(ExpireNodeRequest) -> ExpireNodeResponse;
    rename_node(RenameNodeRequest) -> RenameNodeResponse;
    backfill_node_i_ps(BackfillNodeIPsRequest) -> BackfillNodeIPsResponse;
    auth_register(AuthRegisterRequest) -> AuthRegisterResponse;
    auth_approve(AuthApproveRequest) -> AuthApproveResponse;
    auth_reject(AuthRejectRequest) -> AuthRejectResponse;
    create_api_key(CreateApiKeyRequest) -> CreateApiKeyResponse;
    expire_api_key(ExpireApiKeyRequest) -> ExpireApiKeyResponse;
    list_api_keys(ListApiKeysRequest) -> ListApiKeysResponse;
    delete_api_key(DeleteApiKeyRequest) -> DeleteApiKeyResponse;
    set_policy(SetPolicyRequest) -> SetPolicyResponse;
    check_policy(CheckPolicyRequest) -> CheckPolicyResponse;
    get_routes(GetRoutesRequest) -> GetRoutesResponse;
    disable_route(DisableRouteRequest) -> DisableRouteResponse;
    get_node_routes(GetNodeRoutesRequest) -> GetNodeRoutesResponse;
    delete_route(DeleteRouteRequest) -> DeleteRouteResponse;
}

/// stdout of a run, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A running stand-in server and a config pointing at it.
struct Harness {
    /// Keeps the server running for the harness's lifetime.
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    config: Config,
    mock: Mock,
}

struct Run {
    code: ExitCode,
    stdout: String,
    stderr: String,
}

impl Harness {
    fn on_socket() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("headway.sock");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mock = Mock::default();
        let service = HeadscaleServiceServer::new(mock.clone());
        let listener = runtime.block_on(async { tokio::net::UnixListener::bind(&socket) });
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener.unwrap());
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming),
        );
        let config = Config {
            unix_socket: socket,
            ..Config::default()
        };
        Harness {
            _runtime: runtime,
            _dir: dir,
            config,
            mock,
        }
    }

    /// Runs one command line (split on spaces) as the binary would.
    fn run(&self, line: &str) -> Run {
        let argv: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let config = self.config.clone();
        let load = move |_: Option<&std::path::Path>| {
            Ok(Loaded {
                config: config.clone(),
                path: None,
                warnings: Vec::new(),
            })
        };
        let stdout = Captured::default();
        let mut stderr = Vec::new();
        let code = drive(&argv, &load, Box::new(stdout.clone()), &mut stderr);
        let stdout = String::from_utf8(stdout.0.lock().unwrap().clone()).unwrap();
        Run {
            code,
            stdout,
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.mock.calls.lock().unwrap().clone()
    }
}

#[test]
fn namespaces_list_prints_the_users_table_with_a_note() {
    let h = Harness::on_socket();
    let run = h.run("headway namespaces list");
    assert_eq!(run.code, ExitCode::SUCCESS, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "\
ID | Name    | Username | Email | Created
1  | default | default  |       | 2024-01-02 03:04:05
2  | bob     | bob      |       | 2024-01-02 03:05:05
"
    );
    assert_eq!(
        run.stderr,
        "note: \"namespaces\" is the old name of \"users\"; running \"headway users list\"\n"
    );
}

#[test]
fn old_preauthkey_create_resolves_the_user_name_to_its_id() {
    let h = Harness::on_socket();
    let run = h.run("headway preauthkeys create -e 24h -n default");
    assert_eq!(run.code, ExitCode::SUCCESS, "{}", run.stderr);
    assert_eq!(run.stdout, "hskey-auth-AAAAAAAAAAAA-secret\n");
    let create = h
        .calls()
        .into_iter()
        .find(|c| c.starts_with("CreatePreAuthKeyRequest"))
        .unwrap();
    assert!(create.contains("user: 1,"), "{create}");

    let json = h.run("headway -o json preauthkeys create --user bob --reusable -e 24h");
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(value["user"]["name"], "bob");
    assert_eq!(value["reusable"], true);
    assert!(
        value.get("ephemeral").is_none(),
        "false is omitted: {value}"
    );
    let expires = value["expiration"]["seconds"].as_i64().unwrap();
    let want = chrono::Utc::now().timestamp() + 24 * 3600;
    assert!((expires - want).abs() < 60, "{expires} vs {want}");
}

#[test]
fn unknown_user_is_a_clear_error() {
    let h = Harness::on_socket();
    let run = h.run("headway preauthkeys create --user carol");
    assert_eq!(run.code, ExitCode::FAILURE);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "error: user \"carol\" not found (headway users list shows the users)\n"
    );
}

#[test]
fn register_sends_the_user_name_and_the_key_as_typed() {
    let h = Harness::on_socket();
    let run = h.run("headscale -n 1 nodes register --key nodekey:abcd");
    assert_eq!(run.code, ExitCode::SUCCESS, "{}", run.stderr);
    assert_eq!(run.stdout, "Node laptop registered\n");
    assert!(
        h.calls()
            .contains(&"RegisterNodeRequest { user: \"default\", key: \"nodekey:abcd\" }".into()),
        "{:?}",
        h.calls()
    );
}

#[test]
fn oldest_routes_enable_adds_prefixes_to_the_approved_ones() {
    let h = Harness::on_socket();
    let run = h.run("headway routes enable -i=6 -r=192.168.100.0/24");
    assert_eq!(run.code, ExitCode::SUCCESS, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "Approved routes of node 6: 10.0.0.0/8, 192.168.100.0/24\n"
    );
    assert!(h.calls().contains(
        &"SetApprovedRoutesRequest { node_id: 6, routes: [\"10.0.0.0/8\", \"192.168.100.0/24\"] }"
            .into()
    ));
    assert!(
        run.stderr
            .starts_with("note: \"routes enable -i N -r PREFIX\""),
        "{}",
        run.stderr
    );

    let all = h.run("headway routes enable -i 6 -a");
    assert_eq!(all.code, ExitCode::SUCCESS, "{}", all.stderr);
    let disable = h.run("headway routes disable -i 6 -r 10.0.0.0/8");
    assert_eq!(disable.stdout, "Node 6 has no approved routes now\n");
}

#[test]
fn routes_by_id_use_the_legacy_rpc() {
    let h = Harness::on_socket();
    let run = h.run("headway routes enable -r 1");
    assert_eq!(run.code, ExitCode::SUCCESS, "{}", run.stderr);
    assert_eq!(run.stdout, "Route 1 enabled\n");
    assert!(
        h.calls()
            .contains(&"EnableRouteRequest { route_id: 1 }".into())
    );
}

#[test]
fn old_preauthkey_expire_finds_the_key_by_prefix() {
    let h = Harness::on_socket();
    let key = format!("hskey-auth-BBBBBBBBBBBB-{}", "s".repeat(64));
    let run = h.run(&format!("headway preauthkeys expire -n bob {key}"));
    assert_eq!(run.code, ExitCode::SUCCESS, "{}", run.stderr);
    assert_eq!(run.stdout, "Key expired\n");
    assert!(
        h.calls()
            .contains(&"ExpirePreAuthKeyRequest { id: 2 }".into())
    );
}

#[test]
fn nodes_as_json_use_headscale_field_names() {
    let h = Harness::on_socket();
    let run = h.run("headway nodes list -o json");
    assert_eq!(run.code, ExitCode::SUCCESS, "{}", run.stderr);
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let node = &value[0];
    assert_eq!(node["given_name"], "router");
    assert_eq!(node["approved_routes"][0], "10.0.0.0/8");
    assert_eq!(node["user"]["name"], "default");
    assert!(node.get("online").is_none(), "false is omitted: {node}");
    assert!(
        run.stdout.starts_with("[\n\t{\n\t\t\"id\": 6,"),
        "{}",
        run.stdout
    );
}

#[test]
fn server_refusals_print_the_server_message() {
    let h = Harness::on_socket();
    let run = h.run("headway policy get");
    assert_eq!(run.code, ExitCode::FAILURE);
    assert_eq!(
        run.stderr,
        "error: policy.mode is file: edit /etc/headway/acl.hujson\n"
    );
    let health = h.run("headway health");
    assert_eq!(health.code, ExitCode::SUCCESS, "{}", health.stderr);
}

#[test]
fn remote_address_sends_the_api_key() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen_by_server = seen.clone();
    let service =
        HeadscaleServiceServer::with_interceptor(Mock::default(), move |req: Request<()>| {
            let auth = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            seen_by_server.lock().unwrap().push(auth);
            Ok(req)
        });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    let mut h = Harness::on_socket();
    h.config.cli.address = Some(address.to_string());
    h.config.cli.api_key = Some("hskey-api-PREFIXPREFIX-secret".into());
    h.config.cli.insecure = true;
    let run = h.run("headway users list");
    assert_eq!(run.code, ExitCode::SUCCESS, "{}", run.stderr);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["Bearer hskey-api-PREFIXPREFIX-secret"]
    );
}
