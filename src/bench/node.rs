//! One simulated Tailscale node of the load generator: its own TCP connection
//! (from a chosen 127.0.0.x source address), the `/ts2021` upgrade and Noise
//! handshake as a client, HTTP/2 inside, register with a pre-auth key, then a
//! streaming map session whose messages update the node's view of its peers.

use crate::control::frame;
use crate::control::noise::{Initiator, NoiseStream};
use crate::types::{DiscoKey, MachineKey, NodeKey, PrivateKey};
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The capability version the simulated nodes announce (v1.102).
pub const CAPVER: u16 = 142;
/// A server that does not answer a step within this is counted as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the server is and how to reach it.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header (the server URL's authority).
    pub host: String,
    pub server_key: MachineKey,
}

/// A simulated node with an open control connection. Clones share the connection.
#[derive(Clone)]
pub struct Node {
    pub index: usize,
    machine: PrivateKey,
    pub node_key: NodeKey,
    pub disco_key: DiscoKey,
    pub source: IpAddr,
    sender: SendRequest<Full<Bytes>>,
}

/// A map session's view of its peers, fed by the frames it receives.
#[derive(Debug, Default)]
pub struct View {
    /// This node's id, from the first full map.
    pub self_id: Option<u64>,
    /// Peer id → what the load generator keeps of its endpoints (a few bytes per
    /// peer, so 10,000 nodes that each see every other fit in memory).
    pub peers: HashMap<u64, Endpoints>,
    /// Bytes received on the stream (framed, compressed).
    pub bytes: u64,
    pub messages: u64,
    /// Peers whose entry the last message set or changed.
    pub changed: Vec<u64>,
    /// When the last message carrying a packet filter arrived.
    pub last_filter: Option<std::time::Instant>,
}

/// A peer's endpoints as the load generator remembers them: a digest of the
/// whole list (a fan-out round waits for one exact list) and the highest port in
/// it (churned nodes announce ports from a known base).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Endpoints {
    digest: u64,
    pub highest_port: Option<u16>,
}

impl Endpoints {
    pub fn of<S: AsRef<str>>(list: &[S]) -> Endpoints {
        use std::hash::{Hash, Hasher};
        // A fixed-key hasher, so every node's digest of one list is the same.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for endpoint in list {
            endpoint.as_ref().hash(&mut hasher);
        }
        let highest_port = list
            .iter()
            .filter_map(|e| e.as_ref().rsplit_once(':')?.1.parse::<u16>().ok())
            .max();
        Endpoints {
            digest: hasher.finish(),
            highest_port,
        }
    }

    /// Whether these are exactly `list`.
    pub fn are<S: AsRef<str>>(&self, list: &[S]) -> bool {
        *self == Endpoints::of(list)
    }
}

/// The parts of a `MapResponse` the load generator reads; the rest is skipped.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MapMessage {
    #[serde(default)]
    node: Option<SelfNode>,
    #[serde(default)]
    peers: Option<Vec<PeerNode>>,
    #[serde(default)]
    peers_changed: Option<Vec<PeerNode>>,
    #[serde(default)]
    peers_removed: Option<Vec<u64>>,
    #[serde(default)]
    peers_changed_patch: Option<Vec<PeerPatch>>,
    #[serde(default)]
    packet_filters: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct SelfNode {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(flatten)]
    _rest: HashMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct PeerNode {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(rename = "Endpoints", default)]
    endpoints: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct PeerPatch {
    #[serde(rename = "NodeID")]
    node_id: u64,
    #[serde(rename = "Endpoints", default)]
    endpoints: Option<Vec<String>>,
}

impl View {
    /// Applies one decoded map message.
    pub fn apply(&mut self, json: &[u8]) -> Result<()> {
        let message: MapMessage =
            serde_json::from_slice(json).context("a map message that is not a MapResponse")?;
        self.messages += 1;
        self.changed.clear();
        if message.packet_filters.is_some() {
            self.last_filter = Some(std::time::Instant::now());
        }
        if let Some(node) = message.node {
            self.self_id = Some(node.id);
        }
        if let Some(peers) = message.peers {
            self.changed.extend(peers.iter().map(|p| p.id));
            self.peers = peers
                .into_iter()
                .map(|p| (p.id, Endpoints::of(&p.endpoints.unwrap_or_default())))
                .collect();
        }
        for peer in message.peers_changed.into_iter().flatten() {
            self.changed.push(peer.id);
            self.peers
                .insert(peer.id, Endpoints::of(&peer.endpoints.unwrap_or_default()));
        }
        for id in message.peers_removed.into_iter().flatten() {
            self.peers.remove(&id);
        }
        for patch in message.peers_changed_patch.into_iter().flatten() {
            if let (Some(endpoints), Some(known)) =
                (patch.endpoints, self.peers.get_mut(&patch.node_id))
            {
                *known = Endpoints::of(&endpoints);
                self.changed.push(patch.node_id);
            }
        }
        Ok(())
    }
}

/// Splits the next complete frame (4-byte little-endian length ‖ zstd JSON) off
/// `pending`.
pub fn take_frame(pending: &mut Vec<u8>) -> Result<Option<Vec<u8>>> {
    let Some((json, used)) = frame::decode(pending)? else {
        return Ok(None);
    };
    pending.drain(..used);
    Ok(Some(json))
}

/// The server's Noise key from `GET /key`.
pub async fn fetch_server_key(addr: SocketAddr, host: &str) -> Result<MachineKey> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let request =
        format!("GET /key?v={CAPVER} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(STEP_TIMEOUT, tcp.read_to_end(&mut raw))
        .await
        .context("GET /key timed out")??;
    let text = String::from_utf8_lossy(&raw);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("GET /key: no HTTP response"))?;
    // A chunked body has a length line first; the JSON object is all we need.
    let json = &body[body.find('{').unwrap_or(0)..=body.rfind('}').unwrap_or(0)];
    #[derive(Deserialize)]
    struct KeyBody {
        #[serde(rename = "publicKey")]
        public_key: String,
    }
    let key: KeyBody = serde_json::from_str(json).context("GET /key: unexpected body")?;
    key.public_key.parse().map_err(|e| anyhow!("GET /key: {e}"))
}

impl Node {
    /// Opens a control connection for a new machine from `source`.
    pub async fn connect(index: usize, target: &Target, source: Option<IpAddr>) -> Result<Node> {
        let machine = PrivateKey::generate();
        let node_key = NodeKey::from_bytes(*PrivateKey::generate().as_bytes());
        Node::connect_as(index, target, source, machine, node_key).await
    }

    /// Closes this connection (unless a clone holds it), waits `pause`, and opens a
    /// new one for the same machine and node key, as tailscaled does after its
    /// session ended or it restarted.
    pub async fn reconnect(self, target: &Target, pause: Duration) -> Result<Node> {
        let Node {
            index,
            machine,
            node_key,
            disco_key,
            source,
            sender,
        } = self;
        drop(sender);
        tokio::time::sleep(pause).await;
        let mut node = Node::connect_as(index, target, Some(source), machine, node_key).await?;
        node.disco_key = disco_key;
        Ok(node)
    }

    async fn connect_as(
        index: usize,
        target: &Target,
        source: Option<IpAddr>,
        machine: PrivateKey,
        node_key: NodeKey,
    ) -> Result<Node> {
        let tcp = match source {
            Some(ip) => {
                let socket = if ip.is_ipv4() {
                    TcpSocket::new_v4()?
                } else {
                    TcpSocket::new_v6()?
                };
                socket.bind(SocketAddr::new(ip, 0))?;
                socket.connect(target.addr).await
            }
            None => TcpStream::connect(target.addr).await,
        }
        .with_context(|| format!("connect to {}", target.addr))?;
        tcp.set_nodelay(true)?;
        let source = tcp.local_addr()?.ip();
        let stream = tokio::time::timeout(STEP_TIMEOUT, upgrade(tcp, target, &machine))
            .await
            .context("the /ts2021 upgrade timed out")??;
        // Flow-control windows as Go's HTTP/2 transport (tailscaled) sets them, so a
        // server's large full maps are not throttled by the load generator.
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(1 << 30)
            .handshake(TokioIo::new(stream))
            .await
            .context("HTTP/2 inside Noise")?;
        tokio::spawn(connection);
        Ok(Node {
            index,
            machine,
            node_key,
            disco_key: DiscoKey::from_bytes(*PrivateKey::generate().as_bytes()),
            source,
            sender,
        })
    }

    pub fn hostname(&self) -> String {
        format!("bench-{}", self.index)
    }

    /// Registers with a pre-auth key; fails with the server's `Error` text.
    pub async fn register(&mut self, auth_key: &str) -> Result<()> {
        let body = serde_json::json!({
            "Version": CAPVER,
            "NodeKey": self.node_key.to_string(),
            "OldNodeKey": NodeKey::zero().to_string(),
            "Auth": {"AuthKey": auth_key},
            "Expiry": "0001-01-01T00:00:00Z",
            "Hostinfo": {"Hostname": self.hostname(), "OS": "linux", "IPNVersion": "bench"},
        });
        let (status, body) = self.post("/machine/register", body.to_string()).await?;
        let reply: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("register answered {status} with a body that is not JSON"))?;
        match reply["Error"].as_str() {
            Some(error) if !error.is_empty() => bail!("register refused: {error}"),
            _ if reply["MachineAuthorized"] != true => bail!("register: not authorized: {reply}"),
            _ => Ok(()),
        }
    }

    fn map_request(&self, stream: bool, endpoint_port: u16) -> String {
        serde_json::json!({
            "Version": CAPVER,
            "Compress": "zstd",
            "KeepAlive": true,
            "Stream": stream,
            "OmitPeers": !stream,
            "NodeKey": self.node_key.to_string(),
            "DiscoKey": self.disco_key.to_string(),
            "Endpoints": [SocketAddr::new(self.source, endpoint_port).to_string()],
            "Hostinfo": {"Hostname": self.hostname(), "OS": "linux", "IPNVersion": "bench"},
        })
        .to_string()
    }

    /// Opens the streaming map session; frames arrive on the returned body.
    pub async fn stream(&mut self, endpoint_port: u16) -> Result<hyper::body::Incoming> {
        let request = hyper::Request::post(format!("http://{}/machine/map", "control"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                self.map_request(true, endpoint_port),
            )))?;
        let response = tokio::time::timeout(STEP_TIMEOUT, self.sender.send_request(request))
            .await
            .context("map request timed out")??;
        if !response.status().is_success() {
            bail!("map stream refused: {}", response.status());
        }
        Ok(response.into_body())
    }

    /// A lite update (`Stream:false, OmitPeers:true`) announcing a new endpoint port.
    pub async fn announce_endpoint(&mut self, endpoint_port: u16) -> Result<()> {
        let (status, body) = self
            .post("/machine/map", self.map_request(false, endpoint_port))
            .await?;
        if !status.is_success() {
            bail!(
                "lite update refused: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    async fn post(&mut self, path: &str, body: String) -> Result<(hyper::StatusCode, Bytes)> {
        let request = hyper::Request::post(format!("http://control{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let exchange = async {
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        tokio::time::timeout(STEP_TIMEOUT, exchange)
            .await
            .with_context(|| format!("POST {path} timed out"))?
    }
}

/// The HTTP/1.1 upgrade to TS2021 and the client side of the Noise handshake on
/// `tcp`, up to the early payload: what follows is HTTP/2 (tests also use it to
/// hold a connection that never gets that far).
pub async fn upgrade<IO: AsyncRead + AsyncWrite + Unpin>(
    mut tcp: IO,
    target: &Target,
    machine: &PrivateKey,
) -> Result<NoiseStream<IO>> {
    let (initiator, init) = Initiator::new(&target.server_key, machine, CAPVER)?;
    let handshake = base64::engine::general_purpose::STANDARD.encode(init);
    let request = format!(
        "POST /ts2021 HTTP/1.1\r\nHost: {}\r\nUpgrade: tailscale-control-protocol\r\n\
         Connection: upgrade\r\nX-Tailscale-Handshake: {handshake}\r\nContent-Length: 0\r\n\r\n",
        target.host
    );
    tcp.write_all(request.as_bytes()).await?;
    // Read the response head a byte at a time: the Noise reply may follow at once.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            bail!("the /ts2021 response head is too long");
        }
        let byte = tcp.read_u8().await.context("the /ts2021 response")?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    if !head.starts_with("HTTP/1.1 101") {
        bail!(
            "/ts2021 answered {}",
            head.lines().next().unwrap_or_default()
        );
    }
    let mut stream = initiator.finish(tcp).await?;
    // headway and Headscale send an early payload (the node-key challenge); skip it.
    let _ = stream.read_early_payload().await?;
    Ok(stream)
}

/// Reads a body until it ends, feeding complete messages to `on_message`.
/// Returns when the body ends or `on_message` asks to stop.
pub async fn read_messages(
    body: &mut hyper::body::Incoming,
    view: &mut View,
    mut on_message: impl FnMut(&View) -> bool,
) -> Result<()> {
    let mut pending = Vec::new();
    loop {
        let Some(frame) = body.frame().await else {
            return Ok(());
        };
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        view.bytes += data.len() as u64;
        // Several messages may come in one chunk, and one message across several.
        let rest = if pending.is_empty() {
            // The common case: the chunk starts with a whole message; no copy.
            let (used, go_on) = apply_all(&data, view, &mut on_message)?;
            pending.extend_from_slice(&data[used..]);
            go_on
        } else {
            pending.extend_from_slice(&data);
            let (used, go_on) = apply_all(&pending, view, &mut on_message)?;
            pending.drain(..used);
            go_on
        };
        if !rest {
            return Ok(());
        }
        // A full map arrives in many chunks and leaves its size behind as
        // capacity: let it go once consumed (10,000 nodes each holding a 1 MB
        // buffer are 10 GB).
        if pending.is_empty() && pending.capacity() > 64 * 1024 {
            pending = Vec::new();
        }
    }
}

/// Applies every complete message at the start of `buf`; returns how many bytes
/// they used and whether `on_message` wants more.
fn apply_all(
    buf: &[u8],
    view: &mut View,
    on_message: &mut impl FnMut(&View) -> bool,
) -> Result<(usize, bool)> {
    let mut used = 0;
    while let Some((json, n)) = frame::decode(&buf[used..])? {
        used += n;
        view.apply(&json)?;
        if !on_message(view) {
            return Ok((used, false));
        }
    }
    Ok((used, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(json: &str) -> Vec<u8> {
        frame::encode(json.as_bytes()).to_vec()
    }

    #[test]
    fn the_view_follows_full_maps_deltas_removals_and_patches() {
        let mut view = View::default();
        let mut pending = frame(
            r#"{"Node":{"ID":1,"Name":"a"},"Peers":[{"ID":2,"Endpoints":["1.1.1.1:1"]},{"ID":3}]}"#,
        );
        pending.extend(frame(
            r#"{"PeersChanged":[{"ID":4,"Endpoints":["4.4.4.4:4"]}]}"#,
        ));
        pending.extend(frame(r#"{"PeersRemoved":[3]}"#));
        pending.extend(frame(
            r#"{"PeersChangedPatch":[{"NodeID":2,"Endpoints":["2.2.2.2:2"]}]}"#,
        ));
        pending.extend(frame(r#"{"KeepAlive":true}"#));
        let half = pending.split_off(pending.len() - 3);
        while let Some(json) = take_frame(&mut pending).unwrap() {
            view.apply(&json).unwrap();
        }
        assert_eq!(view.messages, 4, "the last frame is still incomplete");
        pending.extend(half);
        while let Some(json) = take_frame(&mut pending).unwrap() {
            view.apply(&json).unwrap();
        }
        assert_eq!(view.self_id, Some(1));
        assert_eq!(view.peers.len(), 2);
        assert!(view.peers[&2].are(&["2.2.2.2:2"]));
        assert!(view.peers[&4].are(&["4.4.4.4:4"]));
        assert!(!view.peers[&4].are(&["4.4.4.4:5"]));
        assert_eq!(view.peers[&4].highest_port, Some(4));
        assert!(view.changed.is_empty(), "a keep-alive changes no peer");
        view.apply(br#"{"PeersChangedPatch":[{"NodeID":4,"Online":false},{"NodeID":2,"Endpoints":["2.2.2.2:3"]}]}"#)
            .unwrap();
        assert_eq!(view.changed, [2], "only peer 2's endpoints changed");
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        huge.extend([0; 8]);
        assert!(take_frame(&mut huge).is_err());
        let mut not_zstd = 4u32.to_le_bytes().to_vec();
        not_zstd.extend(b"nope");
        assert!(take_frame(&mut not_zstd).is_err());
        assert!(View::default().apply(b"[1,2]").is_err());
    }
}
