//! DHCPv4 (RFC 2131, options from RFC 2132) over the BOOTP message format (RFC 951).
//!
//! The view checks the fixed BOOTP part and the magic cookie; options are walked lazily
//! by [`OptionIter`]. Option overload (option 52: options in `sname`/`file`) and long
//! options split over several instances (RFC 3396) are not followed: the first instance
//! of an option in the options field is the one read.
//!
//! [`DhcpRepr`] carries what a server needs to answer a client, and its `emit` writes a
//! complete message (padded to the 300 bytes of a minimal BOOTP message) into a caller
//! buffer without allocating.

use crate::ethernet::MacAddr;
use crate::{get_u16, get_u32, need, set_u16, set_u32, Error, Result};
use core::fmt;
use core::net::Ipv4Addr;

/// The fixed BOOTP fields plus the magic cookie: where the options start.
pub const HEADER_LEN: usize = 240;
/// The smallest BOOTP message (RFC 1542 section 2.1); `emit` pads to it.
pub const MIN_MESSAGE_LEN: usize = 300;
/// The DHCP magic cookie, 99.130.83.99.
pub const MAGIC_COOKIE: u32 = 0x6382_5363;
/// `op`: a message from a client.
pub const OP_BOOTREQUEST: u8 = 1;
/// `op`: a message from a server.
pub const OP_BOOTREPLY: u8 = 2;
/// The broadcast bit of `flags`: the client cannot receive unicast before it is
/// configured.
pub const FLAG_BROADCAST: u16 = 0x8000;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u8 = 1;
/// DNS servers a [`DhcpRepr`] holds.
pub const MAX_DNS_SERVERS: usize = 4;

/// Option codes (RFC 2132).
pub mod option {
    /// Padding (no length byte).
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers, in order of preference.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Host name.
    pub const HOSTNAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN_NAME: u8 = 15;
    /// Interface MTU.
    pub const INTERFACE_MTU: u8 = 26;
    /// Broadcast address.
    pub const BROADCAST: u8 = 28;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// IP address lease time, seconds.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload.
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAM_REQUEST_LIST: u8 = 55;
    /// Message (error text, with NAK).
    pub const MESSAGE: u8 = 56;
    /// Maximum DHCP message size the client accepts.
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// Renewal (T1) time, seconds.
    pub const RENEWAL_T1: u8 = 58;
    /// Rebinding (T2) time, seconds.
    pub const REBINDING_T2: u8 = 59;
    /// Vendor class identifier.
    pub const VENDOR_CLASS_ID: u8 = 60;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// End of options (no length byte).
    pub const END: u8 = 255;
}

mod field {
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: usize = 4;
    pub const SECS: usize = 8;
    pub const FLAGS: usize = 10;
    pub const CIADDR: usize = 12;
    pub const YIADDR: usize = 16;
    pub const SIADDR: usize = 20;
    pub const GIADDR: usize = 24;
    pub const CHADDR: usize = 28;
    pub const SNAME: usize = 44;
    pub const FILE: usize = 108;
    pub const MAGIC: usize = 236;
    pub const OPTIONS: usize = 240;
}

/// The DHCP message type (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DhcpMessageType(pub u8);

impl DhcpMessageType {
    /// Client broadcast to locate servers.
    pub const DISCOVER: DhcpMessageType = DhcpMessageType(1);
    /// Server offer of parameters.
    pub const OFFER: DhcpMessageType = DhcpMessageType(2);
    /// Client request for the offered parameters (or renewal).
    pub const REQUEST: DhcpMessageType = DhcpMessageType(3);
    /// Client: the address is already in use.
    pub const DECLINE: DhcpMessageType = DhcpMessageType(4);
    /// Server: parameters committed.
    pub const ACK: DhcpMessageType = DhcpMessageType(5);
    /// Server: the client's notion of its address is wrong.
    pub const NAK: DhcpMessageType = DhcpMessageType(6);
    /// Client gives the address up.
    pub const RELEASE: DhcpMessageType = DhcpMessageType(7);
    /// Client asks for local parameters only.
    pub const INFORM: DhcpMessageType = DhcpMessageType(8);

    /// The BOOTP `op` a message of this type carries: reply for OFFER, ACK and NAK.
    pub fn op(self) -> u8 {
        match self {
            Self::OFFER | Self::ACK | Self::NAK => OP_BOOTREPLY,
            _ => OP_BOOTREQUEST,
        }
    }
}

impl fmt::Display for DhcpMessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Self::DISCOVER => "discover",
            Self::OFFER => "offer",
            Self::REQUEST => "request",
            Self::DECLINE => "decline",
            Self::ACK => "ack",
            Self::NAK => "nak",
            Self::RELEASE => "release",
            Self::INFORM => "inform",
            DhcpMessageType(n) => return write!(f, "dhcp-type-{n}"),
        };
        f.write_str(name)
    }
}

/// A view over a DHCP message (the UDP payload).
#[derive(Debug, Clone, Copy)]
pub struct DhcpPacket<T> {
    buf: T,
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl<T: AsRef<[u8]>> DhcpPacket<T> {
    /// Wraps `buf` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        DhcpPacket { buf }
    }

    /// Wraps `buf` after checking that the fixed part fits and the magic cookie is
    /// DHCP's (a plain BOOTP message is `Malformed`). The hardware type is not checked
    /// here; [`DhcpRepr::parse`] wants Ethernet.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        need("dhcp", buf.as_ref(), HEADER_LEN)?;
        let p = DhcpPacket { buf };
        if p.magic_cookie() != MAGIC_COOKIE {
            return Err(Error::Malformed {
                what: "dhcp",
                field: "magic cookie",
            });
        }
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// The whole message.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// [`OP_BOOTREQUEST`] or [`OP_BOOTREPLY`].
    #[inline]
    pub fn op(&self) -> u8 {
        self.buf.as_ref()[field::OP]
    }
    /// Hardware address type (1 for Ethernet).
    #[inline]
    pub fn htype(&self) -> u8 {
        self.buf.as_ref()[field::HTYPE]
    }
    /// Hardware address length (6 for Ethernet).
    #[inline]
    pub fn hlen(&self) -> u8 {
        self.buf.as_ref()[field::HLEN]
    }
    /// Relay hops.
    #[inline]
    pub fn hops(&self) -> u8 {
        self.buf.as_ref()[field::HOPS]
    }
    /// Transaction id.
    #[inline]
    pub fn xid(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::XID)
    }
    /// Seconds since the client began acquiring or renewing.
    #[inline]
    pub fn secs(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::SECS)
    }
    /// The flags field.
    #[inline]
    pub fn flags(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::FLAGS)
    }
    /// The broadcast flag.
    #[inline]
    pub fn broadcast(&self) -> bool {
        self.flags() & FLAG_BROADCAST != 0
    }
    /// Client address (when the client already has one: renew, rebind, inform).
    #[inline]
    pub fn ciaddr(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), field::CIADDR)
    }
    /// "Your" address: the one offered or assigned.
    #[inline]
    pub fn yiaddr(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), field::YIADDR)
    }
    /// Next server (TFTP boot) address.
    #[inline]
    pub fn siaddr(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), field::SIADDR)
    }
    /// Relay agent address.
    #[inline]
    pub fn giaddr(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), field::GIADDR)
    }
    /// The 16-byte client hardware address field.
    #[inline]
    pub fn chaddr(&self) -> &[u8; 16] {
        self.buf.as_ref()[field::CHADDR..field::CHADDR + 16]
            .try_into()
            .unwrap()
    }
    /// The first six bytes of `chaddr`: the client MAC when `htype` is Ethernet.
    #[inline]
    pub fn client_mac(&self) -> MacAddr {
        let b = self.buf.as_ref();
        let c = field::CHADDR;
        MacAddr([b[c], b[c + 1], b[c + 2], b[c + 3], b[c + 4], b[c + 5]])
    }
    /// The server host name field (64 bytes, raw).
    #[inline]
    pub fn sname(&self) -> &[u8] {
        &self.buf.as_ref()[field::SNAME..field::FILE]
    }
    /// The boot file name field (128 bytes, raw).
    #[inline]
    pub fn file(&self) -> &[u8] {
        &self.buf.as_ref()[field::FILE..field::MAGIC]
    }
    /// The magic cookie.
    #[inline]
    pub fn magic_cookie(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::MAGIC)
    }
    /// The options field: everything after the cookie.
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[field::OPTIONS..]
    }
    /// Iterates over the options; see [`OptionIter`].
    #[inline]
    pub fn option_iter(&self) -> OptionIter<'_> {
        OptionIter {
            rest: self.options(),
        }
    }
    /// The data of the first option `code`; a malformed option before it is an error.
    pub fn option(&self, code: u8) -> Result<Option<&[u8]>> {
        for o in self.option_iter() {
            let (c, data) = o?;
            if c == code {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }
    /// The message type option, if present and one byte long.
    pub fn message_type(&self) -> Option<DhcpMessageType> {
        match self.option(option::MESSAGE_TYPE) {
            Ok(Some(&[t])) => Some(DhcpMessageType(t)),
            _ => None,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> DhcpPacket<T> {
    /// The whole message, mutable.
    #[inline]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Sets `op`.
    #[inline]
    pub fn set_op(&mut self, v: u8) {
        self.buf.as_mut()[field::OP] = v;
    }
    /// Sets the hardware type.
    #[inline]
    pub fn set_htype(&mut self, v: u8) {
        self.buf.as_mut()[field::HTYPE] = v;
    }
    /// Sets the hardware address length.
    #[inline]
    pub fn set_hlen(&mut self, v: u8) {
        self.buf.as_mut()[field::HLEN] = v;
    }
    /// Sets the relay hops.
    #[inline]
    pub fn set_hops(&mut self, v: u8) {
        self.buf.as_mut()[field::HOPS] = v;
    }
    /// Sets the transaction id.
    #[inline]
    pub fn set_xid(&mut self, v: u32) {
        set_u32(self.buf.as_mut(), field::XID, v)
    }
    /// Sets `secs`.
    #[inline]
    pub fn set_secs(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::SECS, v)
    }
    /// Sets the flags field.
    #[inline]
    pub fn set_flags(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::FLAGS, v)
    }
    /// Sets `ciaddr`.
    #[inline]
    pub fn set_ciaddr(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::CIADDR..field::CIADDR + 4].copy_from_slice(&a.octets());
    }
    /// Sets `yiaddr`.
    #[inline]
    pub fn set_yiaddr(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::YIADDR..field::YIADDR + 4].copy_from_slice(&a.octets());
    }
    /// Sets `siaddr`.
    #[inline]
    pub fn set_siaddr(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::SIADDR..field::SIADDR + 4].copy_from_slice(&a.octets());
    }
    /// Sets `giaddr`.
    #[inline]
    pub fn set_giaddr(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::GIADDR..field::GIADDR + 4].copy_from_slice(&a.octets());
    }
    /// Sets `chaddr` to `mac` followed by ten zero bytes.
    #[inline]
    pub fn set_client_mac(&mut self, mac: MacAddr) {
        let b = &mut self.buf.as_mut()[field::CHADDR..field::CHADDR + 16];
        b[..6].copy_from_slice(&mac.0);
        b[6..].fill(0);
    }
    /// Zeroes `sname` and `file`.
    #[inline]
    pub fn clear_sname_file(&mut self) {
        self.buf.as_mut()[field::SNAME..field::MAGIC].fill(0);
    }
    /// Sets the magic cookie to DHCP's.
    #[inline]
    pub fn set_magic_cookie(&mut self) {
        set_u32(self.buf.as_mut(), field::MAGIC, MAGIC_COOKIE)
    }
    /// The options field, mutable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[field::OPTIONS..]
    }
}

/// Walks DHCP options, yielding `(code, data)`. `PAD` is skipped, `END` (or the end of
/// the buffer) stops the walk; an option whose length byte is missing or runs past the
/// buffer ends the walk with an error item.
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<(u8, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (&code, after) = self.rest.split_first()?;
            match code {
                option::PAD => self.rest = after,
                option::END => {
                    self.rest = &[];
                    return None;
                }
                _ => {
                    let Some((&len, after)) = after.split_first() else {
                        self.rest = &[];
                        return Some(Err(Error::Malformed {
                            what: "dhcp",
                            field: "option length",
                        }));
                    };
                    let len = len as usize;
                    if len > after.len() {
                        self.rest = &[];
                        return Some(Err(Error::Malformed {
                            what: "dhcp",
                            field: "option length",
                        }));
                    }
                    let (data, rest) = after.split_at(len);
                    self.rest = rest;
                    return Some(Ok((code, data)));
                }
            }
        }
    }
}

/// Up to [`MAX_DNS_SERVERS`] IPv4 addresses, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DnsServers {
    len: u8,
    addrs: [Ipv4Addr; MAX_DNS_SERVERS],
}

impl DnsServers {
    /// No servers.
    pub const EMPTY: DnsServers = DnsServers {
        len: 0,
        addrs: [Ipv4Addr::UNSPECIFIED; MAX_DNS_SERVERS],
    };

    /// The servers in `addrs` (at most [`MAX_DNS_SERVERS`]).
    pub fn new(addrs: &[Ipv4Addr]) -> Result<DnsServers> {
        if addrs.len() > MAX_DNS_SERVERS {
            return Err(Error::Unsupported {
                what: "dhcp",
                field: "number of dns servers",
            });
        }
        let mut d = DnsServers::EMPTY;
        d.addrs[..addrs.len()].copy_from_slice(addrs);
        d.len = addrs.len() as u8;
        Ok(d)
    }

    /// The servers.
    pub fn as_slice(&self) -> &[Ipv4Addr] {
        &self.addrs[..self.len as usize]
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for DnsServers {
    fn default() -> Self {
        DnsServers::EMPTY
    }
}

impl fmt::Debug for DnsServers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// The fields of a DHCP message that a server reads from clients and writes in its
/// answers. Variable-length options borrow from the parsed message (or from the caller
/// when building one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DhcpRepr<'a> {
    /// Option 53; also decides `op` when emitting.
    pub message_type: DhcpMessageType,
    /// Transaction id, copied into the answer.
    pub xid: u32,
    /// Seconds since the client started.
    pub secs: u16,
    /// The broadcast flag.
    pub broadcast: bool,
    /// Client address.
    pub ciaddr: Ipv4Addr,
    /// Offered or assigned address.
    pub yiaddr: Ipv4Addr,
    /// Next server address.
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client MAC (`chaddr`, Ethernet only).
    pub client_mac: MacAddr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 51, seconds.
    pub lease_time: Option<u32>,
    /// Option 58, seconds.
    pub renewal_t1: Option<u32>,
    /// Option 59, seconds.
    pub rebinding_t2: Option<u32>,
    /// Option 1.
    pub subnet_mask: Option<Ipv4Addr>,
    /// Option 3 (the first router of the list).
    pub router: Option<Ipv4Addr>,
    /// Option 28.
    pub broadcast_addr: Option<Ipv4Addr>,
    /// Option 6 (the first [`MAX_DNS_SERVERS`] of the list).
    pub dns_servers: DnsServers,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 57.
    pub max_message_size: Option<u16>,
    /// Option 12, raw bytes.
    pub hostname: Option<&'a [u8]>,
    /// Option 61, raw bytes (usually type 1 followed by the MAC).
    pub client_id: Option<&'a [u8]>,
    /// Option 55: the option codes the client asks for.
    pub parameter_request_list: Option<&'a [u8]>,
}

fn bad_option(field: &'static str) -> Error {
    Error::Malformed {
        what: "dhcp",
        field,
    }
}

fn ip_option(data: &[u8], field: &'static str) -> Result<Ipv4Addr> {
    match *data {
        [a, b, c, d] => Ok(Ipv4Addr::new(a, b, c, d)),
        _ => Err(bad_option(field)),
    }
}

fn u32_option(data: &[u8], field: &'static str) -> Result<u32> {
    match *data {
        [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(bad_option(field)),
    }
}

fn u16_option(data: &[u8], field: &'static str) -> Result<u16> {
    match *data {
        [a, b] => Ok(u16::from_be_bytes([a, b])),
        _ => Err(bad_option(field)),
    }
}

fn list_option<'d>(data: &'d [u8], field: &'static str) -> Result<&'d [u8]> {
    if data.is_empty() || !data.len().is_multiple_of(4) {
        return Err(bad_option(field));
    }
    Ok(data)
}

fn bytes_option<'a>(data: &'a [u8], field: &'static str) -> Result<&'a [u8]> {
    if data.is_empty() {
        return Err(bad_option(field));
    }
    Ok(data)
}

impl<'a> DhcpRepr<'a> {
    /// A message of `message_type` with transaction `xid` for `client_mac`, every other
    /// field zero or absent.
    pub fn new(message_type: DhcpMessageType, xid: u32, client_mac: MacAddr) -> Self {
        DhcpRepr {
            message_type,
            xid,
            secs: 0,
            broadcast: false,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            client_mac,
            requested_ip: None,
            server_id: None,
            lease_time: None,
            renewal_t1: None,
            rebinding_t2: None,
            subnet_mask: None,
            router: None,
            broadcast_addr: None,
            dns_servers: DnsServers::EMPTY,
            mtu: None,
            max_message_size: None,
            hostname: None,
            client_id: None,
            parameter_request_list: None,
        }
    }

    /// The skeleton of a server's answer to this client message: same xid, broadcast
    /// flag, relay address, client MAC and client identifier (RFC 6842), and `server_id`.
    /// The caller fills in the address and the parameters.
    pub fn reply(&self, message_type: DhcpMessageType, server_id: Ipv4Addr) -> DhcpRepr<'a> {
        let mut r = DhcpRepr::new(message_type, self.xid, self.client_mac);
        r.broadcast = self.broadcast;
        r.giaddr = self.giaddr;
        r.client_id = self.client_id;
        r.server_id = Some(server_id);
        r
    }

    /// Reads a checked message. Non-Ethernet hardware and a missing message type (plain
    /// BOOTP) are `Unsupported`; a malformed option, or an option the repr reads with the
    /// wrong length, is `Malformed`.
    pub fn parse<T: AsRef<[u8]>>(p: &'a DhcpPacket<T>) -> Result<DhcpRepr<'a>> {
        if p.htype() != HTYPE_ETHERNET || p.hlen() != 6 {
            return Err(Error::Unsupported {
                what: "dhcp",
                field: "hardware type",
            });
        }
        let mut r = DhcpRepr::new(DhcpMessageType(0), p.xid(), p.client_mac());
        r.secs = p.secs();
        r.broadcast = p.broadcast();
        r.ciaddr = p.ciaddr();
        r.yiaddr = p.yiaddr();
        r.siaddr = p.siaddr();
        r.giaddr = p.giaddr();
        let mut message_type = None;
        let mut dns_seen = false;
        for o in p.option_iter() {
            let (code, data) = o?;
            match code {
                option::MESSAGE_TYPE if message_type.is_none() => match *data {
                    [t] => message_type = Some(DhcpMessageType(t)),
                    _ => return Err(bad_option("message type option")),
                },
                option::REQUESTED_IP if r.requested_ip.is_none() => {
                    r.requested_ip = Some(ip_option(data, "requested ip option")?)
                }
                option::SERVER_ID if r.server_id.is_none() => {
                    r.server_id = Some(ip_option(data, "server id option")?)
                }
                option::LEASE_TIME if r.lease_time.is_none() => {
                    r.lease_time = Some(u32_option(data, "lease time option")?)
                }
                option::RENEWAL_T1 if r.renewal_t1.is_none() => {
                    r.renewal_t1 = Some(u32_option(data, "renewal time option")?)
                }
                option::REBINDING_T2 if r.rebinding_t2.is_none() => {
                    r.rebinding_t2 = Some(u32_option(data, "rebinding time option")?)
                }
                option::SUBNET_MASK if r.subnet_mask.is_none() => {
                    r.subnet_mask = Some(ip_option(data, "subnet mask option")?)
                }
                option::ROUTER if r.router.is_none() => {
                    let l = list_option(data, "router option")?;
                    r.router = Some(ip_option(&l[..4], "router option")?)
                }
                option::BROADCAST if r.broadcast_addr.is_none() => {
                    r.broadcast_addr = Some(ip_option(data, "broadcast option")?)
                }
                option::DNS if !dns_seen => {
                    dns_seen = true;
                    let l = list_option(data, "dns option")?;
                    let mut d = DnsServers::EMPTY;
                    for (i, a) in l.chunks_exact(4).take(MAX_DNS_SERVERS).enumerate() {
                        d.addrs[i] = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                        d.len = i as u8 + 1;
                    }
                    r.dns_servers = d;
                }
                option::INTERFACE_MTU if r.mtu.is_none() => {
                    r.mtu = Some(u16_option(data, "interface mtu option")?)
                }
                option::MAX_MESSAGE_SIZE if r.max_message_size.is_none() => {
                    r.max_message_size = Some(u16_option(data, "max message size option")?)
                }
                option::HOSTNAME if r.hostname.is_none() => {
                    r.hostname = Some(bytes_option(data, "hostname option")?)
                }
                option::CLIENT_ID if r.client_id.is_none() => {
                    r.client_id = Some(bytes_option(data, "client id option")?)
                }
                option::PARAM_REQUEST_LIST if r.parameter_request_list.is_none() => {
                    r.parameter_request_list =
                        Some(bytes_option(data, "parameter request list option")?)
                }
                _ => {}
            }
        }
        r.message_type = message_type.ok_or(Error::Unsupported {
            what: "dhcp",
            field: "message type (plain bootp)",
        })?;
        Ok(r)
    }

    /// True when the client listed option `code` in its parameter request list.
    pub fn requests(&self, code: u8) -> bool {
        self.parameter_request_list
            .is_some_and(|l| l.contains(&code))
    }

    fn options_len(&self) -> usize {
        let ip = |o: Option<Ipv4Addr>| o.map_or(0, |_| 6);
        let word = |o: Option<u32>| o.map_or(0, |_| 6);
        let half = |o: Option<u16>| o.map_or(0, |_| 4);
        let bytes = |o: Option<&[u8]>| o.map_or(0, |b| 2 + b.len());
        let dns = if self.dns_servers.is_empty() {
            0
        } else {
            2 + 4 * self.dns_servers.as_slice().len()
        };
        3 + ip(self.server_id)
            + word(self.lease_time)
            + word(self.renewal_t1)
            + word(self.rebinding_t2)
            + ip(self.subnet_mask)
            + ip(self.broadcast_addr)
            + ip(self.router)
            + dns
            + half(self.mtu)
            + bytes(self.hostname)
            + ip(self.requested_ip)
            + bytes(self.client_id)
            + half(self.max_message_size)
            + bytes(self.parameter_request_list)
            + 1
    }

    /// 240: the fixed part and the cookie.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// The whole message `emit` writes: header, options, END, padding to 300 bytes.
    pub fn buffer_len(&self) -> usize {
        (HEADER_LEN + self.options_len()).max(MIN_MESSAGE_LEN)
    }

    /// Writes the whole message to the first `buffer_len()` bytes of `p`'s buffer:
    /// BOOTP fields (`op` from the message type, Ethernet hardware, hops 0, `sname` and
    /// `file` empty), the cookie, the options present in the repr, END and zero padding.
    /// A variable-length option that is empty or longer than 255 bytes is `Malformed`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut DhcpPacket<T>) -> Result<()> {
        for (o, field) in [
            (self.hostname, "hostname option"),
            (self.client_id, "client id option"),
            (self.parameter_request_list, "parameter request list option"),
        ] {
            if o.is_some_and(|b| b.is_empty() || b.len() > 255) {
                return Err(bad_option(field));
            }
        }
        let len = self.buffer_len();
        need("dhcp", p.buf.as_ref(), len)?;
        let buf = &mut p.buf.as_mut()[..len];
        buf.fill(0);
        let mut m = DhcpPacket::new_unchecked(&mut *buf);
        m.set_op(self.message_type.op());
        m.set_htype(HTYPE_ETHERNET);
        m.set_hlen(6);
        m.set_xid(self.xid);
        m.set_secs(self.secs);
        m.set_flags(if self.broadcast { FLAG_BROADCAST } else { 0 });
        m.set_ciaddr(self.ciaddr);
        m.set_yiaddr(self.yiaddr);
        m.set_siaddr(self.siaddr);
        m.set_giaddr(self.giaddr);
        m.set_client_mac(self.client_mac);
        m.set_magic_cookie();

        let mut w = OptionWriter {
            buf: &mut buf[HEADER_LEN..],
            at: 0,
        };
        w.put(option::MESSAGE_TYPE, &[self.message_type.0]);
        w.ip(option::SERVER_ID, self.server_id);
        w.word(option::LEASE_TIME, self.lease_time);
        w.word(option::RENEWAL_T1, self.renewal_t1);
        w.word(option::REBINDING_T2, self.rebinding_t2);
        w.ip(option::SUBNET_MASK, self.subnet_mask);
        w.ip(option::BROADCAST, self.broadcast_addr);
        w.ip(option::ROUTER, self.router);
        if !self.dns_servers.is_empty() {
            let n = self.dns_servers.as_slice().len();
            let mut b = [0u8; 4 * MAX_DNS_SERVERS];
            for (c, a) in b.chunks_exact_mut(4).zip(self.dns_servers.as_slice()) {
                c.copy_from_slice(&a.octets());
            }
            w.put(option::DNS, &b[..4 * n]);
        }
        w.half(option::INTERFACE_MTU, self.mtu);
        w.bytes(option::HOSTNAME, self.hostname);
        w.ip(option::REQUESTED_IP, self.requested_ip);
        w.bytes(option::CLIENT_ID, self.client_id);
        w.half(option::MAX_MESSAGE_SIZE, self.max_message_size);
        w.bytes(option::PARAM_REQUEST_LIST, self.parameter_request_list);
        w.buf[w.at] = option::END;
        Ok(())
    }
}

/// Appends options to a buffer `DhcpRepr::buffer_len` has sized.
struct OptionWriter<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl OptionWriter<'_> {
    fn put(&mut self, code: u8, data: &[u8]) {
        self.buf[self.at] = code;
        self.buf[self.at + 1] = data.len() as u8;
        self.buf[self.at + 2..self.at + 2 + data.len()].copy_from_slice(data);
        self.at += 2 + data.len();
    }
    fn ip(&mut self, code: u8, v: Option<Ipv4Addr>) {
        if let Some(a) = v {
            self.put(code, &a.octets());
        }
    }
    fn word(&mut self, code: u8, v: Option<u32>) {
        if let Some(x) = v {
            self.put(code, &x.to_be_bytes());
        }
    }
    fn half(&mut self, code: u8, v: Option<u16>) {
        if let Some(x) = v {
            self.put(code, &x.to_be_bytes());
        }
    }
    fn bytes(&mut self, code: u8, v: Option<&[u8]>) {
        if let Some(b) = v {
            self.put(code, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ethernet::{EtherType, EthernetFrame, EthernetRepr};
    use crate::ipv4::{Ipv4Options, Ipv4Packet, Ipv4Repr};
    use crate::udp::{port, UdpPacket, UdpRepr};
    use crate::IpProtocol;
    use proptest::prelude::*;

    /// scapy, laid out like busybox udhcpc's DISCOVER (not captured from a network):
    /// Ether(src="52:54:00:12:34:56", dst="ff:ff:ff:ff:ff:ff")/IP(src="0.0.0.0", dst="255.255.255.255")/UDP(sport=68, dport=67)
    /// /BOOTP(xid=0x3903f326, chaddr=52:54:00:12:34:56)/DHCP(options=[("message-type", "discover"),
    /// ("client_id", b"\x01" + mac), ("max_dhcp_size", 576), ("param_req_list", [1, 3, 6, 12, 15, 28, 42]),
    /// ("vendor_class_id", b"udhcp 1.36.1"), "end"])
    const DHCP_DISCOVER: [u8; 322] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00, 0x45,
        0x00, 0x01, 0x34, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x79, 0xba, 0x00, 0x00, 0x00, 0x00,
        0xff, 0xff, 0xff, 0xff, 0x00, 0x44, 0x00, 0x43, 0x01, 0x20, 0x8a, 0xce, 0x01, 0x01, 0x06,
        0x00, 0x39, 0x03, 0xf3, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x52, 0x54, 0x00, 0x12, 0x34,
        0x56, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x82, 0x53, 0x63, 0x35, 0x01, 0x01,
        0x3d, 0x07, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x39, 0x02, 0x02, 0x40, 0x37, 0x07,
        0x01, 0x03, 0x06, 0x0c, 0x0f, 0x1c, 0x2a, 0x3c, 0x0c, 0x75, 0x64, 0x68, 0x63, 0x70, 0x20,
        0x31, 0x2e, 0x33, 0x36, 0x2e, 0x31, 0xff,
    ];

    /// scapy: Ether(src="02:00:00:00:00:01", dst="52:54:00:12:34:56")/IP(src="10.0.0.1", dst="10.0.0.5")/UDP(sport=67, dport=68)
    /// /BOOTP(op=2, xid=0x3903f326, yiaddr="10.0.0.5", siaddr="10.0.0.1", chaddr=52:54:00:12:34:56)
    /// /DHCP(options=[("message-type", "ack"), ("server_id", "10.0.0.1"), ("lease_time", 3600),
    /// ("renewal_time", 1800), ("rebinding_time", 3150), ("subnet_mask", "255.255.255.0"), ("router", "10.0.0.1"),
    /// ("name_server", "192.0.2.53", "198.51.100.53"), ("interface-mtu", 1480), "end"])
    const DHCP_ACK: [u8; 336] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x01, 0x42, 0x00, 0x00, 0x00, 0x00, 0x40, 0x11, 0x65, 0xa6, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x05, 0x00, 0x43, 0x00, 0x44, 0x01, 0x2e, 0x35, 0x09, 0x02, 0x01, 0x06,
        0x00, 0x39, 0x03, 0xf3, 0x26, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00,
        0x00, 0x05, 0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x52, 0x54, 0x00, 0x12, 0x34,
        0x56, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x63, 0x82, 0x53, 0x63, 0x35, 0x01, 0x05,
        0x36, 0x04, 0x0a, 0x00, 0x00, 0x01, 0x33, 0x04, 0x00, 0x00, 0x0e, 0x10, 0x3a, 0x04, 0x00,
        0x00, 0x07, 0x08, 0x3b, 0x04, 0x00, 0x00, 0x0c, 0x4e, 0x01, 0x04, 0xff, 0xff, 0xff, 0x00,
        0x03, 0x04, 0x0a, 0x00, 0x00, 0x01, 0x06, 0x08, 0xc0, 0x00, 0x02, 0x35, 0xc6, 0x33, 0x64,
        0x35, 0x1a, 0x02, 0x05, 0xc8, 0xff,
    ];

    const NODE: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const ROUTER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

    /// Ethernet -> IPv4 -> UDP (checksum verified) -> DHCP.
    fn dhcp_of(frame: &[u8]) -> DhcpPacket<&[u8]> {
        let f = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(f.ethertype(), EtherType::IPV4);
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.protocol(), IpProtocol::UDP);
        let udp = UdpPacket::new_checked(&frame[34..]).unwrap();
        assert!(udp.verify_checksum_v4(ip.src_bytes(), ip.dst_bytes()));
        DhcpPacket::new_checked(&frame[42..]).unwrap()
    }

    #[test]
    fn parses_a_udhcpc_discover() {
        let p = dhcp_of(&DHCP_DISCOVER);
        assert_eq!(
            (p.op(), p.htype(), p.hlen(), p.hops()),
            (OP_BOOTREQUEST, 1, 6, 0)
        );
        assert_eq!(p.message_type(), Some(DhcpMessageType::DISCOVER));
        let r = DhcpRepr::parse(&p).unwrap();
        assert_eq!(r.message_type, DhcpMessageType::DISCOVER);
        assert_eq!(r.xid, 0x3903_f326);
        assert_eq!(r.client_mac, NODE);
        assert!(!r.broadcast);
        assert_eq!(r.ciaddr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            r.client_id,
            Some(&[1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56][..])
        );
        assert_eq!(r.max_message_size, Some(576));
        assert_eq!(
            r.parameter_request_list,
            Some(&[1, 3, 6, 12, 15, 28, 42][..])
        );
        assert!(r.requests(option::ROUTER) && !r.requests(option::INTERFACE_MTU));
        assert_eq!(
            p.option(option::VENDOR_CLASS_ID).unwrap(),
            Some(&b"udhcp 1.36.1"[..])
        );
        assert_eq!(r.requested_ip, None);
        assert_eq!(r.server_id, None);
    }

    fn ack_repr() -> DhcpRepr<'static> {
        let mut r = DhcpRepr::new(DhcpMessageType::ACK, 0x3903_f326, NODE);
        r.yiaddr = VIP;
        r.siaddr = GW;
        r.server_id = Some(GW);
        r.lease_time = Some(3600);
        r.renewal_t1 = Some(1800);
        r.rebinding_t2 = Some(3150);
        r.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        r.router = Some(GW);
        r.dns_servers = DnsServers::new(&[
            Ipv4Addr::new(192, 0, 2, 53),
            Ipv4Addr::new(198, 51, 100, 53),
        ])
        .unwrap();
        r.mtu = Some(1480);
        r
    }

    #[test]
    fn parses_an_ack() {
        let p = dhcp_of(&DHCP_ACK);
        assert_eq!(p.op(), OP_BOOTREPLY);
        assert_eq!(DhcpRepr::parse(&p).unwrap(), ack_repr());
    }

    #[test]
    fn emits_the_ack_byte_for_byte() {
        let theirs = &DHCP_ACK[42..];
        let r = ack_repr();
        assert_eq!(r.buffer_len(), MIN_MESSAGE_LEN);
        let mut buf = [0x5au8; 320];
        r.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        // scapy does not pad to 300 bytes; the rest is our zero padding.
        assert_eq!(&buf[..theirs.len()], theirs);
        assert!(buf[theirs.len()..MIN_MESSAGE_LEN].iter().all(|&b| b == 0));
        assert_eq!(buf[MIN_MESSAGE_LEN], 0x5a, "wrote past buffer_len");
    }

    /// A whole OFFER frame built on the stack, as the agent answers a DISCOVER.
    #[test]
    fn builds_an_offer_frame_without_allocating() {
        let disc = dhcp_of(&DHCP_DISCOVER);
        let req = DhcpRepr::parse(&disc).unwrap();
        let mut offer = req.reply(DhcpMessageType::OFFER, GW);
        offer.yiaddr = VIP;
        offer.lease_time = Some(86400);
        offer.subnet_mask = Some(Ipv4Addr::new(255, 255, 255, 0));
        offer.router = Some(GW);
        offer.mtu = Some(1480);
        assert_eq!(offer.client_id, req.client_id);

        let udp = UdpRepr {
            src_port: port::DHCP_SERVER,
            dst_port: port::DHCP_CLIENT,
            payload_len: offer.buffer_len(),
        };
        let ip = Ipv4Repr {
            src: GW,
            dst: Ipv4Addr::BROADCAST,
            protocol: IpProtocol::UDP,
            ttl: 64,
            tos: 0,
            ident: 0,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            payload_len: udp.buffer_len(),
            options: Ipv4Options::NONE,
        };
        let eth = EthernetRepr {
            dst: MacAddr::BROADCAST,
            src: ROUTER,
            vlan: None,
            ethertype: EtherType::IPV4,
            payload_len: ip.buffer_len(),
        };
        let mut frame = [0u8; 1514];
        let frame = &mut frame[..eth.buffer_len()];
        let mut f = EthernetFrame::new_unchecked(&mut *frame);
        eth.emit(&mut f).unwrap();
        let mut i = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut i).unwrap();
        let mut u = UdpPacket::new_unchecked(i.payload_mut());
        udp.emit(&mut u).unwrap();
        offer
            .emit(&mut DhcpPacket::new_unchecked(u.payload_mut()))
            .unwrap();
        u.fill_checksum_v4(GW.octets(), [255; 4]);

        let p = dhcp_of(frame);
        assert_eq!(p.op(), OP_BOOTREPLY);
        let back = DhcpRepr::parse(&p).unwrap();
        assert_eq!(back, offer);
        assert_eq!(back.xid, req.xid);
    }

    #[test]
    fn rejects_bad_messages() {
        let msg = &DHCP_DISCOVER[42..];
        for n in [0, 1, 100, 239] {
            assert!(matches!(
                DhcpPacket::new_checked(&msg[..n]),
                Err(Error::Truncated { .. })
            ));
        }
        let mut m = [0u8; 280];
        m.copy_from_slice(msg);
        m[239] = 0x64; // wrong cookie
        assert!(DhcpPacket::new_checked(&m[..]).is_err());
        m[239] = 0x63;

        // An option running past the end is an error item and fails the repr.
        let mut cut = [0u8; 250];
        cut.copy_from_slice(&msg[..250]); // cuts the client id option short
        let p = DhcpPacket::new_checked(&cut[..]).unwrap();
        let items: Vec<_> = p.option_iter().collect();
        assert!(items[0].is_ok() && items[1].is_err() && items.len() == 2);
        assert!(DhcpRepr::parse(&p).is_err());
        // A code without a length byte.
        let p = DhcpPacket::new_checked(&msg[..244]).unwrap();
        assert!(p.option_iter().nth(1).unwrap().is_err());

        // A known option with the wrong size.
        let mut bad = m;
        bad[241] = 2; // message type of length 2
        assert!(DhcpRepr::parse(&DhcpPacket::new_checked(&bad[..]).unwrap()).is_err());

        // No message type: plain BOOTP.
        let mut bootp = m;
        bootp[240] = option::PAD;
        bootp[241] = option::PAD;
        bootp[242] = option::PAD;
        let p = DhcpPacket::new_checked(&bootp[..]).unwrap();
        assert_eq!(p.message_type(), None);
        assert!(matches!(
            DhcpRepr::parse(&p),
            Err(Error::Unsupported { .. })
        ));

        // Token ring.
        let mut tr = m;
        tr[1] = 6;
        assert!(matches!(
            DhcpRepr::parse(&DhcpPacket::new_checked(&tr[..]).unwrap()),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn pad_and_end_are_handled() {
        let mut m = [0u8; 252];
        m[..HEADER_LEN].copy_from_slice(&DHCP_DISCOVER[42..42 + HEADER_LEN]);
        m[240..252].copy_from_slice(&[0, 0, 53, 1, 3, 0, 255, 53, 1, 5, 7, 7]);
        let p = DhcpPacket::new_checked(&m[..]).unwrap();
        let items: Vec<_> = p.option_iter().map(|o| o.unwrap()).collect();
        assert_eq!(items, vec![(53, &[3][..])]);
        assert_eq!(
            DhcpRepr::parse(&p).unwrap().message_type,
            DhcpMessageType::REQUEST
        );
    }

    #[test]
    fn emit_refuses_bad_options_and_short_buffers() {
        let mut r = ack_repr();
        let mut buf = [0u8; 600];
        r.hostname = Some(&[]);
        assert!(r
            .emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
            .is_err());
        let long = [b'a'; 256];
        r.hostname = Some(&long);
        assert!(r
            .emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
            .is_err());
        r.hostname = Some(b"node-1");
        assert!(r
            .emit(&mut DhcpPacket::new_unchecked(&mut buf[..299]))
            .is_err());
        r.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        assert!(DnsServers::new(&[Ipv4Addr::LOCALHOST; 5]).is_err());
        assert_eq!(DhcpMessageType::NAK.to_string(), "nak");
        assert_eq!(DhcpMessageType::REQUEST.op(), OP_BOOTREQUEST);
    }

    /// Owned parts of a repr, for proptest.
    #[derive(Debug, Clone)]
    struct Parts {
        /// Message type, xid, secs, broadcast flag.
        head: (u8, u32, u16, bool),
        /// ciaddr, yiaddr, siaddr, giaddr.
        addrs: [[u8; 4]; 4],
        mac: [u8; 6],
        ips: [Option<[u8; 4]>; 5],
        times: [Option<u32>; 3],
        halves: [Option<u16>; 2],
        dns: Vec<[u8; 4]>,
        blobs: [Option<Vec<u8>>; 3],
    }

    fn arb_parts() -> impl Strategy<Value = Parts> {
        let blob = || proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=255));
        (
            any::<(u8, u32, u16, bool)>(),
            any::<([[u8; 4]; 4], [u8; 6])>(),
            any::<[Option<[u8; 4]>; 5]>(),
            any::<[Option<u32>; 3]>(),
            any::<[Option<u16>; 2]>(),
            proptest::collection::vec(any::<[u8; 4]>(), 0..=MAX_DNS_SERVERS),
            [blob(), blob(), blob()],
        )
            .prop_map(
                |(head, (addrs, mac), ips, times, halves, dns, blobs)| Parts {
                    head,
                    addrs,
                    mac,
                    ips,
                    times,
                    halves,
                    dns,
                    blobs,
                },
            )
    }

    fn repr_of(p: &Parts) -> DhcpRepr<'_> {
        let (t, xid, secs, broadcast) = p.head;
        let [ci, yi, si, gi] = p.addrs;
        let mac = p.mac;
        let ip = |o: Option<[u8; 4]>| o.map(Ipv4Addr::from);
        let dns: Vec<Ipv4Addr> = p.dns.iter().map(|&a| a.into()).collect();
        DhcpRepr {
            message_type: DhcpMessageType(t),
            xid,
            secs,
            broadcast,
            ciaddr: ci.into(),
            yiaddr: yi.into(),
            siaddr: si.into(),
            giaddr: gi.into(),
            client_mac: MacAddr(mac),
            requested_ip: ip(p.ips[0]),
            server_id: ip(p.ips[1]),
            subnet_mask: ip(p.ips[2]),
            router: ip(p.ips[3]),
            broadcast_addr: ip(p.ips[4]),
            lease_time: p.times[0],
            renewal_t1: p.times[1],
            rebinding_t2: p.times[2],
            mtu: p.halves[0],
            max_message_size: p.halves[1],
            dns_servers: DnsServers::new(&dns).unwrap(),
            hostname: p.blobs[0].as_deref(),
            client_id: p.blobs[1].as_deref(),
            parameter_request_list: p.blobs[2].as_deref(),
        }
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(parts in arb_parts(), fill in any::<u8>()) {
            let repr = repr_of(&parts);
            let mut buf = vec![fill; repr.buffer_len()];
            repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..])).unwrap();
            let p = DhcpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(p.op(), repr.message_type.op());
            prop_assert_eq!(DhcpRepr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            head in proptest::collection::vec(any::<u8>(), 0..260),
            opts in proptest::collection::vec(any::<u8>(), 0..80),
            fix in any::<bool>(),
        ) {
            let mut bytes = head;
            if fix {
                // A valid fixed part, so that the option walk gets random options.
                bytes.resize(HEADER_LEN, 0);
                bytes[1] = 1;
                bytes[2] = 6;
                bytes[236..240].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            }
            bytes.extend_from_slice(&opts);
            if let Ok(p) = DhcpPacket::new_checked(&bytes[..]) {
                let _ = DhcpRepr::parse(&p);
                let _ = (p.op(), p.htype(), p.hlen(), p.hops(), p.xid(), p.secs(), p.flags());
                let _ = (p.broadcast(), p.ciaddr(), p.yiaddr(), p.siaddr(), p.giaddr(), p.chaddr());
                let _ = (p.client_mac(), p.sname(), p.file(), p.options(), p.message_type());
                let _ = p.option(option::END);
                for o in p.option_iter() {
                    let _ = o;
                }
            }
        }
    }
}
