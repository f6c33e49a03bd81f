//! Boxes in OCI registries: references, the box format (docs/oci-boxes.md), the registry
//! client, resolution into a catalog, push, and cosign-compatible signatures.

pub mod client;
pub mod format;
pub mod layout;
pub mod push;
pub mod reference;
pub mod registries;
pub mod resolve;
pub mod signature;

pub use client::Registry;
pub use reference::{is_oci, BoxReference};

use sha2::{Digest, Sha256};

/// `sha256:HEX` of `bytes`, the OCI digest form.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", crate::fetch::hex(&Sha256::digest(bytes)))
}
