//! Connection tracking for the stateful security groups, in the spirit of Linux
//! `nf_conntrack` but sans-IO: the caller hands in a summary of each packet ([`Packet`])
//! and the time, and gets back how the packet relates to the connections seen so far
//! ([`CtVerdict`]).
//!
//! - A connection is keyed by [`ConnKey`]: the tenant network, the protocol and the two
//!   endpoints in a canonical order, so both directions of a connection find one entry and
//!   equal addresses in two networks never meet. ICMP queries (echo, timestamp, ...) use
//!   the identifier as the port and put the requester first; ICMP errors belong to the
//!   connection of the packet they quote ([`ConnKey::from_inner`]).
//! - Each entry remembers who opened the connection (the sender of its first packet):
//!   "replies are allowed" is relative to that.
//! - TCP follows a simplified version of the kernel's state machine (SYN_SENT, SYN_RECV,
//!   ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE) driven by the flags
//!   only (no sequence-window checks); UDP, ICMP and other protocols live on timeouts
//!   ([`Timeouts`], Linux defaults).
//! - The table is preallocated to a maximum number of entries and never grows: when it is
//!   full, a bounded scan evicts an expired entry or the new connection is refused
//!   ([`CtVerdict::TableFull`]). Expired entries are removed incrementally by
//!   [`Conntrack::expire`] with a work budget per call; an entry found expired on lookup
//!   counts as gone.
//!
//! Opening a connection can be made conditional ([`Conntrack::track_with`]): the
//! firewall asks the security groups before an entry is created, so a refused packet
//! leaves no trace that a later packet could ride on.

use crate::time::Instant;
use ahash::RandomState;
use core::hash::{Hash, Hasher};
use core::net::Ipv4Addr;
use model::NetworkId;
use std::collections::HashMap;
use wire::tcp::flags as tcpf;

/// IP protocol number of ICMPv4.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// How many entries a full table examines, at most, looking for an expired one to evict
/// before it refuses a new connection.
pub const EVICT_SCAN: usize = 64;

/// A UDP connection that has seen a reply becomes assured (long timeout) once it is
/// still active this long after its first packet, as in Linux: a DNS query and its
/// answer keep the short timeout, a stream gets the long one.
const UDP_STREAM_AFTER_MS: u32 = 2_000;

/// The fields of one IPv4 packet that connection tracking and the rules look at.
///
/// For TCP and UDP the ports are the transport ports. For ICMP, `src_port` is the
/// identifier of a query message (echo, timestamp, information, address mask; 0 for
/// other messages) and `dst_port` is the ICMP type, so that rule port ranges match ICMP
/// types. Other protocols carry 0 in both (or ports, if the caller knows them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    /// The tenant network the packet belongs to.
    pub network: NetworkId,
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port; ICMP: query identifier.
    pub src_port: u16,
    /// Destination port; ICMP: the type.
    pub dst_port: u16,
}

impl Flow {
    /// A TCP segment from `src:src_port` to `dst:dst_port`.
    pub const fn tcp(
        network: NetworkId,
        src: Ipv4Addr,
        src_port: u16,
        dst: Ipv4Addr,
        dst_port: u16,
    ) -> Flow {
        Flow {
            network,
            proto: PROTO_TCP,
            src,
            dst,
            src_port,
            dst_port,
        }
    }

    /// A UDP datagram from `src:src_port` to `dst:dst_port`.
    pub const fn udp(
        network: NetworkId,
        src: Ipv4Addr,
        src_port: u16,
        dst: Ipv4Addr,
        dst_port: u16,
    ) -> Flow {
        Flow {
            network,
            proto: PROTO_UDP,
            src,
            dst,
            src_port,
            dst_port,
        }
    }

    /// An ICMP message of type `icmp_type`; `ident` is the identifier of a query
    /// message (echo and the like), 0 for others.
    pub const fn icmp(
        network: NetworkId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        icmp_type: u8,
        ident: u16,
    ) -> Flow {
        Flow {
            network,
            proto: PROTO_ICMP,
            src,
            dst,
            src_port: ident,
            dst_port: icmp_type as u16,
        }
    }

    /// A packet of another protocol, without ports.
    pub const fn other(network: NetworkId, proto: u8, src: Ipv4Addr, dst: Ipv4Addr) -> Flow {
        Flow {
            network,
            proto,
            src,
            dst,
            src_port: 0,
            dst_port: 0,
        }
    }

    /// The same flow seen from the other end: addresses swapped, and ports swapped
    /// except for ICMP, whose "ports" are the identifier and the type.
    pub const fn reversed(&self) -> Flow {
        let (src_port, dst_port) = if self.proto == PROTO_ICMP {
            (self.src_port, self.dst_port)
        } else {
            (self.dst_port, self.src_port)
        };
        Flow {
            network: self.network,
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            src_port,
            dst_port,
        }
    }
}

/// One packet as connection tracking sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Addresses, protocol and ports.
    pub flow: Flow,
    /// The TCP flags byte (byte 13 of the header); required for TCP (a TCP packet without
    /// flags is invalid), ignored for other protocols.
    pub tcp_flags: Option<u8>,
    /// Transport payload length in bytes, for the per-connection byte counters.
    pub payload_len: u32,
    /// For an ICMP error (destination unreachable, source quench, redirect, time
    /// exceeded, parameter problem): the flow of the packet it quotes, as that packet
    /// was sent. Ignored for other packets.
    pub related: Option<Flow>,
}

impl Packet {
    /// A packet without TCP flags, payload or quoted packet.
    pub const fn new(flow: Flow) -> Packet {
        Packet {
            flow,
            tcp_flags: None,
            payload_len: 0,
            related: None,
        }
    }

    /// A TCP segment with these flags (see [`wire::tcp::flags`]).
    pub const fn tcp(flow: Flow, flags: u8) -> Packet {
        Packet {
            flow,
            tcp_flags: Some(flags),
            payload_len: 0,
            related: None,
        }
    }

    /// An ICMP error message (`flow`) quoting a packet whose flow was `inner`.
    pub const fn icmp_error(flow: Flow, inner: Flow) -> Packet {
        Packet {
            flow,
            tcp_flags: None,
            payload_len: 0,
            related: Some(inner),
        }
    }

    /// The same packet with `len` bytes of transport payload.
    pub const fn with_payload(mut self, len: u32) -> Packet {
        self.payload_len = len;
        self
    }
}

/// What an ICMP type is to connection tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcmpClass {
    Request,
    Reply,
    Error,
    Other,
}

fn icmp_class(icmp_type: u16) -> IcmpClass {
    match icmp_type {
        // echo, timestamp, information, address mask
        8 | 13 | 15 | 17 => IcmpClass::Request,
        0 | 14 | 16 | 18 => IcmpClass::Reply,
        // destination unreachable, source quench, redirect, time exceeded, parameter problem
        3 | 4 | 5 | 11 | 12 => IcmpClass::Error,
        _ => IcmpClass::Other,
    }
}

/// The key of one connection: both directions of the connection map to the same key.
///
/// TCP, UDP and other protocols put the lower `(address, port)` endpoint in `a`. ICMP
/// queries put the requester in `a` and the responder in `b`, both with the query
/// identifier as the port, so that an echo request from either side opens its own
/// connection while its reply finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnKey {
    /// The tenant network: equal addresses in two networks are different connections.
    pub network: NetworkId,
    /// IP protocol number.
    pub proto: u8,
    /// The first endpoint (lower, or the ICMP requester).
    pub a: (Ipv4Addr, u16),
    /// The second endpoint.
    pub b: (Ipv4Addr, u16),
}

impl Hash for ConnKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.pack().hash(state);
    }
}

/// A [`ConnKey`] in 16 bytes, as the table stores it: smaller buckets, one-word hashing
/// and comparison on the per-packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packed(u128);

impl Hash for Packed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.0);
    }
}

impl Packed {
    fn unpack(self) -> ConnKey {
        let v = self.0;
        let network =
            NetworkId::new((v >> 104) as u32 & NetworkId::MAX).expect("24 bits are a network id");
        ConnKey {
            network,
            proto: (v >> 96) as u8,
            a: (Ipv4Addr::from((v >> 64) as u32), (v >> 16) as u16),
            b: (Ipv4Addr::from((v >> 32) as u32), v as u16),
        }
    }
}

impl ConnKey {
    /// `network (24) | proto (8) | a addr (32) | b addr (32) | a port (16) | b port (16)`.
    fn pack(&self) -> Packed {
        Packed(
            (u128::from(self.network.get()) << 104)
                | (u128::from(self.proto) << 96)
                | (u128::from(u32::from(self.a.0)) << 64)
                | (u128::from(u32::from(self.b.0)) << 32)
                | (u128::from(self.a.1) << 16)
                | u128::from(self.b.1),
        )
    }

    /// The key of the connection `flow` belongs to, and whether `flow` travels from `a`
    /// to `b`. `None` for ICMP messages that open no connection of their own (errors,
    /// which relate to another connection, and types that are neither queries nor
    /// replies).
    pub fn of(flow: &Flow) -> Option<(ConnKey, bool)> {
        let src = (flow.src, flow.src_port);
        let dst = (flow.dst, flow.dst_port);
        if flow.proto == PROTO_ICMP {
            let id = flow.src_port;
            let (requester, responder, src_is_a) = match icmp_class(flow.dst_port) {
                IcmpClass::Request => (flow.src, flow.dst, true),
                IcmpClass::Reply => (flow.dst, flow.src, false),
                IcmpClass::Error | IcmpClass::Other => return None,
            };
            let key = ConnKey {
                network: flow.network,
                proto: PROTO_ICMP,
                a: (requester, id),
                b: (responder, id),
            };
            return Some((key, src_is_a));
        }
        let src_is_a = src <= dst;
        let (a, b) = if src_is_a { (src, dst) } else { (dst, src) };
        Some((
            ConnKey {
                network: flow.network,
                proto: flow.proto,
                a,
                b,
            },
            src_is_a,
        ))
    }

    /// The key of the connection an ICMP error relates to, from the packet it quotes
    /// (`inner`: that packet's addresses, protocol and ports, or for a quoted ICMP query
    /// its type and identifier, exactly as quoted).
    pub fn from_inner(inner: &Flow) -> Option<ConnKey> {
        ConnKey::of(inner).map(|(k, _)| k)
    }
}

/// The state of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnState {
    /// TCP: SYN seen from the originator.
    SynSent,
    /// TCP: SYN-ACK seen from the responder (or a simultaneous open).
    SynRecv,
    /// TCP: handshake completed (or picked up mid-stream).
    Established,
    /// TCP: a FIN seen from one side.
    FinWait,
    /// TCP: that FIN acknowledged; the other side still sends.
    CloseWait,
    /// TCP: FINs seen from both sides, waiting for the last ACK.
    LastAck,
    /// TCP: both sides closed.
    TimeWait,
    /// TCP: reset.
    Closed,
    /// UDP, ICMP, other: packets seen from the originator only.
    Unreplied,
    /// UDP, ICMP, other: a packet seen in the reply direction.
    Replied,
}

/// Connection timeouts in milliseconds. The defaults are Linux's `nf_conntrack` ones
/// (UDP assured: 180 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP in SYN_SENT.
    pub tcp_syn_sent_ms: u64,
    /// TCP in SYN_RECV.
    pub tcp_syn_recv_ms: u64,
    /// TCP in ESTABLISHED (idle timeout of a live connection; 5 days by default).
    pub tcp_established_ms: u64,
    /// TCP in FIN_WAIT.
    pub tcp_fin_wait_ms: u64,
    /// TCP in CLOSE_WAIT.
    pub tcp_close_wait_ms: u64,
    /// TCP in LAST_ACK.
    pub tcp_last_ack_ms: u64,
    /// TCP in TIME_WAIT.
    pub tcp_time_wait_ms: u64,
    /// TCP after a reset.
    pub tcp_close_ms: u64,
    /// UDP until a reply is seen, and for a short exchange (query and answer).
    pub udp_unreplied_ms: u64,
    /// UDP once assured (replied and still active after 2 s).
    pub udp_assured_ms: u64,
    /// ICMP queries.
    pub icmp_ms: u64,
    /// Other protocols.
    pub other_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn_sent_ms: 120_000,
            tcp_syn_recv_ms: 60_000,
            tcp_established_ms: 5 * 24 * 3600 * 1000,
            tcp_fin_wait_ms: 120_000,
            tcp_close_wait_ms: 60_000,
            tcp_last_ack_ms: 30_000,
            tcp_time_wait_ms: 120_000,
            tcp_close_ms: 10_000,
            udp_unreplied_ms: 30_000,
            udp_assured_ms: 180_000,
            icmp_ms: 30_000,
            other_ms: 600_000,
        }
    }
}

impl Timeouts {
    fn tcp(&self, state: ConnState) -> u64 {
        match state {
            ConnState::SynSent => self.tcp_syn_sent_ms,
            ConnState::SynRecv => self.tcp_syn_recv_ms,
            ConnState::Established => self.tcp_established_ms,
            ConnState::FinWait => self.tcp_fin_wait_ms,
            ConnState::CloseWait => self.tcp_close_wait_ms,
            ConnState::LastAck => self.tcp_last_ack_ms,
            ConnState::TimeWait => self.tcp_time_wait_ms,
            ConnState::Closed => self.tcp_close_ms,
            ConnState::Unreplied | ConnState::Replied => self.other_ms,
        }
    }
}

/// How a packet relates to the tracked connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtVerdict {
    /// The first packet of a connection (or of a TCP connection reopened on a closed
    /// tuple, or picked up mid-stream with its sender as originator): an entry was made.
    New,
    /// A packet in the original direction of a tracked connection.
    Established,
    /// A packet in the reply direction of a tracked connection (including the first
    /// reply, and a mid-stream TCP packet picked up as a reply).
    Reply,
    /// An ICMP error about a packet of a tracked connection.
    Related,
    /// A packet that fits no tracked connection and may not open one (a TCP flag
    /// combination that is never valid or does not fit the state, a mid-stream segment
    /// without loose pickup, an ICMP reply without a request, an ICMP error about nothing
    /// tracked). Nothing was recorded.
    Invalid,
    /// The packet would open a connection but the table is full and no expired entry was
    /// found to evict. Nothing was recorded.
    TableFull,
    /// The packet would open a connection but the admission check of
    /// [`Conntrack::track_with`] said no. Nothing was recorded.
    Refused,
}

impl CtVerdict {
    /// Whether the packet belongs to (or just opened) a tracked connection.
    pub const fn is_tracked(self) -> bool {
        matches!(
            self,
            CtVerdict::New | CtVerdict::Established | CtVerdict::Reply | CtVerdict::Related
        )
    }
}

/// Why a packet would create an entry; given to the admission check of
/// [`Conntrack::track_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Opening {
    /// The first packet of a connection (TCP SYN, a UDP datagram, an ICMP request, ...),
    /// or a SYN reopening a closed TCP tuple: its sender opens the connection.
    Fresh,
    /// A TCP segment of a connection already under way that the table does not know
    /// (loose pickup, e.g. after an agent restart): either side may have opened it.
    Midstream,
}

/// The admission check's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Admit {
    /// Do not track; the packet gets [`CtVerdict::Refused`].
    No,
    /// Track, with the packet's sender as the originator.
    SenderOpened,
    /// Track, with the packet's receiver as the originator (only meaningful for
    /// [`Opening::Midstream`]: the packet is then a reply).
    ReceiverOpened,
}

/// What conntrack has counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtCounters {
    /// Entries in the table now (a gauge).
    pub entries: u64,
    /// Connections opened (entries created or reopened).
    pub new: u64,
    /// Packets that matched a tracked connection, in either direction.
    pub established: u64,
    /// ICMP errors related to a tracked connection.
    pub related: u64,
    /// Packets classified [`CtVerdict::Invalid`].
    pub invalid: u64,
    /// Would-be connections the admission check refused.
    pub refused: u64,
    /// Entries removed because they timed out (by `expire`, or found stale on lookup).
    pub expired: u64,
    /// Expired entries removed to make room for a new connection in a full table.
    pub evicted: u64,
    /// New connections refused because the table was full.
    pub table_full: u64,
}

/// A read-only view of one tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Its state.
    pub state: ConnState,
    /// The endpoint that opened it.
    pub originator: (Ipv4Addr, u16),
    /// The other endpoint.
    pub responder: (Ipv4Addr, u16),
    /// UDP: a stream (replied and active for a while); TCP: handshake completed with
    /// traffic both ways.
    pub assured: bool,
    /// When it times out unless another packet comes.
    pub expires: Instant,
    /// Packets seen in the original and reply directions.
    pub packets: [u64; 2],
    /// Payload bytes seen in the original and reply directions.
    pub bytes: [u64; 2],
}

const ORIG_IS_A: u8 = 1 << 0;
const SEEN_REPLY: u8 = 1 << 1;
const ASSURED: u8 = 1 << 2;
/// The first FIN came from the reply direction.
const FIN_FROM_REPLY: u8 = 1 << 3;
/// The most recent new FIN (the second one) came from the reply direction.
const LAST_FIN_FROM_REPLY: u8 = 1 << 4;
/// An original-direction SYN was seen on an established connection: a SYN-ACK reply
/// now means the peer accepted a new connection on the same tuple.
const SYN_AGAIN: u8 = 1 << 5;

#[derive(Debug, Clone, Copy)]
struct Entry {
    expires: u64,
    bytes: [u64; 2],
    packets: [u32; 2],
    /// The low 32 bits of the creation time in ms: only compared within an unreplied
    /// UDP entry's life (seconds), so wrapping is harmless.
    created: u32,
    /// Index of the key in `Conntrack::keys`.
    slot: u32,
    state: ConnState,
    bits: u8,
}

impl Entry {
    fn orig_is_a(&self) -> bool {
        self.bits & ORIG_IS_A != 0
    }

    fn has(&self, bit: u8) -> bool {
        self.bits & bit != 0
    }

    fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.bits |= bit;
        } else {
            self.bits &= !bit;
        }
    }

    fn account(&mut self, dir: usize, payload_len: u32) {
        self.packets[dir] = self.packets[dir].wrapping_add(1);
        self.bytes[dir] = self.bytes[dir].wrapping_add(u64::from(payload_len));
        if dir == 1 {
            self.bits |= SEEN_REPLY;
        }
    }
}

/// The TCP segment kinds the state machine distinguishes (Linux's `tcp_conntracks`
/// index), after rejecting flag combinations that are never valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
}

fn tcp_seg(flags: u8) -> Option<Seg> {
    use tcpf::{ACK, FIN, RST, SYN, URG};
    // ECE, CWR and PSH do not matter (as in Linux's tcp_valid_flags).
    let f = flags & (FIN | SYN | RST | ACK | URG);
    const SYN_URG: u8 = SYN | URG;
    const SYN_ACK: u8 = SYN | ACK;
    const RST_ACK: u8 = RST | ACK;
    const FIN_ACK: u8 = FIN | ACK;
    const FIN_ACK_URG: u8 = FIN | ACK | URG;
    const ACK_URG: u8 = ACK | URG;
    match f {
        SYN | SYN_URG => Some(Seg::Syn),
        SYN_ACK => Some(Seg::SynAck),
        RST | RST_ACK => Some(Seg::Rst),
        FIN_ACK | FIN_ACK_URG => Some(Seg::Fin),
        ACK | ACK_URG => Some(Seg::Ack),
        _ => None,
    }
}

/// What one TCP segment does to an entry.
enum TcpStep {
    /// Accept, move to this state, refresh the timeout.
    To(ConnState),
    /// Accept without touching state or timeout (retransmissions the kernel ignores).
    Ignore,
    /// A SYN on a closed tuple: a new connection, subject to admission.
    Reopen,
    Invalid,
}

/// The simplified TCP state machine. `dir` is 0 for the original direction, 1 for reply.
fn tcp_step(e: &Entry, dir: usize, seg: Seg) -> TcpStep {
    use ConnState::*;
    use TcpStep::{Ignore, Invalid, Reopen, To};
    let orig = dir == 0;
    let from_reply = dir == 1;
    let state = e.state;
    match (seg, state) {
        (Seg::Rst, Closed) => Ignore,
        (Seg::Rst, _) => To(Closed),
        (Seg::Syn, TimeWait | Closed) => Reopen,
        (Seg::SynAck, TimeWait | Closed) => Invalid,
        (_, Closed) => To(Closed),

        (Seg::Syn, SynSent) if orig => To(SynSent),
        // Simultaneous open, simplified: both SYNs seen, waiting for the final ACK.
        (Seg::Syn, SynSent) => To(SynRecv),
        (Seg::SynAck, SynSent) if from_reply => To(SynRecv),
        (Seg::SynAck, SynSent) => Invalid,
        // An ACK from the responder before its SYN-ACK: stale, let it by unchanged.
        (Seg::Ack, SynSent) if from_reply => Ignore,
        (Seg::Ack | Seg::Fin, SynSent) => Invalid,

        (Seg::Syn, SynRecv) if orig => Ignore,
        (Seg::Syn, SynRecv) => Invalid,
        (Seg::SynAck, SynRecv) => Ignore,
        (Seg::Ack, SynRecv) if orig => To(Established),
        (Seg::Ack, SynRecv) => To(SynRecv),
        (Seg::Fin, SynRecv) => To(FinWait),

        (Seg::Syn, _) if orig => Ignore,
        (Seg::Syn, _) => Invalid,
        (Seg::SynAck, Established) if from_reply && e.has(SYN_AGAIN) => To(SynRecv),
        (Seg::SynAck, _) if from_reply => Ignore,
        (Seg::SynAck, _) => Invalid,

        (Seg::Ack, Established) => To(Established),
        (Seg::Fin, Established) => To(FinWait),

        (Seg::Ack, FinWait) => {
            let closer_is_reply = e.has(FIN_FROM_REPLY);
            if from_reply != closer_is_reply {
                To(CloseWait)
            } else {
                To(FinWait)
            }
        }
        (Seg::Fin, FinWait | CloseWait) => {
            let closer_is_reply = e.has(FIN_FROM_REPLY);
            if from_reply != closer_is_reply {
                To(LastAck)
            } else {
                To(state)
            }
        }
        (Seg::Ack, CloseWait) => To(CloseWait),

        (Seg::Ack, LastAck) => {
            if from_reply != e.has(LAST_FIN_FROM_REPLY) {
                To(TimeWait)
            } else {
                To(LastAck)
            }
        }
        (Seg::Fin, LastAck) => To(LastAck),
        (Seg::Ack | Seg::Fin, TimeWait) => To(TimeWait),

        (Seg::Ack | Seg::Fin, Unreplied | Replied) => Invalid,
    }
}

/// The connection table of one firewall (one node): preallocated, bounded, sans-IO.
pub struct Conntrack {
    map: HashMap<Packed, Entry, RandomState>,
    /// Every key once, for the incremental expiry scan; `Entry::slot` indexes it.
    keys: Vec<Packed>,
    max: usize,
    timeouts: Timeouts,
    loose: bool,
    cursor: usize,
    counters: CtCounters,
}

impl core::fmt::Debug for Conntrack {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Conntrack")
            .field("entries", &self.map.len())
            .field("max", &self.max)
            .field("loose", &self.loose)
            .field("timeouts", &self.timeouts)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Conntrack {
    /// A table for at most `max_entries` connections, allocated here once: the per-packet
    /// path never allocates. Loose TCP pickup is on (see [`Conntrack::with_loose_pickup`]).
    ///
    /// Memory is 150 to 300 bytes per entry of `max_entries` (64-byte buckets; the hash
    /// index is sized for twice the maximum, rounded up to a power of two, so that churn
    /// never makes it rehash into a new allocation); see [`Conntrack::memory_bytes`].
    ///
    /// # Panics
    /// If `max_entries` exceeds `u32::MAX`.
    pub fn new(timeouts: Timeouts, max_entries: usize) -> Conntrack {
        assert!(
            u32::try_from(max_entries).is_ok(),
            "conntrack: max_entries {max_entries} exceeds u32::MAX"
        );
        // Twice the maximum: hashbrown then always rehashes tombstones in place
        // (items <= capacity / 2) instead of growing into a new allocation.
        let map = HashMap::with_capacity_and_hasher(
            max_entries.saturating_mul(2),
            RandomState::default(),
        );
        Conntrack {
            map,
            keys: Vec::with_capacity(max_entries),
            max: max_entries,
            timeouts,
            loose: true,
            cursor: 0,
            counters: CtCounters::default(),
        }
    }

    /// Whether a TCP segment of a connection the table does not know (an ACK, or a FIN,
    /// mid-stream) may start tracking it, as Linux's `nf_conntrack_tcp_loose`. On by
    /// default so that a restarted agent, which has lost its table, does not cut the
    /// established connections of its nodes. Off: such segments are
    /// [`CtVerdict::Invalid`] and only a SYN opens a TCP connection.
    pub fn with_loose_pickup(mut self, loose: bool) -> Conntrack {
        self.loose = loose;
        self
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// The most entries the table holds.
    pub fn max_entries(&self) -> usize {
        self.max
    }

    /// The memory the table holds, in bytes (approximately: the hash index and the key
    /// list, allocated once in [`Conntrack::new`]).
    pub fn memory_bytes(&self) -> usize {
        let buckets = (self.map.capacity() * 8 / 7).next_power_of_two();
        let bucket = core::mem::size_of::<(Packed, Entry)>() + 1;
        buckets * bucket + self.keys.capacity() * core::mem::size_of::<Packed>()
    }

    /// Entries in the table now (some may have expired and not yet been removed).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The counters, with `entries` filled in.
    pub fn counters(&self) -> CtCounters {
        CtCounters {
            entries: self.map.len() as u64,
            ..self.counters
        }
    }

    /// The connection `key` names, if tracked and not expired at `now`.
    pub fn get(&self, key: &ConnKey, now: Instant) -> Option<ConnInfo> {
        self.map
            .get(&key.pack())
            .filter(|e| e.expires > now.millis())
            .map(|e| info(key, e))
    }

    /// Every entry (expired or not), in no particular order; for status and debugging.
    pub fn iter(&self) -> impl Iterator<Item = (ConnKey, ConnInfo)> + '_ {
        self.map.iter().map(|(k, e)| {
            let k = k.unpack();
            (k, info(&k, e))
        })
    }

    /// Forget one connection; whether it was tracked.
    pub fn remove(&mut self, key: &ConnKey) -> bool {
        self.remove_key(&key.pack())
    }

    /// Forget every connection (keeps the allocation).
    pub fn clear(&mut self) {
        self.map.clear();
        self.keys.clear();
        self.cursor = 0;
    }

    /// Track `pkt`, admitting every connection it would open. See
    /// [`Conntrack::track_with`].
    pub fn track(&mut self, pkt: &Packet, now: Instant) -> CtVerdict {
        self.track_with(pkt, now, |_| Admit::SenderOpened)
    }

    /// Track `pkt` at `now`: update the connection it belongs to, or open one if
    /// `admit` agrees. `admit` is called at most once, only when the packet would create
    /// an entry (or reopen a closed TCP tuple); when it answers [`Admit::No`] nothing is
    /// recorded and the verdict is [`CtVerdict::Refused`].
    ///
    /// Invalid packets change nothing. Packets that fit a connection refresh its timeout
    /// and count in its packet and byte counters.
    pub fn track_with(
        &mut self,
        pkt: &Packet,
        now: Instant,
        admit: impl FnOnce(Opening) -> Admit,
    ) -> CtVerdict {
        let flow = &pkt.flow;
        if flow.proto == PROTO_ICMP && icmp_class(flow.dst_port) == IcmpClass::Error {
            return self.related(pkt, now);
        }
        let Some((key, src_is_a)) = ConnKey::of(flow) else {
            self.counters.invalid += 1;
            return CtVerdict::Invalid;
        };
        let key = key.pack();
        let now_ms = now.millis();
        let stale = match self.map.get_mut(&key) {
            Some(e) if e.expires > now_ms => {
                let v = step(e, src_is_a, pkt, now_ms, &self.timeouts, admit);
                match v {
                    CtVerdict::Established | CtVerdict::Reply => self.counters.established += 1,
                    CtVerdict::New => self.counters.new += 1,
                    CtVerdict::Invalid => self.counters.invalid += 1,
                    CtVerdict::Refused => self.counters.refused += 1,
                    CtVerdict::Related | CtVerdict::TableFull => {}
                }
                return v;
            }
            Some(_) => true,
            None => false,
        };
        if stale {
            self.remove_key(&key);
            self.counters.expired += 1;
        }
        self.open(key, src_is_a, pkt, now_ms, admit)
    }

    /// An ICMP error: related if it quotes a packet of a tracked connection and goes back
    /// to that packet's sender.
    fn related(&mut self, pkt: &Packet, now: Instant) -> CtVerdict {
        let found = pkt.related.and_then(|inner| {
            if inner.network != pkt.flow.network || pkt.flow.dst != inner.src {
                return None;
            }
            let key = ConnKey::from_inner(&inner)?.pack();
            self.map.get(&key).filter(|e| e.expires > now.millis())
        });
        if found.is_some() {
            self.counters.related += 1;
            CtVerdict::Related
        } else {
            self.counters.invalid += 1;
            CtVerdict::Invalid
        }
    }

    /// No live entry for `key`: open one if the packet may open a connection.
    fn open(
        &mut self,
        key: Packed,
        src_is_a: bool,
        pkt: &Packet,
        now_ms: u64,
        admit: impl FnOnce(Opening) -> Admit,
    ) -> CtVerdict {
        let flow = &pkt.flow;
        let (opening, state) = match flow.proto {
            PROTO_TCP => match pkt.tcp_flags.and_then(tcp_seg) {
                Some(Seg::Syn) => (Opening::Fresh, ConnState::SynSent),
                Some(Seg::Ack) if self.loose => (Opening::Midstream, ConnState::Established),
                Some(Seg::Fin) if self.loose => (Opening::Midstream, ConnState::FinWait),
                _ => {
                    self.counters.invalid += 1;
                    return CtVerdict::Invalid;
                }
            },
            // ConnKey::of only lets requests and replies through; a reply opens nothing.
            PROTO_ICMP if icmp_class(flow.dst_port) != IcmpClass::Request => {
                self.counters.invalid += 1;
                return CtVerdict::Invalid;
            }
            _ => (Opening::Fresh, ConnState::Unreplied),
        };
        let sender_opened = match admit(opening) {
            Admit::No => {
                self.counters.refused += 1;
                return CtVerdict::Refused;
            }
            Admit::SenderOpened => true,
            Admit::ReceiverOpened => false,
        };
        if self.map.len() >= self.max {
            let freed = self.scan(now_ms, EVICT_SCAN, 1);
            if freed == 0 {
                self.counters.table_full += 1;
                return CtVerdict::TableFull;
            }
            self.counters.evicted += freed as u64;
        }
        let dir = usize::from(!sender_opened);
        let mut e = Entry {
            expires: 0,
            created: now_ms as u32,
            bytes: [0; 2],
            packets: [0; 2],
            slot: self.keys.len() as u32,
            state,
            bits: if src_is_a == sender_opened {
                ORIG_IS_A
            } else {
                0
            },
        };
        if state == ConnState::FinWait {
            e.set(FIN_FROM_REPLY, dir == 1);
        }
        e.account(dir, pkt.payload_len);
        e.expires = now_ms.saturating_add(timeout(&self.timeouts, &e, flow.proto));
        self.keys.push(key);
        self.map.insert(key, e);
        self.counters.new += 1;
        if sender_opened {
            CtVerdict::New
        } else {
            CtVerdict::Reply
        }
    }

    /// Remove timed-out entries, examining at most `budget` entries (bounded work per
    /// call; call it regularly, e.g. every tick with a budget of a few hundred). Returns
    /// how many were removed.
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        let removed = self.scan(now.millis(), budget, usize::MAX);
        self.counters.expired += removed as u64;
        removed
    }

    /// Examine up to `budget` entries from the cursor, removing expired ones, stopping
    /// after `stop_after` removals.
    fn scan(&mut self, now_ms: u64, budget: usize, stop_after: usize) -> usize {
        let mut removed = 0;
        let mut examined = 0;
        while examined < budget && removed < stop_after && !self.keys.is_empty() {
            if self.cursor >= self.keys.len() {
                self.cursor = 0;
            }
            let key = self.keys[self.cursor];
            examined += 1;
            let expired = self.map.get(&key).is_none_or(|e| e.expires <= now_ms);
            if expired {
                // The last key moves into the cursor's slot: examine it next.
                self.remove_key(&key);
                removed += 1;
            } else {
                self.cursor += 1;
            }
        }
        removed
    }

    fn remove_key(&mut self, key: &Packed) -> bool {
        let Some(e) = self.map.remove(key) else {
            return false;
        };
        let slot = e.slot as usize;
        self.keys.swap_remove(slot);
        if let Some(moved) = self.keys.get(slot) {
            if let Some(m) = self.map.get_mut(moved) {
                m.slot = slot as u32;
            }
        }
        true
    }

    /// Internal consistency, for tests: keys and map agree, slots index their keys.
    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.keys.len(), self.map.len());
        assert!(self.map.len() <= self.max);
        for (i, k) in self.keys.iter().enumerate() {
            assert_eq!(self.map[k].slot as usize, i);
        }
    }
}

fn timeout(t: &Timeouts, e: &Entry, proto: u8) -> u64 {
    match proto {
        PROTO_TCP => t.tcp(e.state),
        PROTO_ICMP => t.icmp_ms,
        PROTO_UDP => {
            if e.has(ASSURED) {
                t.udp_assured_ms
            } else {
                t.udp_unreplied_ms
            }
        }
        _ => t.other_ms,
    }
}

/// A packet on a live entry.
fn step(
    e: &mut Entry,
    src_is_a: bool,
    pkt: &Packet,
    now_ms: u64,
    t: &Timeouts,
    admit: impl FnOnce(Opening) -> Admit,
) -> CtVerdict {
    let proto = pkt.flow.proto;
    let dir = usize::from(src_is_a != e.orig_is_a());
    let tracked = if dir == 0 {
        CtVerdict::Established
    } else {
        CtVerdict::Reply
    };
    if proto == PROTO_TCP {
        let Some(seg) = pkt.tcp_flags.and_then(tcp_seg) else {
            return CtVerdict::Invalid;
        };
        match tcp_step(e, dir, seg) {
            TcpStep::Invalid => return CtVerdict::Invalid,
            TcpStep::Ignore => {
                if seg == Seg::Syn && e.state == ConnState::Established {
                    e.set(SYN_AGAIN, true);
                }
                e.account(dir, pkt.payload_len);
                return tracked;
            }
            TcpStep::Reopen => {
                let sender_opened = match admit(Opening::Fresh) {
                    Admit::No => return CtVerdict::Refused,
                    Admit::SenderOpened => true,
                    Admit::ReceiverOpened => false,
                };
                let orig_is_a = src_is_a == sender_opened;
                *e = Entry {
                    expires: 0,
                    created: now_ms as u32,
                    bytes: [0; 2],
                    packets: [0; 2],
                    slot: e.slot,
                    state: ConnState::SynSent,
                    bits: if orig_is_a { ORIG_IS_A } else { 0 },
                };
                e.account(usize::from(!sender_opened), pkt.payload_len);
                e.expires = now_ms.saturating_add(t.tcp_syn_sent_ms);
                return if sender_opened {
                    CtVerdict::New
                } else {
                    CtVerdict::Reply
                };
            }
            TcpStep::To(next) => {
                if next != e.state {
                    match next {
                        ConnState::FinWait => e.set(FIN_FROM_REPLY, dir == 1),
                        ConnState::LastAck => e.set(LAST_FIN_FROM_REPLY, dir == 1),
                        _ => {}
                    }
                }
                e.set(SYN_AGAIN, false);
                e.state = next;
                e.account(dir, pkt.payload_len);
                if next == ConnState::Established && e.has(SEEN_REPLY) {
                    e.set(ASSURED, true);
                }
            }
        }
    } else {
        e.account(dir, pkt.payload_len);
        if e.has(SEEN_REPLY) {
            e.state = ConnState::Replied;
            if proto == PROTO_UDP && (now_ms as u32).wrapping_sub(e.created) >= UDP_STREAM_AFTER_MS
            {
                e.set(ASSURED, true);
            }
        }
    }
    e.expires = now_ms.saturating_add(timeout(t, e, proto));
    tracked
}

fn info(key: &ConnKey, e: &Entry) -> ConnInfo {
    let (originator, responder) = if e.orig_is_a() {
        (key.a, key.b)
    } else {
        (key.b, key.a)
    };
    ConnInfo {
        state: e.state,
        originator,
        responder,
        assured: e.has(ASSURED),
        expires: Instant(e.expires),
        packets: [u64::from(e.packets[0]), u64::from(e.packets[1])],
        bytes: e.bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use wire::tcp::flags::{ACK, FIN, PSH, RST, SYN, URG};

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

    fn net(n: u32) -> NetworkId {
        NetworkId::new(n).unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn table() -> Conntrack {
        Conntrack::new(Timeouts::default(), 1024)
    }

    /// A:40000 -> B:80 in network 1.
    fn ab() -> Flow {
        Flow::tcp(net(1), A, 40000, B, 80)
    }

    fn out(flags: u8) -> Packet {
        Packet::tcp(ab(), flags)
    }

    fn back(flags: u8) -> Packet {
        Packet::tcp(ab().reversed(), flags)
    }

    fn key(flow: &Flow) -> ConnKey {
        ConnKey::of(flow).unwrap().0
    }

    fn state(ct: &Conntrack, flow: &Flow, now: Instant) -> Option<ConnState> {
        ct.get(&key(flow), now).map(|i| i.state)
    }

    fn deny(_: Opening) -> Admit {
        Admit::No
    }

    fn handshake(ct: &mut Conntrack, now: Instant) {
        assert_eq!(ct.track(&out(SYN), now), CtVerdict::New);
        assert_eq!(ct.track(&back(SYN | ACK), now), CtVerdict::Reply);
        assert_eq!(ct.track(&out(ACK), now), CtVerdict::Established);
    }

    #[test]
    fn key_is_the_same_both_ways() {
        let (k1, d1) = ConnKey::of(&ab()).unwrap();
        let (k2, d2) = ConnKey::of(&ab().reversed()).unwrap();
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        assert!(k1.a <= k1.b);
        // ICMP: the request and its reply share a key, requester first.
        let req = Flow::icmp(net(1), B, A, 8, 7);
        let rep = Flow::icmp(net(1), A, B, 0, 7);
        assert_eq!(key(&req), key(&rep));
        assert_eq!(key(&req).a, (B, 7));
        // A request from the other side is another connection.
        assert_ne!(key(&req), key(&Flow::icmp(net(1), A, B, 8, 7)));
        // Errors and other ICMP types have no key of their own.
        assert!(ConnKey::of(&Flow::icmp(net(1), A, B, 3, 0)).is_none());
        assert!(ConnKey::of(&Flow::icmp(net(1), A, B, 9, 0)).is_none());
        // The key of an inner packet is the key of its connection.
        assert_eq!(ConnKey::from_inner(&ab()), Some(k1));
    }

    #[test]
    fn tcp_handshake_reaches_established() {
        let mut ct = table();
        let t0 = at(1000);
        assert_eq!(ct.track(&out(SYN), t0), CtVerdict::New);
        assert_eq!(state(&ct, &ab(), t0), Some(ConnState::SynSent));
        assert_eq!(
            ct.track(&out(SYN), t0),
            CtVerdict::Established,
            "retransmitted SYN"
        );
        assert_eq!(ct.track(&back(SYN | ACK), t0), CtVerdict::Reply);
        assert_eq!(state(&ct, &ab(), t0), Some(ConnState::SynRecv));
        assert_eq!(ct.track(&out(ACK), t0), CtVerdict::Established);
        assert_eq!(state(&ct, &ab(), t0), Some(ConnState::Established));
        assert_eq!(
            ct.track(&back(ACK | PSH).with_payload(500), t0),
            CtVerdict::Reply
        );
        assert_eq!(ct.len(), 1);
        let info = ct.get(&key(&ab()), t0).unwrap();
        assert_eq!(info.originator, (A, 40000));
        assert_eq!(info.responder, (B, 80));
        assert!(info.assured);
        assert_eq!(info.packets, [3, 2]);
        assert_eq!(info.bytes, [0, 500]);
        assert_eq!(info.expires, t0.plus_secs(5 * 24 * 3600));
        let c = ct.counters();
        assert_eq!((c.entries, c.new, c.established), (1, 1, 4));
    }

    #[test]
    fn tcp_handshake_from_the_other_side_is_remembered() {
        // B opens: B is the originator whatever the address order.
        let mut ct = table();
        assert_eq!(ct.track(&back(SYN), at(0)), CtVerdict::New);
        assert_eq!(ct.track(&out(SYN | ACK), at(0)), CtVerdict::Reply);
        assert_eq!(ct.track(&back(ACK), at(0)), CtVerdict::Established);
        assert_eq!(ct.get(&key(&ab()), at(0)).unwrap().originator, (B, 80));
    }

    #[test]
    fn tcp_invalid_flags_and_out_of_state_segments() {
        let mut ct = table();
        for flags in [0, FIN, SYN | FIN, SYN | RST, FIN | PSH | URG, SYN | ACK] {
            assert_eq!(
                ct.track(&out(flags), at(0)),
                CtVerdict::Invalid,
                "{flags:#x}"
            );
        }
        let mut no_flags = out(0);
        no_flags.tcp_flags = None;
        assert_eq!(ct.track(&no_flags, at(0)), CtVerdict::Invalid);
        assert!(ct.is_empty());
        assert_eq!(ct.track(&out(SYN), at(0)), CtVerdict::New);
        // The originator cannot ACK or FIN before the SYN-ACK, nor send a SYN-ACK.
        assert_eq!(ct.track(&out(ACK), at(0)), CtVerdict::Invalid);
        assert_eq!(ct.track(&out(FIN | ACK), at(0)), CtVerdict::Invalid);
        assert_eq!(ct.track(&out(SYN | ACK), at(0)), CtVerdict::Invalid);
        assert_eq!(state(&ct, &ab(), at(0)), Some(ConnState::SynSent));
        assert_eq!(ct.counters().invalid, 10);
    }

    #[test]
    fn tcp_rst_closes() {
        let mut ct = table();
        handshake(&mut ct, at(0));
        assert_eq!(ct.track(&back(RST), at(5)), CtVerdict::Reply);
        assert_eq!(state(&ct, &ab(), at(5)), Some(ConnState::Closed));
        // Closed entries go after 10 s.
        assert_eq!(state(&ct, &ab(), at(10_004)), Some(ConnState::Closed));
        assert_eq!(state(&ct, &ab(), at(10_005)), None);
        // A refused connection: RST answering the SYN.
        let mut ct = table();
        ct.track(&out(SYN), at(0));
        assert_eq!(ct.track(&back(RST | ACK), at(1)), CtVerdict::Reply);
        assert_eq!(state(&ct, &ab(), at(1)), Some(ConnState::Closed));
        // An RST for nothing tracked is invalid.
        let mut ct = table();
        assert_eq!(ct.track(&back(RST), at(0)), CtVerdict::Invalid);
        assert!(ct.is_empty());
    }

    #[test]
    fn tcp_fin_both_ways_then_ack_is_time_wait() {
        let mut ct = table();
        handshake(&mut ct, at(0));
        assert_eq!(ct.track(&out(FIN | ACK), at(1)), CtVerdict::Established);
        assert_eq!(state(&ct, &ab(), at(1)), Some(ConnState::FinWait));
        assert_eq!(ct.track(&out(FIN | ACK), at(1)), CtVerdict::Established);
        assert_eq!(
            state(&ct, &ab(), at(1)),
            Some(ConnState::FinWait),
            "retransmit"
        );
        assert_eq!(ct.track(&back(ACK), at(2)), CtVerdict::Reply);
        assert_eq!(state(&ct, &ab(), at(2)), Some(ConnState::CloseWait));
        assert_eq!(ct.track(&back(ACK | PSH), at(2)), CtVerdict::Reply);
        assert_eq!(state(&ct, &ab(), at(2)), Some(ConnState::CloseWait));
        assert_eq!(ct.track(&back(FIN | ACK), at(3)), CtVerdict::Reply);
        assert_eq!(state(&ct, &ab(), at(3)), Some(ConnState::LastAck));
        assert_eq!(ct.track(&out(ACK), at(4)), CtVerdict::Established);
        assert_eq!(state(&ct, &ab(), at(4)), Some(ConnState::TimeWait));
        let expires = ct.get(&key(&ab()), at(4)).unwrap().expires;
        assert_eq!(expires, at(4).plus_secs(120));
        assert_eq!(ct.expire(expires, 10), 1);
        assert!(ct.is_empty());
    }

    #[test]
    fn tcp_simultaneous_close() {
        let mut ct = table();
        handshake(&mut ct, at(0));
        ct.track(&out(FIN | ACK), at(1));
        assert_eq!(ct.track(&back(FIN | ACK), at(1)), CtVerdict::Reply);
        assert_eq!(state(&ct, &ab(), at(1)), Some(ConnState::LastAck));
        // The side that sent the last FIN acknowledging the first: still waiting.
        ct.track(&back(ACK), at(2));
        assert_eq!(state(&ct, &ab(), at(2)), Some(ConnState::LastAck));
        ct.track(&out(ACK), at(2));
        assert_eq!(state(&ct, &ab(), at(2)), Some(ConnState::TimeWait));
    }

    #[test]
    fn tcp_syn_on_a_closed_tuple_reopens_with_admission() {
        let mut ct = table();
        handshake(&mut ct, at(0));
        ct.track(&out(FIN | ACK), at(1));
        ct.track(&back(FIN | ACK), at(1));
        ct.track(&out(ACK), at(1));
        assert_eq!(state(&ct, &ab(), at(1)), Some(ConnState::TimeWait));
        // B reuses the tuple to open towards A: a new connection, subject to admission.
        assert_eq!(ct.track_with(&back(SYN), at(2), deny), CtVerdict::Refused);
        assert_eq!(state(&ct, &ab(), at(2)), Some(ConnState::TimeWait));
        assert_eq!(ct.track(&back(SYN), at(3)), CtVerdict::New);
        let info = ct.get(&key(&ab()), at(3)).unwrap();
        assert_eq!((info.state, info.originator), (ConnState::SynSent, (B, 80)));
        assert_eq!(ct.track(&out(SYN | ACK), at(3)), CtVerdict::Reply);
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn tcp_new_syn_on_established_tuple_resyncs_when_answered() {
        let mut ct = table();
        handshake(&mut ct, at(0));
        // The originator lost the connection and opens again with the same ports.
        assert_eq!(ct.track(&out(SYN), at(1)), CtVerdict::Established);
        assert_eq!(state(&ct, &ab(), at(1)), Some(ConnState::Established));
        assert_eq!(ct.track(&back(SYN | ACK), at(1)), CtVerdict::Reply);
        assert_eq!(state(&ct, &ab(), at(1)), Some(ConnState::SynRecv));
        assert_eq!(ct.track(&out(ACK), at(1)), CtVerdict::Established);
        assert_eq!(state(&ct, &ab(), at(1)), Some(ConnState::Established));
        // The responder cannot open on the originator's tuple.
        assert_eq!(ct.track(&back(SYN), at(2)), CtVerdict::Invalid);
    }

    #[test]
    fn tcp_midstream_ack_needs_loose_pickup() {
        let mut strict = table().with_loose_pickup(false);
        assert_eq!(strict.track(&out(ACK), at(0)), CtVerdict::Invalid);
        assert_eq!(strict.track(&out(FIN | ACK), at(0)), CtVerdict::Invalid);
        assert!(strict.is_empty());

        let mut loose = table();
        let mut seen = None;
        let v = loose.track_with(&back(ACK | PSH), at(0), |o| {
            seen = Some(o);
            Admit::ReceiverOpened
        });
        assert_eq!(seen, Some(Opening::Midstream));
        assert_eq!(v, CtVerdict::Reply);
        let info = loose.get(&key(&ab()), at(0)).unwrap();
        assert_eq!(
            (info.state, info.originator),
            (ConnState::Established, (A, 40000))
        );
        assert_eq!(loose.track(&out(ACK), at(1)), CtVerdict::Established);
        // Picked up as opened by the sender.
        let mut loose = table();
        assert_eq!(loose.track(&out(ACK), at(0)), CtVerdict::New);
        assert_eq!(loose.track(&back(ACK), at(0)), CtVerdict::Reply);
        // A FIN mid-stream is picked up too, so a closing connection can finish.
        let mut loose = table();
        assert_eq!(loose.track(&out(FIN | ACK), at(0)), CtVerdict::New);
        assert_eq!(state(&loose, &ab(), at(0)), Some(ConnState::FinWait));
        loose.track(&back(FIN | ACK), at(0));
        loose.track(&out(ACK), at(0));
        assert_eq!(state(&loose, &ab(), at(0)), Some(ConnState::TimeWait));
    }

    #[test]
    fn refused_packet_leaves_no_entry() {
        let mut ct = table();
        assert_eq!(ct.track_with(&out(SYN), at(0), deny), CtVerdict::Refused);
        assert!(ct.is_empty());
        assert_eq!(
            ct.track_with(&back(SYN | ACK), at(0), deny),
            CtVerdict::Invalid
        );
        assert!(ct.is_empty());
        let c = ct.counters();
        assert_eq!((c.refused, c.invalid, c.new), (1, 1, 0));
    }

    #[test]
    fn udp_reply_window_and_timeout() {
        let mut ct = table();
        let q = Packet::new(Flow::udp(net(1), A, 5353, B, 53));
        let r = Packet::new(q.flow.reversed());
        assert_eq!(ct.track(&q, at(0)), CtVerdict::New);
        assert_eq!(state(&ct, &q.flow, at(0)), Some(ConnState::Unreplied));
        // A reply within the 30 s window belongs to the connection.
        assert_eq!(ct.track(&r, at(500)), CtVerdict::Reply);
        let info = ct.get(&key(&q.flow), at(500)).unwrap();
        assert_eq!(info.state, ConnState::Replied);
        // A query and its answer: not a stream, the short timeout stays.
        assert!(!info.assured);
        assert_eq!(info.expires, at(30_500));
        // After the window, the same datagram from B is not a reply but a new
        // connection, which an admission check may refuse.
        assert_eq!(ct.track_with(&r, at(30_500), deny), CtVerdict::Refused);
        assert_eq!(ct.counters().expired, 1);
        assert!(ct.is_empty());

        // Unreplied: the window is 30 s from the last packet.
        let mut ct = table();
        ct.track(&q, at(0));
        ct.track(&q, at(20_000));
        assert_eq!(ct.track(&r, at(49_999)), CtVerdict::Reply);
        let mut ct = table();
        ct.track(&q, at(0));
        assert_eq!(ct.track_with(&r, at(30_000), deny), CtVerdict::Refused);
    }

    #[test]
    fn udp_stream_becomes_assured() {
        let mut ct = table();
        let q = Packet::new(Flow::udp(net(1), A, 4000, B, 4000));
        let r = Packet::new(q.flow.reversed());
        ct.track(&q, at(0));
        ct.track(&r, at(1_000));
        ct.track(&q, at(2_500));
        let info = ct.get(&key(&q.flow), at(2_500)).unwrap();
        assert!(info.assured);
        assert_eq!(info.expires, at(182_500));
        // Assured stays assured.
        ct.track(&r, at(100_000));
        assert_eq!(ct.get(&key(&q.flow), at(0)).unwrap().expires, at(280_000));
    }

    #[test]
    fn icmp_echo_reply_matches_its_request() {
        let mut ct = table();
        let req = Packet::new(Flow::icmp(net(1), A, B, 8, 7));
        let rep = Packet::new(Flow::icmp(net(1), B, A, 0, 7));
        let other_id = Packet::new(Flow::icmp(net(1), B, A, 0, 8));
        assert_eq!(
            ct.track(&rep, at(0)),
            CtVerdict::Invalid,
            "reply to nothing"
        );
        assert_eq!(ct.track(&req, at(0)), CtVerdict::New);
        assert_eq!(ct.track(&rep, at(10)), CtVerdict::Reply);
        assert_eq!(ct.track(&other_id, at(10)), CtVerdict::Invalid);
        assert_eq!(ct.track(&req, at(1_000)), CtVerdict::Established);
        // B pinging A with the same identifier is its own connection.
        let b_req = Packet::new(Flow::icmp(net(1), B, A, 8, 7));
        assert_eq!(ct.track(&b_req, at(1_000)), CtVerdict::New);
        assert_eq!(ct.len(), 2);
        // 30 s after the last packet, the reply window is closed.
        assert_eq!(ct.track(&rep, at(31_000)), CtVerdict::Invalid);
        // Other ICMP messages are not tracked.
        let advert = Packet::new(Flow::icmp(net(1), B, A, 9, 0));
        assert_eq!(ct.track(&advert, at(0)), CtVerdict::Invalid);
    }

    #[test]
    fn icmp_error_for_a_tracked_flow_is_related() {
        let mut ct = table();
        let udp = Flow::udp(net(1), A, 5353, B, 53);
        ct.track(&Packet::new(udp), at(0));
        // Port unreachable from B, and fragmentation needed from a router on the way.
        let from_b = Packet::icmp_error(Flow::icmp(net(1), B, A, 3, 0), udp);
        let from_router = Packet::icmp_error(Flow::icmp(net(1), ROUTER, A, 3, 0), udp);
        assert_eq!(ct.track(&from_b, at(1)), CtVerdict::Related);
        assert_eq!(ct.track(&from_router, at(1)), CtVerdict::Related);
        // Time exceeded about an echo request.
        let echo = Flow::icmp(net(1), A, B, 8, 99);
        ct.track(&Packet::new(echo), at(1));
        let te = Packet::icmp_error(Flow::icmp(net(1), ROUTER, A, 11, 0), echo);
        assert_eq!(ct.track(&te, at(2)), CtVerdict::Related);
        // Not to the sender of the quoted packet, about an untracked flow, in another
        // network, or without a quote: invalid.
        let wrong_dst = Packet::icmp_error(Flow::icmp(net(1), ROUTER, B, 3, 0), udp);
        let untracked = Flow::udp(net(1), A, 5354, B, 53);
        let unknown = Packet::icmp_error(Flow::icmp(net(1), B, A, 3, 0), untracked);
        let other_net = Packet::icmp_error(
            Flow::icmp(net(2), B, A, 3, 0),
            Flow {
                network: net(2),
                ..udp
            },
        );
        let bare = Packet::new(Flow::icmp(net(1), B, A, 3, 0));
        for p in [wrong_dst, unknown, other_net, bare] {
            assert_eq!(ct.track(&p, at(3)), CtVerdict::Invalid, "{p:?}");
        }
        // Errors do not keep a connection alive nor create one.
        assert_eq!(ct.len(), 2);
        assert_eq!(ct.track(&from_b, at(40_000)), CtVerdict::Invalid);
        let c = ct.counters();
        assert_eq!((c.related, c.invalid), (3, 5));
    }

    #[test]
    fn overlapping_tenants_never_share_an_entry() {
        let mut ct = table();
        let f1 = Flow::udp(net(1), A, 1000, B, 2000);
        let f2 = Flow {
            network: net(2),
            ..f1
        };
        assert_eq!(ct.track(&Packet::new(f1), at(0)), CtVerdict::New);
        // The same addresses' reply in network 2 is not a reply.
        assert_eq!(
            ct.track_with(&Packet::new(f2.reversed()), at(0), deny),
            CtVerdict::Refused
        );
        assert_eq!(ct.track(&Packet::new(f2), at(0)), CtVerdict::New);
        assert_eq!(ct.len(), 2);
        assert_ne!(key(&f1), key(&f2));
        let tcp1 = Flow::tcp(net(1), A, 1, B, 2);
        ct.track(&Packet::tcp(tcp1, SYN), at(0));
        let tcp2 = Flow {
            network: net(2),
            ..tcp1
        };
        assert_eq!(
            ct.track(&Packet::tcp(tcp2.reversed(), SYN | ACK), at(0)),
            CtVerdict::Invalid
        );
    }

    #[test]
    fn table_full_refuses_new_and_counts() {
        let mut ct = Conntrack::new(Timeouts::default(), 4);
        let flow = |p: u16| Packet::new(Flow::udp(net(1), A, p, B, 53));
        for p in 0..4 {
            assert_eq!(ct.track(&flow(p), at(0)), CtVerdict::New);
        }
        assert_eq!(ct.track(&flow(4), at(1)), CtVerdict::TableFull);
        assert_eq!(ct.counters().table_full, 1);
        assert_eq!(ct.len(), 4);
        // Tracked connections go on.
        assert_eq!(ct.track(&flow(0), at(10_000)), CtVerdict::Established);
        assert_eq!(
            ct.track(&Packet::new(flow(1).flow.reversed()), at(10_000)),
            CtVerdict::Reply
        );
        // Once some have expired, a new connection evicts one of them.
        assert_eq!(ct.track(&flow(4), at(30_000)), CtVerdict::New);
        let c = ct.counters();
        assert_eq!((c.entries, c.evicted, c.table_full), (4, 1, 1));
        ct.check();
        // A table of size zero refuses everything.
        let mut none = Conntrack::new(Timeouts::default(), 0);
        assert_eq!(none.track(&flow(0), at(0)), CtVerdict::TableFull);
    }

    #[test]
    fn expire_is_bounded() {
        let mut ct = Conntrack::new(Timeouts::default(), 1000);
        for p in 0..100u16 {
            ct.track(&Packet::new(Flow::udp(net(1), A, p, B, 53)), at(0));
        }
        // Ten more that stay alive.
        for p in 100..110u16 {
            ct.track(&Packet::new(Flow::udp(net(1), A, p, B, 53)), at(20_000));
        }
        let now = at(30_000);
        assert_eq!(ct.expire(now, 0), 0);
        let mut rounds = 0;
        loop {
            let removed = ct.expire(now, 7);
            assert!(removed <= 7);
            ct.check();
            rounds += 1;
            if ct.len() == 10 {
                break;
            }
            assert!(rounds < 100, "expire makes progress");
        }
        assert!(rounds >= 100 / 7);
        // Nothing left to expire: a full pass removes nothing.
        assert_eq!(ct.expire(now, 1000), 0);
        assert_eq!(ct.len(), 10);
        assert_eq!(ct.counters().expired, 100);
        assert_eq!(ct.expire(at(50_000), 1000), 10);
        assert!(ct.is_empty());
    }

    #[test]
    fn churn_never_reallocates() {
        let mut ct = Conntrack::new(Timeouts::default(), 256);
        let map_cap = ct.map.capacity();
        let keys_cap = ct.keys.capacity();
        let mut now = 0;
        for round in 0..50u16 {
            for p in 0..256u16 {
                let f = Flow::udp(net(1), A, round.wrapping_mul(256).wrapping_add(p), B, 53);
                ct.track(&Packet::new(f), at(now));
            }
            now += 31_000;
            ct.expire(at(now), 100);
        }
        // hashbrown's capacity() dips while deleted slots wait to be reused, and rehashes
        // in place while the table is at most half full: it must never grow.
        assert!(
            ct.map.capacity() <= map_cap,
            "{} > {map_cap}",
            ct.map.capacity()
        );
        assert_eq!(core::mem::size_of::<(Packed, Entry)>(), 64);
        assert!(ct.memory_bytes() < 256 * 300, "{}", ct.memory_bytes());
        assert_eq!(ct.keys.capacity(), keys_cap);
        ct.check();
    }

    #[test]
    fn clear_and_remove() {
        let mut ct = table();
        handshake(&mut ct, at(0));
        ct.track(&Packet::new(Flow::udp(net(1), A, 1, B, 2)), at(0));
        assert!(ct.remove(&key(&ab())));
        assert!(!ct.remove(&key(&ab())));
        ct.check();
        assert_eq!(ct.iter().count(), 1);
        ct.clear();
        assert!(ct.is_empty());
        ct.check();
    }

    #[derive(Debug, Clone)]
    struct Step {
        network: u32,
        proto: u8,
        src: usize,
        dst: usize,
        sport: usize,
        dport: usize,
        flags: u8,
        admit: u8,
        dt: u64,
        expire: usize,
    }

    fn step_strategy() -> impl Strategy<Value = Step> {
        (
            (
                1u32..=2,
                prop::sample::select(vec![PROTO_TCP, PROTO_UDP, PROTO_ICMP, 47]),
            ),
            (0usize..3, 0usize..3, 0usize..2, 0usize..2),
            prop_oneof![
                Just(SYN),
                Just(SYN | ACK),
                Just(ACK),
                Just(ACK | PSH),
                Just(FIN | ACK),
                Just(RST),
                Just(RST | ACK),
                any::<u8>()
            ],
            (0u8..3, prop_oneof![Just(0u64), 0u64..5_000, 0u64..200_000]),
            0usize..20,
        )
            .prop_map(
                |((network, proto), (src, dst, sport, dport), flags, (admit, dt), expire)| Step {
                    network,
                    proto,
                    src,
                    dst,
                    sport,
                    dport,
                    flags,
                    admit,
                    dt,
                    expire,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random packet sequences never panic, never overfill the table, keep keys
        /// canonical, and a packet of a live connection (a reply in particular) never
        /// creates a second entry.
        #[test]
        fn random_sequences_keep_the_invariants(
            steps in prop::collection::vec(step_strategy(), 1..200),
            loose in any::<bool>(),
        ) {
            let addrs = [A, B, ROUTER];
            let ports = [80u16, 40000];
            let max = 6;
            let mut ct = Conntrack::new(Timeouts::default(), max).with_loose_pickup(loose);
            let mut now = 0u64;
            for s in steps {
                now += s.dt;
                let t = at(now);
                let (src, dst) = (addrs[s.src], addrs[s.dst]);
                let flow = match s.proto {
                    PROTO_ICMP => {
                        let ty = [0u8, 8, 3, 11, 13][usize::from(s.flags % 5)];
                        Flow::icmp(net(s.network), src, dst, ty, ports[s.sport])
                    }
                    PROTO_TCP | PROTO_UDP => Flow {
                        proto: s.proto,
                        ..Flow::tcp(net(s.network), src, ports[s.sport], dst, ports[s.dport])
                    },
                    p => Flow::other(net(s.network), p, src, dst),
                };
                let inner = Flow::udp(net(s.network), dst, ports[s.dport], src, ports[s.sport]);
                let pkt = Packet { tcp_flags: Some(s.flags), payload_len: 10, related: Some(inner), flow };
                let live_before = ConnKey::of(&flow).and_then(|(k, _)| ct.get(&k, t));
                let len_before = ct.len();
                let v = ct.track_with(&pkt, t, |_| match s.admit {
                    0 => Admit::No,
                    1 => Admit::SenderOpened,
                    _ => Admit::ReceiverOpened,
                });
                prop_assert!(ct.len() <= max);
                if live_before.is_some() {
                    prop_assert!(ct.len() <= len_before, "a live connection's packet added an entry");
                    prop_assert!(!matches!(v, CtVerdict::TableFull));
                }
                if matches!(v, CtVerdict::Established | CtVerdict::Reply | CtVerdict::New) {
                    let k = ConnKey::of(&flow).unwrap().0;
                    prop_assert!(ct.get(&k, t).is_some());
                }
                if matches!(v, CtVerdict::Invalid | CtVerdict::Refused | CtVerdict::TableFull | CtVerdict::Related) {
                    prop_assert!(ct.len() <= len_before);
                }
                let reversed = ConnKey::of(&flow.reversed()).map(|(k, _)| k);
                if flow.proto != PROTO_ICMP {
                    prop_assert_eq!(reversed, ConnKey::of(&flow).map(|(k, _)| k));
                }
                let removed = ct.expire(t, s.expire);
                prop_assert!(removed <= s.expire);
                ct.check();
                for (k, _) in ct.iter() {
                    if k.proto != PROTO_ICMP {
                        prop_assert!(k.a <= k.b, "non-canonical key {:?}", k);
                    }
                }
            }
        }
    }
}
