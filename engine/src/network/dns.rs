//! The embedded DNS server of a container on a user network, as Docker's at
//! 127.0.0.11:53 inside the container's network namespace: it answers the
//! names the engine knows (container names, network aliases, `--link`
//! aliases, `name.network`) from a [`NameLookup`], and forwards anything
//! else to upstream resolvers from berthd's own namespace.
//!
//! The sockets are opened by a thread that enters the container's network
//! namespace (`setns`) and are then served by berthd's tokio runtime; no
//! process per container.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// Where the server listens inside the container's namespace.
pub const DNS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("open network namespace {path}: {source}")]
    OpenNetns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("enter network namespace {path}: {source}")]
    EnterNetns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listen on {addr} in {path}: {source}")]
    Listen {
        addr: SocketAddr,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The names one container can resolve: those of the networks it is on.
/// The engine implements it over its registry of networks and endpoints.
pub trait NameLookup: Send + Sync {
    /// The addresses of `name` (a container name, an alias, a link alias,
    /// or `name.network`, without the trailing dot, lowercase) as this
    /// container sees them; empty when the engine does not know it.
    fn lookup(&self, name: &str) -> Vec<IpAddr>;

    /// The name of the container at `ip` (`name.network`, as Docker
    /// answers a reverse lookup), when it is on a network this container
    /// shares; None lets the query go upstream.
    fn reverse(&self, ip: IpAddr) -> Option<String> {
        let _ = ip;
        None
    }
}

/// A running DNS server; dropping it or [`DnsHandle::stop`] stops it
/// and closes its sockets.
pub struct DnsHandle {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DnsHandle {
    pub fn stop(self) {}
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Queries answered or forwarded at once per container, over UDP; more
/// wait (the memory of a server is bounded by it).
const MAX_IN_FLIGHT: usize = 64;
/// TCP connections served at once per container.
const MAX_TCP: usize = 16;
/// How long an upstream has to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle TCP connection is closed after this.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Docker's TTL for the names it answers.
const TTL: u32 = 600;

pub struct DnsServer;

impl DnsServer {
    /// Listens on 127.0.0.11:53 (UDP and TCP) in the network namespace at
    /// `netns` (`/proc/<pid>/ns/net` or a bind mount of it) and serves from
    /// the current tokio runtime; names the lookup does not know go to
    /// `upstreams` in turn, from the caller's own namespace.
    pub async fn start(
        netns: &Path,
        lookup: Arc<dyn NameLookup>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<DnsHandle, DnsError> {
        Self::start_on(netns, DNS_ADDR, lookup, upstreams).await
    }

    /// [`DnsServer::start`] on another address (tests).
    pub async fn start_on(
        netns: &Path,
        addr: SocketAddr,
        lookup: Arc<dyn NameLookup>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<DnsHandle, DnsError> {
        let path = netns.to_path_buf();
        let (udp, tcp) = tokio::task::spawn_blocking(move || open_in_netns(&path, addr))
            .await
            .map_err(|e| DnsError::EnterNetns {
                path: netns.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let listen = |source| DnsError::Listen {
            addr,
            path: netns.to_path_buf(),
            source,
        };
        let udp = Arc::new(UdpSocket::from_std(udp).map_err(listen)?);
        let tcp = TcpListener::from_std(tcp).map_err(listen)?;
        let resolver = Arc::new(Resolver { lookup, upstreams });
        let tasks = vec![
            tokio::spawn(serve_udp(udp, resolver.clone())),
            tokio::spawn(serve_tcp(tcp, resolver)),
        ];
        Ok(DnsHandle { tasks })
    }
}

/// Opens the sockets from a thread of its own that enters the namespace
/// (a thread's network namespace is its own; the thread then ends).
fn open_in_netns(
    path: &Path,
    addr: SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let file = std::fs::File::open(path).map_err(|source| DnsError::OpenNetns {
        path: path.to_path_buf(),
        source,
    })?;
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            DnsError::EnterNetns {
                path: owned.clone(),
                source: e.into(),
            }
        })?;
        let listen = |source| DnsError::Listen {
            addr,
            path: owned.clone(),
            source,
        };
        let udp = std::net::UdpSocket::bind(addr).map_err(listen)?;
        let tcp = std::net::TcpListener::bind(addr).map_err(listen)?;
        udp.set_nonblocking(true).map_err(listen)?;
        tcp.set_nonblocking(true).map_err(listen)?;
        Ok((udp, tcp))
    })
    .join()
    .map_err(|_| DnsError::EnterNetns {
        path: path.to_path_buf(),
        source: std::io::Error::other("the thread entering the namespace panicked"),
    })?
}

async fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "dns: receive");
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (socket, resolver) = (socket.clone(), resolver.clone());
        tokio::spawn(async move {
            if let Some(reply) = resolver.answer(&query, Transport::Udp).await {
                let _ = socket.send_to(&reply, peer).await;
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let resolver = resolver.clone();
        tokio::spawn(async move {
            let _ = serve_tcp_connection(stream, &resolver).await;
            drop(permit);
        });
    }
}

/// DNS over TCP: each message after its two-byte length.
async fn serve_tcp_connection(mut stream: TcpStream, resolver: &Resolver) -> std::io::Result<()> {
    loop {
        let Ok(query) = timeout(TCP_IDLE, read_tcp_message(&mut stream)).await else {
            return Ok(());
        };
        let Some(reply) = resolver.answer(&query?, Transport::Tcp).await else {
            return Ok(());
        };
        write_tcp_message(&mut stream, &reply).await?;
    }
}

async fn read_tcp_message(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_tcp_message(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len =
        u16::try_from(msg.len()).map_err(|_| std::io::Error::other("dns message too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    stream.write_all(&out).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

struct Resolver {
    lookup: Arc<dyn NameLookup>,
    upstreams: Vec<SocketAddr>,
}

impl Resolver {
    /// The reply to one query: from the lookup, or from an upstream, or an
    /// error as a resolver gives it (None: nothing to answer, as for bytes
    /// that are not a DNS message).
    async fn answer(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let request = match Message::from_vec(query) {
            Ok(m) => m,
            Err(_) => {
                // a header we can read gets FORMERR, anything shorter nothing
                let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
                return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                    .to_vec()
                    .ok();
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return None;
        }
        match local_answer(&request, self.lookup.as_ref()) {
            Some(reply) => reply.to_vec().ok(),
            None => match self.forward(query, transport).await {
                Some(reply) => Some(reply),
                None => reply_to(&request, ResponseCode::ServFail).to_vec().ok(),
            },
        }
    }

    /// The query as it came, to each upstream in turn; the first answer
    /// with the query's id.
    async fn forward(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let reply = match transport {
                Transport::Udp => timeout(UPSTREAM_TIMEOUT, forward_udp(*upstream, query)).await,
                Transport::Tcp => timeout(UPSTREAM_TIMEOUT, forward_tcp(*upstream, query)).await,
            };
            match reply {
                Ok(Ok(reply)) if reply.get(..2) == query.get(..2) => return Some(reply),
                Ok(Ok(_)) => tracing::debug!(%upstream, "dns: reply with another id"),
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "dns: upstream"),
                Err(_) => tracing::debug!(%upstream, "dns: upstream timed out"),
            }
        }
        None
    }
}

async fn forward_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let any: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

async fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_tcp_message(&mut stream, query).await?;
    read_tcp_message(&mut stream).await
}

/// The reply from the engine's names, or None when the name is not one of
/// them (then it is forwarded).
fn local_answer(request: &Message, lookup: &dyn NameLookup) -> Option<Message> {
    if request.metadata.op_code != OpCode::Query {
        return Some(reply_to(request, ResponseCode::NotImp));
    }
    let [q] = request.queries.as_slice() else {
        return Some(reply_to(request, ResponseCode::FormErr));
    };
    if q.query_class != DNSClass::IN {
        return None;
    }
    if q.query_type == RecordType::PTR {
        let ip = reverse_name(&q.name.to_lowercase().to_ascii())?;
        let target = Name::from_ascii(format!("{}.", lookup.reverse(ip)?)).ok()?;
        let mut reply = reply_to(request, ResponseCode::NoError);
        reply.add_answer(Record::from_rdata(
            q.name.clone(),
            TTL,
            RData::PTR(PTR(target)),
        ));
        return Some(reply);
    }
    if !matches!(
        q.query_type,
        RecordType::A | RecordType::AAAA | RecordType::ANY
    ) {
        return None;
    }
    let name = q.name.to_lowercase().to_ascii();
    let ips = lookup.lookup(name.trim_end_matches('.'));
    if ips.is_empty() {
        return None;
    }
    let mut reply = reply_to(request, ResponseCode::NoError);
    for ip in ips {
        let rdata = match (ip, q.query_type) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(v4)),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(v6)),
            // a known name without an address of this family: no records
            _ => continue,
        };
        reply.add_answer(Record::from_rdata(q.name.clone(), TTL, rdata));
    }
    Some(reply)
}

/// `2.0.88.10.in-addr.arpa.` to 10.88.0.2 (IPv4 only).
fn reverse_name(name: &str) -> Option<IpAddr> {
    let octets = name.strip_suffix(".in-addr.arpa.")?;
    let mut parts: Vec<u8> = octets
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    if parts.len() != 4 {
        return None;
    }
    parts.reverse();
    Some(IpAddr::V4(Ipv4Addr::new(
        parts[0], parts[1], parts[2], parts[3],
    )))
}

/// A response to `request` with its id, question and flags.
fn reply_to(request: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.queries = request.queries.clone();
    if request.edns.is_some() {
        reply.edns = Some(Edns::new());
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    struct Names;
    impl NameLookup for Names {
        fn lookup(&self, name: &str) -> Vec<IpAddr> {
            match name {
                "web" | "web.mynet" | "alias" => vec!["10.5.0.2".parse().unwrap()],
                _ => vec![],
            }
        }
        fn reverse(&self, ip: IpAddr) -> Option<String> {
            (ip == IpAddr::from([10, 5, 0, 2])).then(|| "web.mynet".to_string())
        }
    }

    fn query(name: &str, ty: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m
    }

    fn resolver(upstreams: Vec<SocketAddr>) -> Resolver {
        Resolver {
            lookup: Arc::new(Names),
            upstreams,
        }
    }

    async fn ask(r: &Resolver, q: &Message) -> Message {
        let reply = r
            .answer(&q.to_vec().unwrap(), Transport::Udp)
            .await
            .unwrap();
        Message::from_vec(&reply).unwrap()
    }

    #[tokio::test]
    async fn known_names_are_answered() {
        let r = resolver(vec![]);
        for name in ["web.", "WEB.mynet.", "alias"] {
            let q = query(name, RecordType::A);
            let reply = ask(&r, &q).await;
            assert_eq!(reply.metadata.id, q.metadata.id);
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(reply.metadata.recursion_available);
            assert_eq!(reply.answers.len(), 1, "{name}");
            assert_eq!(
                reply.answers[0].data,
                RData::A(A("10.5.0.2".parse().unwrap()))
            );
        }
        // a known name has no IPv6 address: an empty answer, not an error
        let reply = ask(&r, &query("web.", RecordType::AAAA)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert!(reply.answers.is_empty());
    }

    #[tokio::test]
    async fn reverse_lookups_of_known_addresses() {
        let r = resolver(vec![]);
        let reply = ask(&r, &query("2.0.5.10.in-addr.arpa.", RecordType::PTR)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            reply.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("web.mynet.").unwrap()))
        );
        // another address is not ours: upstream (none here)
        let reply = ask(&r, &query("3.0.5.10.in-addr.arpa.", RecordType::PTR)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reverse_name("1.2.in-addr.arpa."), None);
    }

    #[tokio::test]
    async fn unknown_names_without_upstreams_fail() {
        let reply = ask(&resolver(vec![]), &query("example.org.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert_eq!(reply.queries.len(), 1);
    }

    #[tokio::test]
    async fn garbage_gets_formerr_or_nothing() {
        let r = resolver(vec![]);
        assert!(r.answer(&[1], Transport::Udp).await.is_none());
        let reply = r
            .answer(&[0x12, 0x34, 0xff, 0xff, 0, 9], Transport::Udp)
            .await
            .unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    }

    /// An upstream on loopback that says NXDOMAIN to everything after a
    /// first silent query (so a dead upstream is passed over).
    async fn upstream() -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            loop {
                let (n, peer) = socket.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut r = reply_to(&q, ResponseCode::NXDomain);
                if q.queries[0].name.to_ascii() == "up.test." {
                    r.metadata.response_code = ResponseCode::NoError;
                    r.add_answer(Record::from_rdata(
                        q.queries[0].name.clone(),
                        5,
                        RData::A(A("192.0.2.7".parse().unwrap())),
                    ));
                }
                socket.send_to(&r.to_vec().unwrap(), peer).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn the_rest_is_forwarded() {
        let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let r = resolver(vec![dead.local_addr().unwrap(), upstream().await]);
        let reply = ask(&r, &query("up.test.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            reply.answers[0].data,
            RData::A(A("192.0.2.7".parse().unwrap()))
        );
        let reply = ask(&r, &query("nothing.test.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }
}
