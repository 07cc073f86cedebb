//! `linux.netDevices` (runtime-spec 1.3): host network interfaces moved
//! into the container's network namespace, renamed on the way, with their
//! permanent global addresses kept and the link set up, as runc 1.3 does.
//!
//! Spoken over rtnetlink directly (a few fixed messages, no library). The
//! runtime moves each device once the init is in its namespaces, before
//! `create` returns. Nothing moves them back: the spec says the runtime
//! MUST NOT ("Namespace Lifecycle and Container Termination"), and runc
//! does not. When the container's network namespace goes away, the kernel
//! returns physical devices to the host and destroys virtual ones (veth,
//! dummy, …); a namespace joined by path keeps them, for its owner to
//! manage.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{self, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol};
use oci_spec::runtime::{Linux, LinuxNamespaceType, LinuxNetDevice};

#[derive(Debug, thiserror::Error)]
pub enum NetDevError {
    #[error("move netDevice {name} to the container's network namespace: {action}: {source}")]
    Move {
        name: String,
        action: String,
        source: io::Error,
    },
}

// rtnetlink(7) and netlink(7) numbers.
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const IFLA_IFNAME: u16 = 3;
const IFLA_NET_NS_FD: u16 = 28;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_PERMANENT: u32 = 0x80;
const RT_SCOPE_UNIVERSE: u8 = 0;
const IFF_UP: u32 = 0x1;
/// The longest interface name (IFNAMSIZ less the NUL).
const MAX_NAME: usize = 15;

/// runc's rules for `linux.netDevices`: a network namespace of the
/// container's own to move them into, and valid interface names.
pub fn check_net_devices(linux: &Linux) -> Result<(), String> {
    let Some(devices) = linux.net_devices().as_ref().filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    let has_netns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::Network);
    if !has_netns {
        return Err("unable to move network devices without a NET namespace".into());
    }
    for (name, dev) in devices {
        for n in std::iter::once(name.as_str()).chain(dev.name().as_deref()) {
            if !valid_name(n) {
                return Err(format!("invalid network device name {n:?}"));
            }
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name.contains(['/', ':'])
        && !name.chars().any(char::is_whitespace)
}

/// Moves each device of `linux.netDevices` into the network namespace of
/// process `pid` (the container's init).
pub fn move_devices(
    pid: i32,
    devices: &HashMap<String, LinuxNetDevice>,
) -> Result<(), NetDevError> {
    if devices.is_empty() {
        return Ok(());
    }
    let mut names: Vec<_> = devices.iter().collect();
    names.sort_by(|a, b| a.0.cmp(b.0));
    let netns_path = format!("/proc/{pid}/ns/net");
    for (name, dev) in names {
        let fail = |action: &str| {
            let name = name.clone();
            let action = action.to_string();
            move |source| NetDevError::Move {
                name,
                action,
                source,
            }
        };
        let netns = File::open(&netns_path)
            .map(OwnedFd::from)
            .map_err(fail(&format!("open {netns_path}")))?;
        let new_name = dev
            .name()
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(name.as_str());
        let mut host = Netlink::open().map_err(fail("open a netlink socket"))?;
        let index = host
            .link_index(name)
            .map_err(fail("find the link on the host"))?;
        let mut inside = Netlink::open_in(&netns).map_err(fail("open a netlink socket inside"))?;
        // The kernel would move the link before refusing the taken name,
        // and the link would be lost with the namespace: check first. A
        // `%d` template is the kernel's to fill in.
        if !new_name.contains("%d") && inside.link_index(new_name).is_ok() {
            return Err(fail(&format!(
                "a device named {new_name} already exists in the container"
            ))(io::Error::from_raw_os_error(libc::EEXIST)));
        }
        // Down while its attributes change, as runc does.
        host.set_up(index, false)
            .map_err(fail("set the link down"))?;
        let addresses = host.addresses(index).map_err(fail("list its addresses"))?;
        host.move_link(index, new_name, &netns)
            .map_err(fail("move and rename the link"))?;
        let index = if new_name.contains("%d") {
            inside.get_link(index, None)
        } else {
            inside.link_index(new_name)
        }
        .map_err(fail("find the moved link"))?;
        for addr in &addresses {
            inside
                .add_address(index, addr)
                .map_err(fail("restore an address"))?;
        }
        inside
            .set_up(index, true)
            .map_err(fail("set the link up"))?;
        tracing::debug!(device = %name, new_name, pid, "network device moved");
    }
    Ok(())
}

/// A permanent global address of a link, as the kernel listed it.
struct Address {
    family: u8,
    prefix_len: u8,
    local: Option<Vec<u8>>,
    address: Option<Vec<u8>>,
}

/// A NETLINK_ROUTE socket with a sequence counter.
struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, typ: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&typ.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(align4(buf.len()), 0);
}

/// An ifinfomsg: family, pad, type, index, flags, change.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&change.to_ne_bytes());
    b
}

/// The attributes of a message body after its fixed header of `skip` bytes.
fn attrs(body: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = align4(skip);
    while at + 4 <= body.len() {
        let len = u16::from_ne_bytes([body[at], body[at + 1]]) as usize;
        let typ = u16::from_ne_bytes([body[at + 2], body[at + 3]]) & 0x3fff;
        if len < 4 || at + len > body.len() {
            break;
        }
        out.push((typ, &body[at + 4..at + len]));
        at += align4(len);
    }
    out
}

fn name_bytes(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.push(0);
    v
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            socket::SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Netlink { fd, seq: 0 })
    }

    /// A socket in the network namespace `netns` (a socket stays in the
    /// namespace it was made in): we step in, make it, and step back.
    fn open_in(netns: &OwnedFd) -> io::Result<Netlink> {
        let own = File::open("/proc/self/ns/net").map(OwnedFd::from)?;
        setns(netns.as_fd(), CloneFlags::CLONE_NEWNET)?;
        let made = Netlink::open();
        setns(own.as_fd(), CloneFlags::CLONE_NEWNET)?;
        made
    }

    /// Sends one request and collects the bodies of the replies of type
    /// `want` until the kernel acknowledges it, ends the dump or refuses.
    fn request(
        &mut self,
        typ: u16,
        flags: u16,
        body: &[u8],
        want: u16,
    ) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&typ.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        socket::send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let acked = flags & NLM_F_ACK != 0;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut at = 0;
            while at + 16 <= n {
                let len =
                    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                let mtype = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let seq =
                    u32::from_ne_bytes([buf[at + 8], buf[at + 9], buf[at + 10], buf[at + 11]]);
                if len < 16 || at + len > n {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "short netlink message",
                    ));
                }
                let payload = &buf[at + 16..at + len];
                at += align4(len);
                if seq != self.seq {
                    continue;
                }
                match mtype {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(-libc::EIO);
                        if code < 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(out);
                    }
                    NLMSG_DONE => return Ok(out),
                    t if t == want => {
                        out.push(payload.to_vec());
                        if !dump && !acked {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn link_index(&mut self, name: &str) -> io::Result<i32> {
        self.get_link(0, Some(name))
    }

    /// The index of the link named `name`, or of index `index` (whose name
    /// the kernel chose from a `%d` template).
    fn get_link(&mut self, index: i32, name: Option<&str>) -> io::Result<i32> {
        let mut body = ifinfomsg(index, 0, 0);
        if let Some(name) = name {
            push_attr(&mut body, IFLA_IFNAME, &name_bytes(name));
        }
        let replies = self.request(RTM_GETLINK, 0, &body, RTM_NEWLINK)?;
        replies
            .first()
            .and_then(|r| r.get(4..8))
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
    }

    fn set_up(&mut self, index: i32, up: bool) -> io::Result<()> {
        let body = ifinfomsg(index, if up { IFF_UP } else { 0 }, IFF_UP);
        self.request(RTM_NEWLINK, NLM_F_ACK, &body, 0).map(drop)
    }

    fn move_link(&mut self, index: i32, new_name: &str, netns: &OwnedFd) -> io::Result<()> {
        let mut body = ifinfomsg(index, 0, 0);
        push_attr(&mut body, IFLA_IFNAME, &name_bytes(new_name));
        push_attr(
            &mut body,
            IFLA_NET_NS_FD,
            &(netns.as_raw_fd() as u32).to_ne_bytes(),
        );
        self.request(RTM_NEWLINK, NLM_F_ACK, &body, 0).map(drop)
    }

    /// The link's permanent addresses of global scope: what the spec says
    /// to keep (the kernel drops every address of a moved link).
    fn addresses(&mut self, index: i32) -> io::Result<Vec<Address>> {
        let body = vec![0u8; 8]; // ifaddrmsg, AF_UNSPEC: every family
        let replies = self.request(RTM_GETADDR, NLM_F_DUMP, &body, RTM_NEWADDR)?;
        let mut out = Vec::new();
        for r in replies {
            if r.len() < 8 {
                continue;
            }
            let ifindex = u32::from_ne_bytes([r[4], r[5], r[6], r[7]]);
            if ifindex as i32 != index || r[3] != RT_SCOPE_UNIVERSE {
                continue;
            }
            let mut flags = u32::from(r[2]);
            let mut addr = Address {
                family: r[0],
                prefix_len: r[1],
                local: None,
                address: None,
            };
            for (typ, data) in attrs(&r, 8) {
                match typ {
                    IFA_LOCAL => addr.local = Some(data.to_vec()),
                    IFA_ADDRESS => addr.address = Some(data.to_vec()),
                    IFA_FLAGS if data.len() == 4 => {
                        flags = u32::from_ne_bytes([data[0], data[1], data[2], data[3]])
                    }
                    _ => {}
                }
            }
            if flags & IFA_F_PERMANENT != 0 {
                out.push(addr);
            }
        }
        Ok(out)
    }

    fn add_address(&mut self, index: i32, addr: &Address) -> io::Result<()> {
        let mut body = vec![addr.family, addr.prefix_len, 0, RT_SCOPE_UNIVERSE];
        body.extend_from_slice(&(index as u32).to_ne_bytes());
        if let Some(local) = &addr.local {
            push_attr(&mut body, IFA_LOCAL, local);
        }
        if let Some(address) = &addr.address {
            push_attr(&mut body, IFA_ADDRESS, address);
        }
        self.request(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body, 0)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_runc_rules() {
        for ok in ["eth0", "dummy0", "a", "ctr_eth0", "x%d", "abcdefghijklmno"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "abcdefghijklmnop"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn devices_need_a_network_namespace() {
        let linux: Linux = serde_json::from_value(serde_json::json!({
            "netDevices": {"dummy0": {"name": "ctr0"}}
        }))
        .unwrap();
        assert!(check_net_devices(&linux)
            .unwrap_err()
            .contains("NET namespace"));
        let linux: Linux = serde_json::from_value(serde_json::json!({
            "namespaces": [{"type": "network"}],
            "netDevices": {"dummy0": {"name": "ctr0"}}
        }))
        .unwrap();
        assert!(check_net_devices(&linux).is_ok());
        let linux: Linux = serde_json::from_value(serde_json::json!({
            "namespaces": [{"type": "network"}],
            "netDevices": {"dummy0": {"name": "bad/name"}}
        }))
        .unwrap();
        assert!(check_net_devices(&linux).is_err());
    }

    #[test]
    fn messages_are_laid_out_as_the_kernel_reads_them() {
        let mut body = ifinfomsg(7, IFF_UP, IFF_UP);
        assert_eq!(body.len(), 16);
        push_attr(&mut body, IFLA_IFNAME, &name_bytes("eth0"));
        // 4 bytes of header, "eth0\0", padded to 12.
        assert_eq!(body.len(), 16 + 12);
        let parsed = attrs(&body, 16);
        assert_eq!(parsed, vec![(IFLA_IFNAME, &b"eth0\0"[..])]);
    }
}
