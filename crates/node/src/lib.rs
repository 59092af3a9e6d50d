//! The daemons' I/O layer: TAP and TUN devices with virtio-net offloads ([`tap`]), network
//! namespaces and interface configuration through iproute2 ([`netns`]), and the agent's
//! packet loop that joins the devices to the sans-IO pipeline ([`agent_loop`]).
//!
//! Linux only.

pub mod agent_loop;
pub mod netns;
pub mod tap;
