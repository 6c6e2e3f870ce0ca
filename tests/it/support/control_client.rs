//! A small TS2021 control client for tests that play simulated nodes: the
//! `/ts2021` upgrade and Noise handshake as a chosen machine, HTTP/2 inside, and
//! the JSON bodies of `/machine/register` and `/machine/map` requests. It knows
//! the wire, not what the server should answer; the tests judge that.

use super::TestServer;
use bytes::Bytes;
use headway::bench::node::{CAPVER, Target, fetch_server_key, upgrade};
use headway::types::{NodeKey, PrivateKey};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// An HTTP/2 connection inside Noise: requests on it come from its machine key.
pub type Control = SendRequest<Full<Bytes>>;

/// Where `server` listens and its Noise key, as a client learns them from `/key`.
pub async fn target(server: &TestServer) -> Target {
    let addr: SocketAddr = server.http_addr.parse().unwrap();
    Target {
        addr,
        host: server.http_addr.clone(),
        server_key: fetch_server_key(addr, &server.http_addr).await.unwrap(),
    }
}

/// A TCP connection to `to` from the loopback address `source`.
pub async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    socket.connect(to).await
}

/// HTTP/2 inside Noise as `machine`, over a new connection from `source`; fails
/// when the server is not there (or goes away during the handshake).
pub async fn try_noise_client(
    target: &Target,
    source: Ipv4Addr,
    machine: &PrivateKey,
) -> anyhow::Result<Control> {
    let tcp = connect_from(source, target.addr).await?;
    let stream = upgrade(tcp, target, machine).await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// HTTP/2 inside Noise as a new machine, over a new connection from `source`.
pub async fn noise_client(target: &Target, source: Ipv4Addr) -> Control {
    try_noise_client(target, source, &PrivateKey::generate())
        .await
        .unwrap()
}

/// `POST path` with `body` on `control`, giving up after `within`; the response
/// with its whole body, or why there is none (the server died mid-request, say).
pub async fn try_post(
    control: &mut Control,
    path: &str,
    body: String,
    within: Duration,
) -> anyhow::Result<hyper::Response<Bytes>> {
    let request = hyper::Request::post(format!("http://control{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let exchange = async {
        let response = control.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(hyper::Response::from_parts(parts, body))
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("POST {path}: no answer within {within:?}"))?
}

/// `POST path` with `body`; panics unless the server answers.
pub async fn post(control: &mut Control, path: &str, body: String) -> hyper::Response<Bytes> {
    try_post(control, path, body, Duration::from_secs(60))
        .await
        .unwrap()
}

/// A `RegisterRequest` for `node_key` with a pre-auth key, as `tailscale up
/// --authkey` sends it, announcing `routes` in its Hostinfo.
pub fn register_with_key(
    node_key: &NodeKey,
    auth_key: &str,
    hostname: &str,
    routes: &[String],
) -> String {
    serde_json::json!({
        "Version": CAPVER,
        "NodeKey": node_key.to_string(),
        "OldNodeKey": NodeKey::zero().to_string(),
        "Auth": {"AuthKey": auth_key},
        "Expiry": "0001-01-01T00:00:00Z",
        "Hostinfo": hostinfo(hostname, routes),
    })
    .to_string()
}

/// [`register_with_key`] with the hostname `eager` and no routes.
pub fn register_body(node_key: &NodeKey, auth_key: &str) -> String {
    register_with_key(node_key, auth_key, "eager", &[])
}

/// A node-key rotation with a pre-auth key (`tailscale up --force-reauth
/// --authkey …`): the machine names its previous key and logs in again with the
/// new one. Without a pre-auth key, a new node key is an interactive login.
pub fn rotate_body(old: &NodeKey, new: &NodeKey, auth_key: &str, hostname: &str) -> String {
    serde_json::json!({
        "Version": CAPVER,
        "NodeKey": new.to_string(),
        "OldNodeKey": old.to_string(),
        "Auth": {"AuthKey": auth_key},
        "Expiry": "0001-01-01T00:00:00Z",
        "Hostinfo": hostinfo(hostname, &[]),
    })
    .to_string()
}

/// `tailscale logout`: a registration whose expiry is in the past.
pub fn logout_body(node_key: &NodeKey, hostname: &str) -> String {
    serde_json::json!({
        "Version": CAPVER,
        "NodeKey": node_key.to_string(),
        "OldNodeKey": NodeKey::zero().to_string(),
        "Expiry": "2001-01-01T00:00:00Z",
        "Hostinfo": hostinfo(hostname, &[]),
    })
    .to_string()
}

/// A lite map update (`Stream:false`, `OmitPeers:true`): the node reports its
/// hostname and the routes it advertises, and gets no map back.
pub fn lite_update_body(node_key: &NodeKey, hostname: &str, routes: &[String]) -> String {
    serde_json::json!({
        "Version": CAPVER,
        "Compress": "zstd",
        "KeepAlive": true,
        "Stream": false,
        "OmitPeers": true,
        "NodeKey": node_key.to_string(),
        "Hostinfo": hostinfo(hostname, routes),
    })
    .to_string()
}

fn hostinfo(hostname: &str, routes: &[String]) -> serde_json::Value {
    serde_json::json!({
        "Hostname": hostname,
        "OS": "linux",
        "IPNVersion": "test",
        "RoutableIPs": routes,
    })
}
