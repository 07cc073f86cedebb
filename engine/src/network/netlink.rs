//! The kernel side of a network, through rtnetlink (no `ip` processes):
//! network namespaces the engine makes and keeps as bind mounts, bridges,
//! veth pairs whose container end is made directly inside the container's
//! namespace, addresses and routes.
//!
//! A netlink socket works in the namespace it was opened in, whatever
//! thread uses it later. So a namespace's socket is opened by a short-lived
//! thread that entered (or made) the namespace; the daemon's own threads
//! never change namespace.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute};
use rtnetlink::sys::{Socket, TokioSocket};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{what}: {source}")]
    Request {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("{what} {path}: {source}")]
    Namespace {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("open a netlink socket: {0}")]
    Socket(io::Error),
    #[error("no link named {0}")]
    NoLink(String),
}

/// Whether a netlink error is the kernel's `code` (an errno).
fn is_errno(e: &rtnetlink::Error, code: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -code)
}

fn request(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let what = what.into();
    move |source| NetlinkError::Request { what, source }
}

/// A netlink connection in one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the daemon's own namespace.
    pub fn host() -> Result<Netlink, NetlinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection over a netlink socket opened in another namespace.
    fn from_fd(fd: OwnedFd) -> Result<Netlink, NetlinkError> {
        // SAFETY: `fd` is an open netlink socket we own; ownership moves to
        // the tokio socket (which makes it non-blocking).
        let socket = unsafe { TokioSocket::from_raw_fd(fd.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The index of the link `name`, if there is one.
    pub async fn index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(request(format!("find link {name}"))(e)),
        }
    }

    async fn must_index(&self, name: &str) -> Result<u32, NetlinkError> {
        self.index(name)
            .await?
            .ok_or_else(|| NetlinkError::NoLink(name.to_string()))
    }

    /// The bridge `name` with `address/prefix` (and the IPv6 `address6`)
    /// on it, up; made when missing.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        address: Ipv4Addr,
        prefix: u8,
        address6: Option<(Ipv6Addr, u8)>,
        mtu: Option<u32>,
    ) -> Result<u32, NetlinkError> {
        let index = match self.index(name).await? {
            Some(i) => i,
            None => {
                let mut msg = LinkBridge::new(name);
                if let Some(mtu) = mtu {
                    msg = msg.mtu(mtu);
                }
                match self.handle.link().add(msg.build()).execute().await {
                    Ok(()) => {}
                    Err(e) if is_errno(&e, libc::EEXIST) => {}
                    Err(e) => return Err(request(format!("create bridge {name}"))(e)),
                }
                self.must_index(name).await?
            }
        };
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(address), prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if is_errno(&e, libc::EEXIST) => {}
            Err(e) => return Err(request(format!("address {address}/{prefix} on {name}"))(e)),
        }
        if let Some((addr6, prefix6)) = address6 {
            match self.add_address6(index, addr6, prefix6).await {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(request(format!("address {addr6}/{prefix6} on {name}"))(e)),
            }
        }
        self.set_up(index, name).await?;
        Ok(index)
    }

    /// An IPv6 address without duplicate address detection: usable at once
    /// (the addresses are the IPAM's, given once).
    async fn add_address6(
        &self,
        index: u32,
        address: Ipv6Addr,
        prefix: u8,
    ) -> Result<(), rtnetlink::Error> {
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V6(address), prefix);
        req.message_mut().header.flags = AddressHeaderFlags::Nodad;
        req.execute().await
    }

    async fn set_up(&self, index: u32, name: &str) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(request(format!("set {name} up")))
    }

    /// Deletes the link `name`; a missing one is no error.
    pub async fn delete(&self, name: &str) -> Result<(), NetlinkError> {
        let Some(index) = self.index(name).await? else {
            return Ok(());
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(request(format!("delete link {name}"))(e)),
        }
    }

    /// A veth pair: `host` on the bridge `bridge`, up; its peer made as
    /// `peer` with `mac` inside the namespace `netns` (an open fd of it).
    pub async fn add_veth(
        &self,
        host: &str,
        bridge: u32,
        mtu: Option<u32>,
        peer: &str,
        mac: [u8; 6],
        netns: &OwnedFd,
    ) -> Result<(), NetlinkError> {
        use std::os::fd::AsRawFd;
        // (not made up: the kernel refuses a veth peer up at creation)
        let mut peer_msg = LinkUnspec::new_with_name(peer)
            .address(mac.to_vec())
            .setns_by_fd(netns.as_raw_fd());
        let mut host_msg = LinkVeth::new(host, peer).controller(bridge).up();
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
            host_msg = host_msg.mtu(mtu);
        }
        let msg = host_msg
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(request(format!("create veth {host}")))
    }

    /// Inside a container's namespace: `lo` up.
    pub async fn loopback_up(&self) -> Result<(), NetlinkError> {
        if let Some(lo) = self.index("lo").await? {
            self.set_up(lo, "lo").await?;
        }
        Ok(())
    }

    /// Inside a container's namespace: `ifname` up with `address/prefix`
    /// (and `v6`, an IPv6 address with its prefix and gateway), and the
    /// default routes via the gateways given.
    pub async fn configure(
        &self,
        ifname: &str,
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        v6: Option<Addr6>,
    ) -> Result<(), NetlinkError> {
        let index = self.must_index(ifname).await?;
        self.handle
            .address()
            .add(index, IpAddr::V4(address), prefix)
            .execute()
            .await
            .map_err(request(format!("address {address}/{prefix} on {ifname}")))?;
        if let Some(v6) = &v6 {
            self.add_address6(index, v6.address, v6.prefix)
                .await
                .map_err(request(format!(
                    "address {}/{} on {ifname}",
                    v6.address, v6.prefix
                )))?;
        }
        self.set_up(index, ifname).await?;
        if let Some(gw) = v6.and_then(|v| v.gateway) {
            let route = RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build();
            match self.handle.route().add(route).execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(request(format!("default route via {gw}"))(e)),
            }
        }
        if let Some(gw) = gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(index)
                .build();
            match self.handle.route().add(route).execute().await {
                Ok(()) => {}
                // A second network: the first one's default route stays.
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(request(format!("default route via {gw}"))(e)),
            }
        }
        Ok(())
    }

    /// The names of the links in this namespace.
    pub async fn link_names(&self) -> Result<Vec<String>, NetlinkError> {
        let mut links = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(link) = links.try_next().await.map_err(request("list links"))? {
            for attr in link.attributes {
                if let LinkAttribute::IfName(name) = attr {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }
}

/// A container's IPv6 address on one interface, and the gateway of its
/// default route (none on an internal network).
#[derive(Clone, Copy, Debug)]
pub struct Addr6 {
    pub address: Ipv6Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv6Addr>,
}

/// Runs `f` on a new thread that first entered the namespace at `path`
/// (or, with `create`, made a new one and bound it there).
fn in_namespace<T: Send + 'static>(
    path: &Path,
    create: bool,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, NetlinkError> {
    let owned = path.to_path_buf();
    let what = if create {
        "create network namespace"
    } else {
        "enter network namespace"
    };
    let err = |source| NetlinkError::Namespace {
        what,
        path: path.to_path_buf(),
        source,
    };
    let joined = std::thread::spawn(move || -> io::Result<T> {
        if create {
            std::fs::File::create(&owned)?;
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
            let bound = nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &owned,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            );
            if let Err(e) = bound {
                let _ = std::fs::remove_file(&owned);
                return Err(e.into());
            }
        } else {
            let ns = std::fs::File::open(&owned)?;
            nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)?;
        }
        f()
    })
    .join();
    match joined {
        Ok(result) => result.map_err(err),
        Err(_) => Err(err(io::Error::other("the namespace thread panicked"))),
    }
}

fn route_socket() -> io::Result<OwnedFd> {
    let socket = Socket::new(rtnetlink::sys::protocols::NETLINK_ROUTE)?;
    // SAFETY: the fd was just released by the socket, which no longer owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(socket.into_raw_fd()) })
}

/// Makes a network namespace bound at `path`; a netlink connection in it
/// and an open fd of it.
pub fn create_namespace(path: &Path) -> Result<(Netlink, OwnedFd), NetlinkError> {
    let fd = in_namespace(path, true, route_socket)?;
    let ns = open_ns(path)?;
    Ok((Netlink::from_fd(fd)?, ns))
}

/// A netlink connection in the namespace bound at `path`, and its fd.
pub fn enter_namespace(path: &Path) -> Result<(Netlink, OwnedFd), NetlinkError> {
    let fd = in_namespace(path, false, route_socket)?;
    let ns = open_ns(path)?;
    Ok((Netlink::from_fd(fd)?, ns))
}

fn open_ns(path: &Path) -> Result<OwnedFd, NetlinkError> {
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| NetlinkError::Namespace {
            what: "open network namespace",
            path: path.to_path_buf(),
            source,
        })
}

/// Unbinds and removes the namespace at `path` (the kernel frees it, and
/// the veths in it, once nothing else holds it); a missing one is no error.
pub fn remove_namespace(path: &Path) -> Result<(), NetlinkError> {
    let err = |source| NetlinkError::Namespace {
        what: "remove network namespace",
        path: path.to_path_buf(),
        source,
    };
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(err(e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Turns on IPv6 forwarding in the daemon's namespace (once a network
/// with IPv6 exists).
pub fn enable_forwarding6() -> io::Result<()> {
    let path = "/proc/sys/net/ipv6/conf/all/forwarding";
    if std::fs::read_to_string(path)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1")
}

/// Turns on IPv4 forwarding in the daemon's namespace.
pub fn enable_forwarding() -> io::Result<()> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path)?.trim() == "1" {
        return Ok(());
    }
    std::fs::write(path, "1")
}
