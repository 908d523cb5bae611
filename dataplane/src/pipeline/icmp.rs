//! ICMP: echo replies from the gateway, errors kxdp sends, and errors it translates.
//!
//! Two stages: [`input`] (before NAT) answers pings of the gateway and translates errors about
//! a translated flow; [`error`] turns a packet another stage refused ([`Next::IcmpError`]) into
//! the error for its sender. Both hand the result to output ([`Next::OutputTranslated`]).
//!
//! Everything here is the uncommon path. Errors kxdp builds quote the offending packet's IPv4
//! header and first 8 bytes (RFC 792), rewritten in place in the same buffer; errors about a
//! translated flow, whoever sent them, are translated back the way the flow is, so that the
//! endpoint sees the addresses it used (the service address, its own pre-masquerade address).

use core::net::Ipv4Addr;

use super::parse::{addr, be16, icmp_type, Ipv4Meta};
use super::{Ctx, Frame, IcmpError, Next, Verdict};
use crate::counters::Event;
use crate::flow::{proto, FlowKey};
use crate::reason::DropReason;
use crate::wire::{checksum, ICMP_HEADER_LEN, IPV4_HEADER_LEN};

/// Time exceeded in transit (RFC 792).
const CODE_TTL_EXCEEDED: u8 = 0;
const CODE_PORT_UNREACHABLE: u8 = 3;
const CODE_FRAG_NEEDED: u8 = 4;
const TTL: u8 = 64;

/// The ICMP stage before NAT: `Some` where it decides the packet (a ping of the gateway, an
/// error about a translated flow, or one it cannot read), `None` to go on to NAT.
#[inline]
pub(crate) fn input(ctx: &Ctx<'_>, frame: &mut Frame<'_>, meta: &mut Ipv4Meta) -> Option<Next> {
    if meta.key.proto != proto::ICMP {
        return None;
    }
    if meta.icmp_type == icmp_type::ECHO_REQUEST && meta.key.dst_ip == ctx.snap.node.gateway_ip {
        return Some(echo_reply(ctx, frame, meta));
    }
    if meta.is_icmp_error() {
        return match translate_error(ctx, frame, meta) {
            Ok(true) => Some(Next::OutputTranslated),
            Ok(false) => None,
            Err(r) => Some(Next::Done(Verdict::Drop(r))),
        };
    }
    None
}

/// Turn an echo request to the gateway into its reply and send it back the way it came.
#[cold]
fn echo_reply(ctx: &Ctx<'_>, frame: &mut Frame<'_>, meta: &mut Ipv4Meta) -> Next {
    let l3 = meta.l3();
    let l4 = meta.l4();
    let (src, dst) = (meta.key.src_ip, meta.key.dst_ip);
    let d = frame.data_mut();
    d[l3 + 8] = TTL;
    d[l3 + 12..l3 + 16].copy_from_slice(&dst.octets());
    d[l3 + 16..l3 + 20].copy_from_slice(&src.octets());
    fill_ipv4_checksum(&mut d[l3..l3 + IPV4_HEADER_LEN]);
    let old = u16::from_be_bytes([d[l4], d[l4 + 1]]);
    d[l4] = icmp_type::ECHO_REPLY;
    let new = u16::from_be_bytes([d[l4], d[l4 + 1]]);
    let check = u16::from_be_bytes([d[l4 + 2], d[l4 + 3]]);
    d[l4 + 2..l4 + 4].copy_from_slice(&checksum::update16(check, old, new).to_be_bytes());
    meta.key = meta.key.reversed();
    meta.hash = 0;
    meta.icmp_type = icmp_type::ECHO_REPLY;
    ctx.counters.inc(Event::IcmpEchoReply);
    Next::OutputTranslated
}

/// The ICMP error stage: turn the packet into `error` for its sender.
#[cold]
pub(crate) fn error(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    meta: &mut Ipv4Meta,
    error: IcmpError,
) -> Next {
    match error {
        IcmpError::PortUnreachable => port_unreachable(ctx, frame, meta),
        IcmpError::FragNeeded { mtu } => frag_needed(ctx, frame, meta, mtu),
        IcmpError::TimeExceeded => time_exceeded(ctx, frame, meta),
    }
}

/// Reject a packet to a service without endpoints, as kube-proxy does: ICMP port unreachable
/// from the service address.
fn port_unreachable(ctx: &Ctx<'_>, frame: &mut Frame<'_>, meta: &mut Ipv4Meta) -> Next {
    let (from, to) = (meta.key.dst_ip, meta.key.src_ip);
    if let Err(r) = build_error(
        frame,
        meta,
        from,
        to,
        (icmp_type::DEST_UNREACHABLE, CODE_PORT_UNREACHABLE, 0),
    ) {
        return Next::Done(Verdict::Drop(r));
    }
    ctx.counters.inc(Event::IcmpPortUnreachable);
    Next::OutputTranslated
}

/// Answer a DF packet too big for the link it would leave on (the tunnel, or the uplink) with
/// fragmentation needed (RFC 1191) announcing that link's `mtu`, from the gateway address,
/// translated back through conntrack if the packet was.
fn frag_needed(ctx: &Ctx<'_>, frame: &mut Frame<'_>, meta: &mut Ipv4Meta, mtu: u16) -> Next {
    let error = (icmp_type::DEST_UNREACHABLE, CODE_FRAG_NEEDED, mtu);
    send_error(ctx, frame, meta, error, Event::IcmpFragNeeded)
}

/// Answer a packet whose TTL runs out here with time exceeded (RFC 792), from the gateway
/// address as a flannel node's `cni0` answers (so traceroute shows the node), translated back
/// through conntrack if the packet was. Never about an ICMP error (RFC 1122 3.2.2) or a
/// fragment other than the first (RFC 792): those are dropped as `ttl_exceeded`.
fn time_exceeded(ctx: &Ctx<'_>, frame: &mut Frame<'_>, meta: &mut Ipv4Meta) -> Next {
    let later_fragment = frame
        .data()
        .get(meta.l3() + 6..meta.l3() + 8)
        .is_some_and(|f| be16(f, 0) & 0x1fff != 0);
    if meta.is_icmp_error() || later_fragment {
        return Next::Done(Verdict::Drop(DropReason::TtlExceeded));
    }
    let error = (icmp_type::TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0);
    send_error(ctx, frame, meta, error, Event::IcmpTimeExceeded)
}

/// Turn the packet into `error` from the gateway address to its sender, counted as `event`,
/// translated back through conntrack if the packet was, for output.
fn send_error(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    meta: &mut Ipv4Meta,
    error: (u8, u8, u16),
    event: Event,
) -> Next {
    let (from, to) = (ctx.snap.node.gateway_ip, meta.key.src_ip);
    if let Err(r) = build_error(frame, meta, from, to, error) {
        return Next::Done(Verdict::Drop(r));
    }
    ctx.counters.inc(event);
    if let Err(r) = translate_error(ctx, frame, meta) {
        return Next::Done(Verdict::Drop(r));
    }
    Next::OutputTranslated
}

fn fill_ipv4_checksum(header: &mut [u8]) {
    header[10] = 0;
    header[11] = 0;
    let c = checksum::checksum(header);
    header[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Rewrite the packet at `meta.l3()` into an ICMP error quoting it: `(type, code, next-hop
/// MTU)`, the MTU only meaningful for fragmentation needed (zero otherwise, as the unused
/// field must be).
fn build_error(
    frame: &mut Frame<'_>,
    meta: &mut Ipv4Meta,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    (kind, code, next_hop_mtu): (u8, u8, u16),
) -> Result<(), DropReason> {
    let l3 = meta.l3();
    let quote = meta.ip_len().min(IPV4_HEADER_LEN + 8);
    let ip_len = IPV4_HEADER_LEN + ICMP_HEADER_LEN + quote;
    let len = l3 + ip_len;
    // The error replaces the packet: the tail of a multi-buffer frame goes first, so what the
    // error needs is room in this buffer (the quote is in it: parsing saw its headers there).
    let cut = frame.set_len(frame.len());
    debug_assert!(cut);
    if !frame.set_len(frame.len().max(len)) {
        return Err(DropReason::NoHeadroom);
    }
    let hdrs = IPV4_HEADER_LEN + ICMP_HEADER_LEN;
    frame.data_mut().copy_within(l3..l3 + quote, l3 + hdrs);
    let ok = frame.set_len(len);
    debug_assert!(ok);
    // The quote keeps the packet's checksum as it was; the error's own is complete.
    frame.set_checksum_offload(None);
    let d = frame.data_mut();
    let ip = &mut d[l3..l3 + IPV4_HEADER_LEN];
    ip.copy_from_slice(&[
        0x45,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        TTL,
        proto::ICMP,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]);
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    fill_ipv4_checksum(ip);
    let icmp = &mut d[l3 + IPV4_HEADER_LEN..len];
    icmp[..8].copy_from_slice(&[kind, code, 0, 0, 0, 0, 0, 0]);
    icmp[6..8].copy_from_slice(&next_hop_mtu.to_be_bytes());
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    *meta = Ipv4Meta::new(
        l3,
        ip_len as u16,
        FlowKey::new(proto::ICMP, src, 0, dst, 0),
        0,
        kind,
        false,
    );
    Ok(())
}

#[inline]
fn put16(d: &mut [u8], at: usize, v: u16) {
    d[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Set a 16-bit field and fold the change into the checksum at `check_at`, if any.
fn set16(d: &mut [u8], at: usize, v: u16, check_at: Option<usize>) {
    let old = be16(d, at);
    if old == v {
        return;
    }
    put16(d, at, v);
    if let Some(c) = check_at {
        put16(d, c, checksum::update16(be16(d, c), old, v));
    }
}

/// Set an address and fold the change into every checksum at `checks` (zero entries skipped
/// where `skip_zero`, for UDP).
fn set_addr(d: &mut [u8], at: usize, v: Ipv4Addr, checks: &[(usize, bool)]) {
    let old = addr(d, at);
    if old == v {
        return;
    }
    d[at..at + 4].copy_from_slice(&v.octets());
    for &(c, skip_zero) in checks {
        let cur = be16(d, c);
        if skip_zero && cur == 0 {
            continue;
        }
        let mut new = checksum::update32(cur, u32::from(old), u32::from(v));
        if skip_zero && new == 0 {
            new = 0xffff;
        }
        put16(d, c, new);
    }
}

/// If the ICMP error at `meta` quotes a packet of a tracked flow, translate the quote and the
/// outer addresses back like the flow. Returns whether it did.
fn translate_error(
    ctx: &Ctx<'_>,
    frame: &mut Frame<'_>,
    meta: &mut Ipv4Meta,
) -> Result<bool, DropReason> {
    let l3 = meta.l3();
    let l4 = meta.l4();
    let end = l3 + meta.ip_len();
    let q3 = l4 + ICMP_HEADER_LEN;
    let d = frame.data();
    if frame.tail() > 0 {
        // An error quotes a few dozen bytes; one larger than a buffer is no real error.
        return Err(DropReason::IcmpErrorUntranslatable);
    }
    if end < q3 + IPV4_HEADER_LEN {
        return Err(DropReason::IcmpErrorUntranslatable);
    }
    let q_ihl = usize::from(d[q3] & 0x0f) * 4;
    if d[q3] >> 4 != 4 || q_ihl < IPV4_HEADER_LEN || end < q3 + q_ihl + 8 {
        return Err(DropReason::IcmpErrorUntranslatable);
    }
    let q4 = q3 + q_ihl;
    let q_proto = d[q3 + 9];
    let (sport, dport) = match q_proto {
        proto::TCP | proto::UDP => (be16(d, q4), be16(d, q4 + 2)),
        proto::ICMP => match d[q4] {
            icmp_type::ECHO_REQUEST => (be16(d, q4 + 4), 0),
            icmp_type::ECHO_REPLY => (0, be16(d, q4 + 4)),
            _ => return Ok(false),
        },
        _ => return Ok(false),
    };
    let quoted = FlowKey::new(q_proto, addr(d, q3 + 12), sport, addr(d, q3 + 16), dport);
    // The quoted packet went the other way: the error travels in the direction of its reverse.
    let travelling = quoted.reversed();
    let Some(flow) = ctx.ct.lookup(&travelling, ctx.now) else {
        return Ok(false);
    };
    let to = flow.translated();
    let outer_src = meta.key.src_ip;
    let d = frame.data_mut();

    // The quote becomes the reverse of the translated 5-tuple.
    let q_check = q3 + 10;
    let l4_check = match q_proto {
        proto::TCP if end >= q4 + 18 => Some((q4 + 16, false)),
        proto::UDP => Some((q4 + 6, true)),
        _ => None,
    };
    let mut checks = [(q_check, false), (0, false)];
    let n = if let Some(c) = l4_check {
        checks[1] = c;
        2
    } else {
        1
    };
    set_addr(d, q3 + 12, to.dst_ip, &checks[..n]);
    set_addr(d, q3 + 16, to.src_ip, &checks[..n]);
    match q_proto {
        proto::ICMP if d[q4] == icmp_type::ECHO_REQUEST => {
            set16(d, q4 + 4, to.dst_port, Some(q4 + 2))
        }
        proto::ICMP => set16(d, q4 + 4, to.src_port, Some(q4 + 2)),
        _ => {
            let l4c = l4_check.map(|(c, _)| c);
            let udp_zero = q_proto == proto::UDP && be16(d, q4 + 6) == 0;
            let l4c = if udp_zero { None } else { l4c };
            set16(d, q4, to.dst_port, l4c);
            set16(d, q4 + 2, to.src_port, l4c);
        }
    }

    // The error goes to whoever sent the quoted packet, from the translated peer if the peer
    // itself sent it (a router on the path keeps its own address).
    let ip_check = l3 + 10;
    set_addr(d, l3 + 16, to.dst_ip, &[(ip_check, false)]);
    let new_src = if outer_src == travelling.src_ip {
        to.src_ip
    } else {
        outer_src
    };
    set_addr(d, l3 + 12, new_src, &[(ip_check, false)]);

    // The ICMP checksum covers the quote: recompute it over the (short) message.
    d[l4 + 2] = 0;
    d[l4 + 3] = 0;
    let c = checksum::checksum(&d[l4..end]);
    put16(d, l4 + 2, c);

    meta.key.src_ip = new_src;
    meta.key.dst_ip = to.dst_ip;
    meta.hash = 0;
    ctx.counters.inc(Event::IcmpErrorTranslated);
    Ok(true)
}
