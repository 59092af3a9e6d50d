//! Canopy's sans-IO packet pipelines: everything that decides what happens to a packet,
//! as plain functions and state machines over byte buffers. No sockets, threads or
//! clocks here; the daemons feed these with packets and the time.
//!
//! - [`siit`]: the RFC 7915 translation between a VM's IPv4 packets and the IPv6
//!   substrate (`locator | network id | IPv4` addresses, no encapsulation).
//! - [`drops`]: the reasons a packet is dropped, and their counters.

pub mod agent;
pub mod buf;
pub mod conntrack;
pub mod drops;
pub mod edge;
pub mod nat;
pub mod pool;
mod ports;
pub mod probe;
pub mod quote;
pub mod rules;
pub mod siit;
pub mod time;

pub use buf::PacketBuf;
pub use drops::{DropCounters, DropReason};
pub use time::Instant;
