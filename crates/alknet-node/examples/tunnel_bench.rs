//! Tunnel throughput and connection rate through SOCKS5, one run, all on loopback:
//! `cargo run --release -p alknet-node --example tunnel_bench [MiB]` (default 1024).
//!
//! Rows: direct (the limit), `ssh -D` to a local OpenSSH `sshd`, `ssh -D` to the node's plain SSH
//! port, alknet SOCKS5 over SSH on QUIC and on TCP+TLS, alknet SOCKS5 over the native tunnel on
//! QUIC and on TCP+TLS.
//! Bulk: `curl` downloads the body from a local HTTP server. Rate: sequential SOCKS5 CONNECT +
//! a small GET, from this process. Needs `curl`, `ssh`, `ssh-keygen` and `/usr/sbin/sshd`.
//! `ALKNET_BENCH_ONLY=native,QUIC` runs only the rows whose name contains one of the words (for
//! profiling one path); `ALKNET_BENCH_SKIP_RATE=1` skips the connection-rate column.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alknet_core::config::PeerEntry;
use alknet_core::SecretKey;
use alknet_node::{native_tunnel, ssh_tunnel, DialTarget, Node, NodeConfig, Transport};
use alknet_ssh::client::{Listener, Socks5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RATE_CONNECTIONS: usize = 300;

/// Serves `GET /big` (`size` bytes) and anything else as a 2-byte body.
async fn http_server(size: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let chunk = vec![0u8; 1 << 20];
        while let Ok((mut socket, _)) = listener.accept().await {
            let chunk = chunk.clone();
            tokio::spawn(async move {
                let _ = socket.set_nodelay(true);
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let len = if head.starts_with(b"GET /big") {
                    size
                } else {
                    2
                };
                let header = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                );
                if socket.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                let mut left = len;
                while left > 0 {
                    let n = left.min(chunk.len() as u64) as usize;
                    if socket.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

/// MiB/s of a curl download of `/big`, through `proxy` if given.
async fn bulk(http: SocketAddr, proxy: Option<SocketAddr>, size: u64) -> f64 {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{time_total}",
    ]);
    if let Some(proxy) = proxy {
        cmd.arg("--socks5-hostname").arg(proxy.to_string());
    }
    let out = cmd
        .arg(format!("http://localhost:{}/big", http.port()))
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.split_whitespace();
    let bytes: f64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let secs: f64 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    assert_eq!(
        bytes as u64,
        size,
        "curl: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    bytes / secs / (1024.0 * 1024.0)
}

/// Connections per second: sequential SOCKS5 CONNECT (by name) + GET / + read to the end.
async fn rate(http: SocketAddr, proxy: Option<SocketAddr>) -> f64 {
    let start = Instant::now();
    for _ in 0..RATE_CONNECTIONS {
        let mut s = match proxy {
            None => TcpStream::connect(http).await.unwrap(),
            Some(proxy) => {
                let mut s = TcpStream::connect(proxy).await.unwrap();
                s.write_all(&[5, 1, 0]).await.unwrap();
                let mut reply = [0u8; 2];
                s.read_exact(&mut reply).await.unwrap();
                let mut req = vec![5, 1, 0, 3, 9];
                req.extend_from_slice(b"localhost");
                req.extend_from_slice(&http.port().to_be_bytes());
                s.write_all(&req).await.unwrap();
                let mut head = [0u8; 10];
                s.read_exact(&mut head).await.unwrap();
                assert_eq!(head[1], 0, "SOCKS5 CONNECT refused");
                s
            }
        };
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        let mut sink = Vec::new();
        s.read_to_end(&mut sink).await.unwrap();
    }
    RATE_CONNECTIONS as f64 / start.elapsed().as_secs_f64()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn until_listening(port: u16) {
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ssh -N -D` to `port` with key file `id`; returns the SOCKS port and the process.
async fn ssh_dynamic(dir: &std::path::Path, port: u16, user: &str) -> (SocketAddr, Killed) {
    let socks = free_port();
    let child = Command::new("ssh")
        .args(["-F", "/dev/null", "-N", "-i"])
        .arg(dir.join("id"))
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "-p", &port.to_string()])
        .arg("-D")
        .arg(format!("127.0.0.1:{socks}"))
        .arg(format!("{user}@127.0.0.1"))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    until_listening(socks).await;
    (([127, 0, 0, 1], socks).into(), Killed(child))
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;
    let http = http_server(size).await;
    let dir = tempfile::tempdir().unwrap();
    let alice = SecretKey::generate();
    std::fs::write(
        dir.path().join("id"),
        alknet_ssh::keys::openssh_private_key(&alice),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("id"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let user = user.trim();

    // OpenSSH's sshd on loopback, authorizing alice.
    let host = dir.path().join("host");
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host)
        .status()
        .unwrap();
    std::fs::write(
        dir.path().join("keys"),
        alknet_ssh::keys::openssh_public_key(&alice.public()),
    )
    .unwrap();
    let sshd_port = free_port();
    let config = format!(
        "Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nPermitRootLogin prohibit-password\nPidFile {}\n",
        host.display(),
        dir.path().join("keys").display(),
        dir.path().join("pid").display()
    );
    std::fs::write(dir.path().join("sshd_config"), config).unwrap();
    let _ = std::fs::create_dir_all("/run/sshd");
    let _sshd = Killed(
        Command::new("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(dir.path().join("sshd_config"))
            .spawn()
            .unwrap(),
    );
    until_listening(sshd_port).await;

    // The node: alknet/ssh, alknet/tunnel and plain SSH, loopback allowed for alice.
    let mut config = NodeConfig::new("127.0.0.1:0".parse().unwrap());
    config.services.ssh = true;
    config.services.tunnel = true;
    config.ssh.listen = Some("127.0.0.1:0".parse().unwrap());
    config.auth.peers = vec![PeerEntry::new("alice", [alice.public().fingerprint()])];
    config.forwarding =
        serde_json::from_str(r#"{"rules":[{"hosts":["127.0.0.0/8","::1"],"action":"allow"}]}"#)
            .unwrap();
    let node = Node::builder(config)
        .key(SecretKey::generate())
        .start()
        .await
        .unwrap();
    let target = |over| DialTarget::Direct {
        address: node.local_addr(),
        fingerprint: node.fingerprint().to_string(),
        over: Some(over),
        timeout: Duration::from_secs(10),
    };
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let over_quic: Listener =
        Socks5::start(any, ssh_tunnel(alice.clone(), target(Transport::Quic)))
            .await
            .unwrap();
    let over_tcp: Listener = Socks5::start(any, ssh_tunnel(alice.clone(), target(Transport::Tcp)))
        .await
        .unwrap();
    let native: Listener =
        Socks5::start(any, native_tunnel(alice.clone(), target(Transport::Quic)))
            .await
            .unwrap();
    let native_tcp: Listener =
        Socks5::start(any, native_tunnel(alice.clone(), target(Transport::Tcp)))
            .await
            .unwrap();
    let (openssh, _ssh1) = ssh_dynamic(dir.path(), sshd_port, user).await;
    let (to_node, _ssh2) = ssh_dynamic(dir.path(), node.ssh_addr().unwrap().port(), "alice").await;

    let rows: [(&str, Option<SocketAddr>); 7] = [
        ("direct (no proxy)", None),
        ("ssh -D → OpenSSH sshd", Some(openssh)),
        ("ssh -D → alknet plain SSH port", Some(to_node)),
        (
            "alknet SOCKS5 → SSH over QUIC",
            Some(over_quic.local_addr()),
        ),
        (
            "alknet SOCKS5 → SSH over TCP+TLS",
            Some(over_tcp.local_addr()),
        ),
        (
            "alknet SOCKS5 → native tunnel (QUIC)",
            Some(native.local_addr()),
        ),
        (
            "alknet SOCKS5 → native tunnel (TCP+TLS)",
            Some(native_tcp.local_addr()),
        ),
    ];
    println!("{mib} MiB through each, {RATE_CONNECTIONS} sequential connections for the rate\n");
    println!("| path | bulk MiB/s | connections/s |");
    println!("|---|---:|---:|");
    let only = std::env::var("ALKNET_BENCH_ONLY").unwrap_or_default();
    let skip_rate = std::env::var("ALKNET_BENCH_SKIP_RATE").is_ok_and(|v| v == "1");
    for (name, proxy) in rows {
        if !only.is_empty() && !only.split(',').any(|word| name.contains(word)) {
            continue;
        }
        let mbps = bulk(http, proxy, size).await;
        let cps = if skip_rate {
            f64::NAN
        } else {
            rate(http, proxy).await
        };
        println!("| {name} | {mbps:.0} | {cps:.0} |");
    }
    node.shutdown().await;
}
