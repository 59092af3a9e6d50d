//! Canopy's domain types shared by every part: ids, locators and the substrate address
//! codec. See `shared/DESIGN.md`, "Substrate encoding".

pub mod cidr;
pub mod substrate;

pub use cidr::Ipv4Cidr;
pub use substrate::{Locator, NetworkId, SubstrateAddr};
