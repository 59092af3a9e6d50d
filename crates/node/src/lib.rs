//! The daemons' I/O layer: TAP and TUN devices with virtio-net offloads ([`tap`]), network
//! namespaces and interface configuration through iproute2 ([`netns`]), and the agent's
//! packet loop that joins the devices to the sans-IO pipeline ([`agent_loop`]); the
//! manager client and its watch stream ([`control`]), the configuration derived from it
//! ([`desired`]), and the daemons `canopy agent` ([`agentd`]) and `canopy edge`
//! ([`edged`]) with their Prometheus metrics ([`metrics`]), and the agent's NAT table
//! saved across restarts ([`nat_state`]).
//!
//! Linux only.

pub mod agent_loop;
pub mod agentd;
pub mod control;
pub mod cpus;
pub mod desired;
pub mod edged;
pub mod handoff;
pub mod metrics;
pub mod nat_state;
pub mod netns;
pub mod ring;
pub mod tap;
pub mod workers;
