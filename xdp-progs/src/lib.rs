//! kxdp's XDP steering program and its loader.
//!
//! The program (`src/bpf/kxdp.bpf.c`, built by `build.rs` with clang through libbpf-cargo)
//! sends to the AF_XDP socket of the receiving queue only the packets that belong to the
//! dataplane and passes the rest to the kernel; see its header comment. This crate embeds the
//! object, loads it with libbpf-rs ([`Steering::load`]), fills its maps from a
//! [`Snapshot`] ([`Steering::sync`]) and reads its counters ([`Steering::stats`]).
//!
//! Every struct shared with the C side is mirrored here with the same layout, written into the
//! maps as bytes; `tests::shared_layouts_match_the_object_btf` compares both against the
//! object's BTF, so a change on one side alone fails the build's tests.
//!
//! The loader's building blocks ([`attach_program`], [`percpu_sum`], [`bpf`]) are public for
//! other XDP objects loaded beside this one: the perf harness's generator and sink.

pub mod gso;
pub mod handover;
pub mod runtime;
pub mod state;
pub mod worker;
pub mod xsk;

use std::net::Ipv4Addr;

use kxdp_dataplane::tables::{FrontendKind, InterfaceRole, Snapshot};
use std::os::fd::AsFd;

use libbpf_rs::{MapCore, MapFlags, Object, ObjectBuilder, ProgramInput};

/// How the program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver, before an skb exists: the fast path.
    Native,
    /// On the skb, for drivers without XDP support: correct, slower.
    Generic,
    /// On the NIC.
    Offloaded,
    /// Several programs in several modes (not kxdp's doing).
    Multiple,
}

/// The program attached to one interface. A link attachment ends when it is dropped (or the
/// process exits); a lasting one stays until [`Attachment::detach`] or a successor replaces it.
#[derive(Debug)]
pub struct Attachment {
    hold: Hold,
    /// The mode the kernel attached it in.
    pub mode: XdpMode,
}

#[derive(Debug)]
enum Hold {
    /// Held by a BPF link: detached when the link is dropped.
    Link(libbpf_rs::Link),
    /// Attached through netlink: stays until detached or replaced.
    Lasting {
        ifindex: u32,
        prog_id: u32,
        prog: std::os::fd::OwnedFd,
    },
}

impl Attachment {
    /// Take the program off the interface: end the link, or, for a lasting attachment, detach
    /// it if it is still the program there (a successor's is left alone).
    pub fn detach(self) -> Result<(), XdpError> {
        match self.hold {
            Hold::Link(link) => {
                drop(link);
                Ok(())
            }
            Hold::Lasting {
                ifindex,
                prog_id,
                prog,
            } => {
                let index = i32::try_from(ifindex).expect("ifindex fits in i32");
                let xdp = libbpf_rs::Xdp::new(prog.as_fd());
                let there = xdp
                    .query_id(index, libbpf_rs::XdpFlags::NONE)
                    .map_err(bpf(format!("querying interface {ifindex}")))?;
                if there != prog_id {
                    return Ok(());
                }
                match xdp.detach(index, libbpf_rs::XdpFlags::NONE) {
                    // The interface is gone, and the program with it.
                    Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
                    r => r.map_err(bpf(format!("detaching from interface {ifindex}"))),
                }
            }
        }
    }
}

/// The compiled program.
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/kxdp.bpf.o"));

/// Path of the compiled object on the build machine (for tests reading its BTF).
pub const OBJECT_PATH: &str = concat!(env!("OUT_DIR"), "/kxdp.bpf.o");

/// The program's section name.
pub const PROGRAM: &str = "kxdp_steer";

/// Why the program could not be loaded, filled, attached or run.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// libbpf refused (no CAP_BPF / CAP_NET_ADMIN, memlock too low, verifier...). Only a
    /// refusal for want of privilege says how to run.
    #[error("{what}: {source}{}", privilege_hint(source))]
    Bpf {
        /// What was being done.
        what: String,
        /// libbpf's error.
        source: libbpf_rs::Error,
    },
    /// The interface's XDP hook already holds a program that is not ours (the kernel answers
    /// EBUSY or EEXIST to the attach); it has to go before kxdp can attach.
    #[error("interface {ifindex} already has another XDP program attached: {program}")]
    Occupied {
        /// The interface.
        ifindex: u32,
        /// The program there.
        program: ForeignProgram,
    },
    /// The object lacks a map or program this crate expects.
    #[error("the XDP object has no {0}")]
    Missing(&'static str),
}

fn privilege_hint(e: &libbpf_rs::Error) -> &'static str {
    match e.kind() {
        libbpf_rs::ErrorKind::PermissionDenied => {
            " (loading XDP needs root or CAP_BPF and CAP_NET_ADMIN)"
        }
        _ => "",
    }
}

/// A program attached to an interface's XDP hook by someone else, as the kernel describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignProgram {
    /// Its BPF program id (`bpftool prog show id N`).
    pub id: u32,
    /// Its name (the kernel keeps 15 characters), empty if it could not be read.
    pub name: String,
    /// The mode it runs in.
    pub mode: XdpMode,
    /// The BPF link that holds it, if one does; without one it was attached through netlink,
    /// as `ip link set dev IFACE xdp obj FILE` does.
    pub link: Option<u32>,
}

impl ForeignProgram {
    /// How an operator removes it from interface `interface`.
    pub fn how_to_remove(&self, interface: &str) -> String {
        match self.link {
            Some(link) => format!(
                "it is held by BPF link {link} of a running process: stop that process, or \
                 `bpftool link detach id {link}`"
            ),
            None => {
                let mode = match self.mode {
                    XdpMode::Native => "xdpdrv",
                    XdpMode::Generic => "xdpgeneric",
                    XdpMode::Offloaded => "xdpoffload",
                    XdpMode::Multiple => "xdp",
                };
                format!("remove it with `ip link set dev {interface} {mode} off`")
            }
        }
    }
}

impl std::fmt::Display for ForeignProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.name.is_empty() {
            "(unnamed)"
        } else {
            &self.name
        };
        let mode = match self.mode {
            XdpMode::Native => "native mode",
            XdpMode::Generic => "generic mode",
            XdpMode::Offloaded => "offloaded",
            XdpMode::Multiple => "several modes",
        };
        write!(f, "id {}, name {name}, {mode}", self.id)
    }
}

/// The [`XdpError::Bpf`] for a libbpf call that failed while doing `what`, in the shape
/// `map_err` takes: `.map_err(bpf("loading the XDP program"))`.
pub fn bpf(what: impl Into<String>) -> impl FnOnce(libbpf_rs::Error) -> XdpError {
    let what = what.into();
    move |source| XdpError::Bpf { what, source }
}

/// `enum kxdp_if_role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum IfRole {
    /// Not managed: everything passes.
    Unmanaged = 0,
    /// The uplink: only the dataplane's traffic is stolen.
    Uplink = 1,
    /// A pod's veth: everything is the dataplane's.
    Pod = 2,
    /// The host interface: everything is the dataplane's.
    Host = 3,
}

impl From<InterfaceRole> for IfRole {
    fn from(role: InterfaceRole) -> Self {
        match role {
            InterfaceRole::Uplink => IfRole::Uplink,
            InterfaceRole::Host => IfRole::Host,
            InterfaceRole::Pod { .. } => IfRole::Pod,
        }
    }
}

/// `struct kxdp_iface`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct IfaceValue {
    /// [`IfRole`] as a number.
    pub role: u32,
    /// The interface's sockets sit at `xsks[xsk_base + rx queue]`.
    pub xsk_base: u32,
}

/// `struct kxdp_config`. Ports in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ConfigValue {
    /// VXLAN UDP port.
    pub vxlan_port: u16,
    /// First masquerade port.
    pub masq_port_min: u16,
    /// Last masquerade port.
    pub masq_port_max: u16,
    /// Zero.
    pub pad: u16,
}

/// `struct kxdp_frontend`: address in network order, port in host order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct FrontendKey {
    /// The address's octets, as the packet carries them.
    pub addr: [u8; 4],
    /// The port.
    pub port: u16,
    /// IP protocol.
    pub proto: u8,
    /// Zero.
    pub pad: u8,
}

impl IfaceValue {
    fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.role.to_ne_bytes());
        b[4..8].copy_from_slice(&self.xsk_base.to_ne_bytes());
        b
    }
}

impl ConfigValue {
    fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..2].copy_from_slice(&self.vxlan_port.to_ne_bytes());
        b[2..4].copy_from_slice(&self.masq_port_min.to_ne_bytes());
        b[4..6].copy_from_slice(&self.masq_port_max.to_ne_bytes());
        b[6..8].copy_from_slice(&self.pad.to_ne_bytes());
        b
    }
}

impl FrontendKey {
    /// The key for `addr:port/proto`.
    pub fn new(addr: Ipv4Addr, port: u16, proto: u8) -> Self {
        FrontendKey {
            addr: addr.octets(),
            port,
            proto,
            pad: 0,
        }
    }

    fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.addr);
        b[4..6].copy_from_slice(&self.port.to_ne_bytes());
        b[6] = self.proto;
        b
    }
}

kxdp_dataplane::counter_list! {
    /// Why the XDP program steered a packet to an AF_XDP socket, dropped it (VXLAN from no known
    /// node) or passed it to the kernel:
    /// `enum kxdp_xdp_stat` in `src/bpf/kxdp.h`, whose enumerators are `KXDP_STAT_` and these
    /// names in capitals, in this order (checked against the object's BTF by a test).
    pub enum XdpDecision {
        XskPod = 0 => ("xsk_pod", "steered: from a pod or the host interface, all of it the dataplane's"),
        XskVxlan = 1 => ("xsk_vxlan", "steered: VXLAN to this node from a known node"),
        XskService = 2 => ("xsk_service", "steered: to a service frontend (ClusterIP, load-balancer or external IP, NodePort)"),
        XskMasqReply = 3 => ("xsk_masq_reply", "steered: to this node in the masquerade port range (replies to masqueraded flows)"),
        NoSocket = 4 => ("no_socket", "the dataplane's, but no AF_XDP socket on the receiving queue (no agent runs): dropped"),
        PassUnmanaged = 5 => ("pass_unmanaged", "passed: an interface kxdp does not manage"),
        PassNotIpv4 = 6 => ("pass_not_ipv4", "passed: not IPv4 (ARP, IPv6, LLDP...)"),
        PassMalformed = 7 => ("pass_malformed", "passed: truncated, IPv4 options or a fragment; the kernel decides"),
        DropUnknownPeer = 8 => ("drop_unknown_peer", "dropped: VXLAN to this node from an address that is no known node (the underlay is closed)"),
        PassNotOurs = 9 => ("pass_not_ours", "passed: IPv4 on the uplink that is not the dataplane's"),
    }
}

/// The XDP program's decision counters ([`XdpDecision`]), readable from any thread.
#[derive(Debug)]
pub struct Decisions {
    map: libbpf_rs::MapHandle,
}

impl Decisions {
    /// The counters, summed over CPUs, by [`XdpDecision`] number.
    pub fn read(&self) -> Result<[u64; XdpDecision::COUNT], XdpError> {
        let mut out = [0u64; XdpDecision::COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = percpu_sum(&self.map, i as u32)?;
        }
        Ok(out)
    }
}

/// The loaded program and its maps.
#[derive(Debug)]
pub struct Steering {
    obj: Object,
    /// The `frontends` map's keys, as last synced, so a sync writes only the difference.
    frontends: std::cell::RefCell<std::collections::HashSet<[u8; 8]>>,
}

/// XDP's verdicts, as `BPF_PROG_TEST_RUN` reports them.
pub mod action {
    /// `XDP_DROP`.
    pub const DROP: u32 = 1;
    /// `XDP_PASS`.
    pub const PASS: u32 = 2;
    /// `XDP_REDIRECT`.
    pub const REDIRECT: u32 = 4;
}

impl Steering {
    /// Load the program into the kernel (not attached to any interface yet).
    pub fn load() -> Result<Steering, XdpError> {
        let open = ObjectBuilder::default()
            .open_memory(OBJECT)
            .map_err(bpf("opening the XDP object"))?;
        let obj = open.load().map_err(bpf("loading the XDP program"))?;
        Ok(Steering {
            obj,
            frontends: Default::default(),
        })
    }

    fn update(&self, map: &'static str, key: &[u8], value: &[u8]) -> Result<(), XdpError> {
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == map)
            .ok_or(XdpError::Missing(map))?;
        m.update(key, value, MapFlags::ANY)
            .map_err(bpf(format!("updating map {map}")))
    }

    /// Make the keys of set-like `map` (value 1) exactly `wanted`: add the missing ones
    /// first, then remove the stale ones, so a key that stays is never absent, even briefly.
    fn replace_keys(&self, map: &'static str, wanted: &[Vec<u8>]) -> Result<(), XdpError> {
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == map)
            .ok_or(XdpError::Missing(map))?;
        let current: std::collections::HashSet<Vec<u8>> = m.keys().collect();
        for k in wanted.iter().filter(|k| !current.contains(*k)) {
            m.update(k, &[1], MapFlags::ANY)
                .map_err(bpf(format!("updating map {map}")))?;
        }
        for k in current.iter().filter(|k| !wanted.contains(k)) {
            m.delete(k).map_err(bpf(format!("updating map {map}")))?;
        }
        Ok(())
    }

    /// Register an AF_XDP socket (its file descriptor) at XSKMAP slot `slot`: the interface's
    /// `xsk_base` plus the queue it is bound to.
    pub fn register_socket(&self, slot: u32, fd: i32) -> Result<(), XdpError> {
        self.update("xsks", &slot.to_ne_bytes(), &fd.to_ne_bytes())
    }

    /// Say what interface `ifindex` is, and where its sockets sit in the XSKMAP
    /// (`xsk_base + queue`: each interface owns [`runtime::MAX_QUEUES`] slots from its base).
    pub fn set_interface(&self, ifindex: u32, role: IfRole, xsk_base: u32) -> Result<(), XdpError> {
        let value = IfaceValue {
            role: role as u32,
            xsk_base,
        };
        self.update("ifaces", &ifindex.to_ne_bytes(), &value.to_bytes())
    }

    /// Forget interface `ifindex` (it is no longer served, or gone): its packets pass.
    pub fn clear_interface(&self, ifindex: u32) -> Result<(), XdpError> {
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == "ifaces")
            .ok_or(XdpError::Missing("ifaces"))?;
        match m.delete(&ifindex.to_ne_bytes()) {
            Ok(()) => Ok(()),
            // Not there: nothing to forget.
            Err(e) if e.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(bpf("updating map ifaces")(e)),
        }
    }

    /// Set the VXLAN port and the masquerade port range.
    pub fn set_config(
        &self,
        vxlan_port: u16,
        masquerade_ports: std::ops::RangeInclusive<u16>,
    ) -> Result<(), XdpError> {
        let config = ConfigValue {
            vxlan_port,
            masq_port_min: *masquerade_ports.start(),
            masq_port_max: *masquerade_ports.end(),
            pad: 0,
        };
        self.update("config", &0u32.to_ne_bytes(), &config.to_bytes())
    }

    /// Replace the node's own addresses (addresses that stay are never absent meanwhile).
    pub fn set_node_ips(&self, ips: &[Ipv4Addr]) -> Result<(), XdpError> {
        let keys: Vec<Vec<u8>> = ips.iter().map(|ip| ip.octets().to_vec()).collect();
        self.replace_keys("node_ips", &keys)
    }

    /// Replace the underlay addresses VXLAN is accepted from (peers that stay are never
    /// absent meanwhile, so their VXLAN never falls to the kernel during an update).
    pub fn set_vxlan_peers(&self, peers: &[Ipv4Addr]) -> Result<(), XdpError> {
        let keys: Vec<Vec<u8>> = peers.iter().map(|ip| ip.octets().to_vec()).collect();
        self.replace_keys("vxlan_peers", &keys)
    }

    /// Fill the maps from a snapshot: config, node addresses, VXLAN peers, frontends, so the
    /// maps say exactly what the snapshot says. Frontends are diffed against the last sync:
    /// new ones are added before stale ones are removed, and unchanged ones are not touched,
    /// so a service's traffic is never passed to the kernel during an update, and a change to
    /// one service among thousands costs a few map writes.
    pub fn sync(&self, snap: &Snapshot) -> Result<(), XdpError> {
        let node = &snap.node;
        self.set_config(node.vxlan_port, node.masquerade_ports.clone())?;
        self.set_node_ips(&node.node_ips)?;
        let peers: Vec<Ipv4Addr> = snap.remote_nodes().iter().map(|r| r.node.node_ip).collect();
        self.set_vxlan_peers(&peers)?;
        let mut wanted = std::collections::HashSet::new();
        for port in snap.services.ports() {
            let spec = port.spec();
            for fe in &spec.frontends {
                let addrs: &[Ipv4Addr] = match (fe.kind, &fe.ip) {
                    (FrontendKind::NodePort, _) | (_, None) => node.nodeport_ips(),
                    (_, Some(ip)) => std::slice::from_ref(ip),
                };
                for addr in addrs {
                    wanted.insert(FrontendKey::new(*addr, fe.port, spec.proto).to_bytes());
                }
            }
        }
        let mut current = self.frontends.borrow_mut();
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == "frontends")
            .ok_or(XdpError::Missing("frontends"))?;
        for key in wanted.difference(&current) {
            m.update(key, &[1], MapFlags::ANY)
                .map_err(bpf("updating map frontends"))?;
        }
        for key in current.difference(&wanted) {
            m.delete(key).map_err(bpf("clearing map frontends"))?;
        }
        *current = wanted;
        Ok(())
    }

    /// Attach the program to interface `ifindex` of the calling thread's network namespace:
    /// in native (driver) mode where the driver supports XDP, else in generic mode, which the
    /// kernel falls back to by itself; [`Attachment::mode`] says which it got. The program
    /// stays attached until the attachment is dropped, or the process exits (it is a BPF
    /// link, so a crashed agent leaves nothing behind).
    pub fn attach(&self, ifindex: u32) -> Result<Attachment, XdpError> {
        attach_program(&self.obj, PROGRAM, ifindex)
    }

    /// Attach the program to interface `ifindex` so that it stays when the process ends, in
    /// place of a predecessor's ([`attach_lasting`]): with no socket to deliver to, it drops
    /// the dataplane's traffic, so the node's kernel never answers for it.
    pub fn attach_lasting(
        &self,
        ifindex: u32,
        predecessors: &[u32],
    ) -> Result<Attachment, XdpError> {
        attach_lasting(&self.obj, PROGRAM, ifindex, predecessors)
    }

    /// The program's id, as `bpftool prog show` and `ip link` name it.
    pub fn program_id(&self) -> Result<u32, XdpError> {
        let prog = self
            .obj
            .progs()
            .find(|p| p.name() == PROGRAM)
            .ok_or(XdpError::Missing("program kxdp_steer"))?;
        program_info(prog.as_fd())
            .map(|(id, _)| id)
            .ok_or(XdpError::Missing("the program's id"))
    }

    /// The counters, summed over CPUs, by [`XdpDecision`] number.
    pub fn stats(&self) -> Result<[u64; XdpDecision::COUNT], XdpError> {
        self.decisions()?.read()
    }

    /// A handle on the program's decision counters that any thread can read while the program
    /// runs (its own descriptor of the `stats` map).
    pub fn decisions(&self) -> Result<Decisions, XdpError> {
        let m = self
            .obj
            .maps()
            .find(|m| m.name() == "stats")
            .ok_or(XdpError::Missing("stats"))?;
        let map = libbpf_rs::MapHandle::try_from(&m).map_err(bpf("duplicating map stats"))?;
        Ok(Decisions { map })
    }

    /// Run the program once on `frame` as if received on `ifindex` queue 0
    /// (`BPF_PROG_TEST_RUN`); returns the XDP action. Nothing is attached or sent.
    pub fn test_run(&self, frame: &[u8], ifindex: u32) -> Result<u32, XdpError> {
        let prog = self
            .obj
            .progs_mut()
            .find(|p| p.name() == PROGRAM)
            .ok_or(XdpError::Missing("program kxdp_steer"))?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex. The kernel wants data_end equal to the frame's length (offsets
        // from data, which is 0) and reads the interface from ingress_ifindex.
        let len = u32::try_from(frame.len()).expect("a frame fits in u32");
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&len.to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut data = frame.to_vec();
        let input = ProgramInput {
            data_in: Some(frame),
            data_out: Some(&mut data),
            context_in: Some(&mut ctx),
            repeat: 1,
            ..Default::default()
        };
        let out = prog
            .test_run(input)
            .map_err(bpf("running the XDP program"))?;
        Ok(out.return_value)
    }
}

/// Program `name` of `obj`, and `ifindex` as libbpf's XDP calls take it.
fn program_for<'o>(
    obj: &'o Object,
    name: &'static str,
    ifindex: u32,
) -> Result<(libbpf_rs::ProgramMut<'o>, i32), XdpError> {
    let prog = obj
        .progs_mut()
        .find(|p| p.name() == name)
        .ok_or(XdpError::Missing(name))?;
    Ok((prog, i32::try_from(ifindex).expect("ifindex fits in i32")))
}

/// Attach program `name` of the loaded object `obj` to interface `ifindex` of the calling
/// thread's network namespace, natively where the driver supports XDP, else generically (the
/// kernel falls back by itself; [`Attachment::mode`] says which it got). The program stays
/// attached until the attachment is dropped or the process exits (a BPF link).
///
/// # Errors
/// [`XdpError::Missing`] if `obj` has no program `name`; [`XdpError::Occupied`] if another
/// program holds the interface's hook; [`XdpError::Bpf`] if the kernel refuses the attachment
/// otherwise, or the query of its mode.
pub fn attach_program(
    obj: &Object,
    name: &'static str,
    ifindex: u32,
) -> Result<Attachment, XdpError> {
    let (prog, index) = program_for(obj, name, ifindex)?;
    let query = || {
        libbpf_rs::Xdp::new(prog.as_fd())
            .query(index, libbpf_rs::XdpFlags::NONE)
            .map_err(bpf(format!("querying interface {ifindex}")))
    };
    let link = match prog.attach_xdp(index) {
        Ok(link) => link,
        Err(source) => {
            // The kernel refuses a link over any program already there (EBUSY, or EEXIST
            // when it runs in the other mode); libbpf-rs keeps the errno out of reach, so ask
            // the hook itself whether that is why.
            return Err(
                match query().ok().and_then(|q| foreign_program(ifindex, &q)) {
                    Some(program) => XdpError::Occupied { ifindex, program },
                    None => XdpError::Bpf {
                        what: format!("attaching {name} to interface {ifindex}"),
                        source,
                    },
                },
            );
        }
    };
    let mode = attach_mode(&query()?);
    Ok(Attachment {
        hold: Hold::Link(link),
        mode,
    })
}

/// Attach program `name` of `obj` to interface `ifindex` so that it outlives the process (a
/// netlink attachment, as `ip link set dev IFACE xdp` makes): it stays until
/// [`Attachment::detach`], and a later process's program replaces it in one step. A program
/// of the same name attached that way (a predecessor's, dropping what it cannot deliver: one
/// of `predecessors`, or one whose name says so) is replaced in one step, so no packet meets
/// an empty hook; any other program makes the interface [`XdpError::Occupied`]. Reading a
/// program's name takes CAP_SYS_ADMIN: without it, only `predecessors` are recognised.
pub fn attach_lasting(
    obj: &Object,
    name: &'static str,
    ifindex: u32,
    predecessors: &[u32],
) -> Result<Attachment, XdpError> {
    let (prog, index) = program_for(obj, name, ifindex)?;
    let xdp = libbpf_rs::Xdp::new(prog.as_fd());
    let query = || {
        xdp.query(index, libbpf_rs::XdpFlags::NONE)
            .map_err(bpf(format!("querying interface {ifindex}")))
    };
    let occupied = || {
        query()
            .ok()
            .and_then(|q| foreign_program(ifindex, &q))
            .map(|program| XdpError::Occupied { ifindex, program })
    };
    let there = xdp
        .query_id(index, libbpf_rs::XdpFlags::NONE)
        .map_err(bpf(format!("querying interface {ifindex}")))?;
    let attached = if there == 0 {
        xdp.attach(index, libbpf_rs::XdpFlags::UPDATE_IF_NOEXIST)
    } else if predecessors.contains(&there) || is_named(there, name) {
        // A netlink attachment over another replaces it atomically.
        xdp.attach(index, libbpf_rs::XdpFlags::NONE)
    } else {
        return Err(occupied().unwrap_or_else(|| XdpError::Bpf {
            what: format!("attaching {name} to interface {ifindex}"),
            source: libbpf_rs::Error::from(std::io::Error::from_raw_os_error(libc::EBUSY)),
        }));
    };
    if let Err(source) = attached {
        // A link holds what is there (the kernel will not replace it through netlink), or
        // someone attached meanwhile.
        return Err(occupied().unwrap_or(XdpError::Bpf {
            what: format!("attaching {name} to interface {ifindex}"),
            source,
        }));
    }
    let q = query()?;
    let prog_id = [q.prog_id, q.drv_prog_id, q.skb_prog_id]
        .into_iter()
        .find(|id| *id != 0)
        .unwrap_or(0);
    let prog = prog
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| XdpError::Bpf {
            what: format!("keeping program {name}"),
            source: libbpf_rs::Error::from(e),
        })?;
    Ok(Attachment {
        hold: Hold::Lasting {
            ifindex,
            prog_id,
            prog,
        },
        mode: attach_mode(&q),
    })
}

/// Whether program `id` is named `name` (false if its name cannot be read: that takes
/// CAP_SYS_ADMIN).
fn is_named(id: u32, name: &str) -> bool {
    libbpf_rs::Program::fd_from_id(id)
        .ok()
        .and_then(|fd| program_info(fd.as_fd()))
        .is_some_and(|(_, n)| n == name)
}

/// Detach kxdp's steering program from interface `ifindex` of the calling thread's namespace
/// if it is there (left by an agent that stopped, for its successor): one of `recorded` (the
/// last agents', from their state directory), or one named as kxdp's; whether it was.
/// Another program is left alone.
pub fn detach_lasting(ifindex: u32, recorded: &[u32]) -> Result<bool, XdpError> {
    let index = i32::try_from(ifindex).expect("ifindex fits in i32");
    // Querying and detaching read only the interface: any descriptor does for the builder
    // (without CAP_SYS_ADMIN there is no program's to be had).
    let any = std::fs::File::open("/dev/null").map_err(|e| XdpError::Bpf {
        what: "opening /dev/null".into(),
        source: libbpf_rs::Error::from(e),
    })?;
    let xdp = libbpf_rs::Xdp::new(any.as_fd());
    let id = xdp
        .query_id(index, libbpf_rs::XdpFlags::NONE)
        .map_err(bpf(format!("querying interface {ifindex}")))?;
    if id == 0 || !(recorded.contains(&id) || is_named(id, PROGRAM)) {
        return Ok(false);
    }
    xdp.detach(index, libbpf_rs::XdpFlags::NONE)
        .map_err(bpf(format!("detaching from interface {ifindex}")))?;
    Ok(true)
}

/// The id and name of the BPF program `fd` (the name 15 characters at most, as the kernel
/// keeps it). Needs no privilege beyond holding the descriptor.
fn program_info(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u32, String)> {
    use std::os::fd::AsRawFd;
    let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
    let mut len = core::mem::size_of_val(&info) as u32;
    // SAFETY: `info` is a bpf_prog_info of `len` bytes, which is all the kernel writes; the
    // pointers in it are zero, so it fills in nothing else.
    let rc = unsafe {
        libbpf_rs::libbpf_sys::bpf_obj_get_info_by_fd(
            fd.as_raw_fd(),
            (&mut info as *mut libbpf_rs::libbpf_sys::bpf_prog_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let bytes: Vec<u8> = info
        .name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Some((info.id, String::from_utf8(bytes).ok()?))
}

fn attach_mode(q: &libbpf_rs::libbpf_sys::bpf_xdp_query_opts) -> XdpMode {
    match u32::from(q.attach_mode) {
        libbpf_rs::libbpf_sys::XDP_ATTACHED_DRV => XdpMode::Native,
        libbpf_rs::libbpf_sys::XDP_ATTACHED_SKB => XdpMode::Generic,
        libbpf_rs::libbpf_sys::XDP_ATTACHED_HW => XdpMode::Offloaded,
        _ => XdpMode::Multiple,
    }
}

/// The program on interface `ifindex`'s hook as `q` reports it, with its name and the link
/// holding it (found among all programs and links: this needs the privilege attaching took).
fn foreign_program(
    ifindex: u32,
    q: &libbpf_rs::libbpf_sys::bpf_xdp_query_opts,
) -> Option<ForeignProgram> {
    let id = [q.prog_id, q.drv_prog_id, q.skb_prog_id, q.hw_prog_id]
        .into_iter()
        .find(|id| *id != 0)?;
    let name = libbpf_rs::query::ProgInfoIter::default()
        .find(|p| p.id == id)
        .map(|p| p.name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let link = libbpf_rs::query::LinkInfoIter::default()
        .find(|l| {
            l.prog_id == id
                && matches!(l.info, libbpf_rs::query::LinkTypeInfo::Xdp(ref x) if x.ifindex == ifindex)
        })
        .map(|l| l.id);
    Some(ForeignProgram {
        id,
        name,
        mode: attach_mode(q),
        link,
    })
}

/// Entry `key` of a per-CPU array map of u64 counters, summed over CPUs (a missing entry
/// counts as zero).
///
/// # Errors
/// [`XdpError::Bpf`] if the lookup fails.
pub fn percpu_sum(map: &impl MapCore, key: u32) -> Result<u64, XdpError> {
    let per_cpu = map
        .lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)
        .map_err(bpf(format!("reading {}", map.name().to_string_lossy())))?
        .unwrap_or_default();
    Ok(per_cpu
        .iter()
        .filter_map(|v| v.get(..8))
        .map(|v| u64::from_ne_bytes(v.try_into().expect("8 bytes")))
        .sum())
}

/// Move the calling thread into the network namespace `name` (as `ip netns` names it), so
/// that interface names and indexes, sockets and XDP attachments refer to that namespace.
/// Only this thread moves; the rest of the process stays where it was.
pub fn enter_netns(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: `ns` is an open namespace file for the duration of the call, and setns with
    // CLONE_NEWNET changes only the calling thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Pin the calling thread to CPU `core`, as a poll-mode worker is.
pub fn pin_current_thread(core: usize) -> std::io::Result<()> {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { core::mem::zeroed() };
    // SAFETY: CPU_SET writes bit `core` of `set`, which it bounds-checks against the set's size.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU the calling thread is running on.
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// The index of interface `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> std::io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libbpf_rs::btf::types::MemberAttr;
    use libbpf_rs::btf::types::{Enum, Struct};
    use libbpf_rs::{Btf, HasSize};

    fn member_offsets(btf: &Btf<'_>, name: &str) -> (usize, Vec<(String, u32)>) {
        let s: Struct<'_> = btf
            .type_by_name(name)
            .unwrap_or_else(|| panic!("struct {name} is not in the object's BTF"));
        let members = s
            .iter()
            .map(|m| {
                let offset = match m.attr {
                    MemberAttr::Normal { offset } | MemberAttr::BitField { offset, .. } => offset,
                };
                let name = m
                    .name
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (name, offset / 8)
            })
            .collect();
        (s.size(), members)
    }

    #[test]
    fn shared_layouts_match_the_object_btf() {
        use core::mem::{offset_of, size_of};
        let btf = Btf::from_path(OBJECT_PATH).expect("the object carries BTF");
        // (C struct, Rust size, Rust members with their offsets)
        type Layout = (&'static str, usize, Vec<(&'static str, usize)>);
        let cases: [Layout; 3] = [
            (
                "kxdp_iface",
                size_of::<IfaceValue>(),
                vec![
                    ("role", offset_of!(IfaceValue, role)),
                    ("xsk_base", offset_of!(IfaceValue, xsk_base)),
                ],
            ),
            (
                "kxdp_config",
                size_of::<ConfigValue>(),
                vec![
                    ("vxlan_port", offset_of!(ConfigValue, vxlan_port)),
                    ("masq_port_min", offset_of!(ConfigValue, masq_port_min)),
                    ("masq_port_max", offset_of!(ConfigValue, masq_port_max)),
                    ("pad", offset_of!(ConfigValue, pad)),
                ],
            ),
            (
                "kxdp_frontend",
                size_of::<FrontendKey>(),
                vec![
                    ("addr", offset_of!(FrontendKey, addr)),
                    ("port", offset_of!(FrontendKey, port)),
                    ("proto", offset_of!(FrontendKey, proto)),
                    ("pad", offset_of!(FrontendKey, pad)),
                ],
            ),
        ];
        for (name, rust_size, rust_members) in cases {
            let (c_size, c_members) = member_offsets(&btf, name);
            assert_eq!(c_size, rust_size, "size of struct {name}");
            let c: Vec<(String, usize)> = c_members
                .into_iter()
                .map(|(n, o)| (n, o as usize))
                .collect();
            let r: Vec<(String, usize)> = rust_members
                .into_iter()
                .map(|(n, o)| (n.to_owned(), o))
                .collect();
            assert_eq!(c, r, "members of struct {name}");
        }
        // The byte encodings agree with the declared layouts.
        assert_eq!(
            IfaceValue {
                role: 2,
                xsk_base: 64
            }
            .to_bytes()
            .len(),
            size_of::<IfaceValue>()
        );
        assert_eq!(
            ConfigValue {
                vxlan_port: 1,
                masq_port_min: 2,
                masq_port_max: 3,
                pad: 0
            }
            .to_bytes()
            .len(),
            size_of::<ConfigValue>()
        );
        assert_eq!(
            FrontendKey::new(Ipv4Addr::LOCALHOST, 1, 6).to_bytes().len(),
            size_of::<FrontendKey>()
        );
    }

    #[test]
    fn the_socket_map_holds_every_queue_of_every_interface() {
        // KXDP_MAX_IFACES * KXDP_MAX_QUEUES in the C header; read from the object without
        // loading it (no privilege needed).
        let obj = ObjectBuilder::default()
            .open_file(OBJECT_PATH)
            .expect("the object opens");
        let xsks = obj
            .maps()
            .find(|m| m.name() == "xsks")
            .expect("the xsks map");
        assert_eq!(
            xsks.max_entries(),
            runtime::MAX_INTERFACES * runtime::MAX_QUEUES
        );
        // Each number on its own too: the program bounds the rx queue by KXDP_MAX_QUEUES,
        // and the runtime spaces interfaces' slots by MAX_QUEUES.
        let define = |name: &str| -> u32 {
            let header = include_str!("bpf/kxdp.h");
            let line = header
                .lines()
                .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
                .unwrap_or_else(|| panic!("{name} is not defined in kxdp.h"));
            line.trim().parse().expect("a number")
        };
        assert_eq!(define("KXDP_MAX_QUEUES"), runtime::MAX_QUEUES);
        assert_eq!(define("KXDP_MAX_IFACES"), runtime::MAX_INTERFACES);
    }

    #[test]
    fn a_pinned_thread_runs_on_its_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let last = cores - 1;
        let ran_on = std::thread::spawn(move || {
            pin_current_thread(last).expect("pinning needs no privilege");
            std::thread::yield_now();
            current_cpu()
        })
        .join()
        .expect("thread");
        assert_eq!(ran_on, Some(last));
    }

    #[test]
    fn counters_and_roles_match_the_c_enums() {
        let btf = Btf::from_path(OBJECT_PATH).expect("the object carries BTF");
        let enum_members = |name: &str| -> Vec<(String, i64)> {
            let e: Enum<'_> = btf
                .type_by_name(name)
                .unwrap_or_else(|| panic!("enum {name} is not in the object's BTF"));
            e.iter()
                .map(|m| (m.name.unwrap().to_string_lossy().into_owned(), m.value))
                .collect()
        };
        let stats = enum_members("kxdp_xdp_stat");
        let want: Vec<(String, i64)> = XdpDecision::ALL
            .iter()
            .map(|s| {
                let c_name = format!("KXDP_STAT_{}", s.name().to_ascii_uppercase());
                (c_name, i64::from(s.number()))
            })
            .chain([("KXDP_STAT_COUNT".to_owned(), XdpDecision::COUNT as i64)])
            .collect();
        assert_eq!(stats, want);
        let roles = enum_members("kxdp_if_role");
        assert_eq!(
            roles,
            [
                ("KXDP_IF_UNMANAGED", IfRole::Unmanaged),
                ("KXDP_IF_UPLINK", IfRole::Uplink),
                ("KXDP_IF_POD", IfRole::Pod),
                ("KXDP_IF_HOST", IfRole::Host),
            ]
            .map(|(n, r)| (n.to_owned(), r as i64))
        );
    }
}
