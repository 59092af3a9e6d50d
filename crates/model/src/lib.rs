//! Canopy's domain types shared by every part: ids, locators and the substrate address
//! codec. See `shared/DESIGN.md`, "Substrate encoding".

pub mod substrate;

pub use substrate::{Locator, NetworkId, SubstrateAddr};
