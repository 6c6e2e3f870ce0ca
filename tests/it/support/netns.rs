//! Network namespaces for tests that need real routing (TUN-mode clients, subnet
//! routers, exit nodes): namespaces named after this test process, veth links
//! created directly between them (never in the machine's own namespace), and
//! sockets opened inside them. Every namespace, with the processes in it, is
//! removed on drop; namespaces left by a test process that died are swept first.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// One network namespace of this test process.
pub struct Netns {
    pub name: String,
}

/// Runs a command and panics with its output unless it succeeded.
fn must(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (install it: scripts/install-test-deps)"));
    assert!(
        out.status.success(),
        "{program} {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The prefix of namespaces made by the test process `pid`.
fn prefix_of(pid: u32) -> String {
    format!("hw{pid}-")
}

/// Removes namespaces whose test process is gone (killed before it could clean up).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix("hw")
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove(name);
        }
    }
}

/// Kills every process in namespace `name`, then deletes it.
fn remove(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

impl Netns {
    /// A new namespace with its loopback up. Needs root (CAP_NET_ADMIN), as the
    /// TUN-mode tests do; fails loudly without it.
    pub fn new(role: &str) -> Netns {
        static SWEEP: Once = Once::new();
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        SWEEP.call_once(sweep_stale);
        let name = format!(
            "{}{}{role}",
            prefix_of(std::process::id()),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        must("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args…`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        must("ip", &all);
    }

    /// `ip -n <ns> args…` and its standard output.
    pub fn ip_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Lets the namespace forward packets between its interfaces (a router).
    pub fn forward(&self) {
        let ok = self
            .command("sysctl")
            .args([
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv6.conf.all.forwarding=1",
            ])
            .status()
            .expect("sysctl")
            .success();
        assert!(ok, "{}: could not enable forwarding", self.name);
    }

    /// One ICMP echo from inside the namespace, answered within a second.
    pub fn ping(&self, addr: &str) -> bool {
        self.command("ping")
            .args(["-n", "-q", "-c", "1", "-W", "1", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("ping (install iputils-ping: scripts/install-test-deps)")
            .success()
    }

    /// Pings until an answer comes or `timeout` passes; returns how long it took.
    pub fn ping_until(&self, addr: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.ping(addr) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// Runs `f` on a thread that has moved into this namespace: sockets it opens
    /// live there, and keep living there when handed back.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                    rustix::thread::move_into_link_name_space(
                        file.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                    f()
                })
                .join()
                .expect("namespace thread")
        })
    }

    /// A line echo server inside the namespace on `ip`; returns its port and the
    /// source addresses of the connections it served.
    pub fn echo_server(&self, ip: &str) -> (u16, Arc<Mutex<Vec<SocketAddr>>>) {
        let bind = format!("{ip}:0");
        let listener = self.enter(|| TcpListener::bind(&bind).expect("bind in namespace"));
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Ok(peer) = conn.peer_addr() {
                    record.lock().unwrap().push(peer);
                }
                std::thread::spawn(move || {
                    let mut line = String::new();
                    let mut reader = std::io::BufReader::new(&conn);
                    if std::io::BufRead::read_line(&mut reader, &mut line).is_ok() {
                        let _ = (&conn).write_all(line.as_bytes());
                    }
                });
            }
        });
        (port, seen)
    }

    /// From inside the namespace: connects to `target`, sends one line and returns
    /// the answer.
    pub fn tcp_exchange(&self, target: SocketAddr, line: &str) -> std::io::Result<String> {
        let mut stream =
            self.enter(|| TcpStream::connect_timeout(&target, Duration::from_secs(2)))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(format!("{line}\n").as_bytes())?;
        let mut back = String::new();
        stream.read_to_string(&mut back)?;
        Ok(back.trim_end().to_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

/// Links two namespaces with a veth pair: `a_if` in `a`, `b_if` in `b`, each with
/// an address (CIDR) if given, both up. Nothing is created in the machine's own
/// namespace.
pub fn link(
    a: &Netns,
    a_if: &str,
    a_addr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_addr: Option<&str>,
) {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ]);
    for (ns, name, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if let Some(addr) = addr {
            ns.ip(&["addr", "add", addr, "dev", name]);
        }
        ns.ip(&["link", "set", name, "up"]);
    }
}

/// A switch: a namespace with a bridge `br0` that owns `gateway` (CIDR), to which
/// other namespaces attach with an address of their own and a default route
/// through the gateway.
pub struct Switch {
    pub ns: Netns,
    gateway: String,
    ports: AtomicUsize,
}

impl Switch {
    pub fn new(role: &str, gateway: &str) -> Switch {
        let ns = Netns::new(role);
        ns.ip(&["link", "add", "br0", "type", "bridge"]);
        ns.ip(&["addr", "add", gateway, "dev", "br0"]);
        ns.ip(&["link", "set", "br0", "up"]);
        Switch {
            ns,
            gateway: gateway.split('/').next().unwrap_or_default().to_owned(),
            ports: AtomicUsize::new(0),
        }
    }

    /// Plugs `node` in as `ifname` with `addr` (CIDR); with `default_route`, the
    /// gateway becomes its default route. Returns the switch's port for it.
    pub fn attach(&self, node: &Netns, ifname: &str, addr: &str, default_route: bool) -> String {
        let port = format!("p{}", self.ports.fetch_add(1, Ordering::Relaxed));
        link(node, ifname, Some(addr), &self.ns, &port, None);
        self.ns.ip(&["link", "set", &port, "master", "br0"]);
        if default_route {
            node.ip(&["route", "add", "default", "via", &self.gateway]);
        }
        port
    }

    /// Cuts `port` off the switch: the machine behind it keeps its link up and
    /// its sockets open, but nothing it sends arrives and nothing reaches it (a
    /// cable pulled beyond its own interface).
    pub fn cut(&self, port: &str) {
        self.ns.ip(&["link", "set", port, "nomaster"]);
    }

    /// Plugs a port cut with [`Switch::cut`] back in.
    pub fn mend(&self, port: &str) {
        self.ns.ip(&["link", "set", port, "master", "br0"]);
    }
}
