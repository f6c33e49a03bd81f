//! Boxes in OCI registries: references, the box format (docs/oci-boxes.md), boxes as
//! container images (`box_image`, docs/box-images.md), the registry client, resolution
//! into a catalog, push, cosign-compatible signatures, and container images between a
//! registry and an OCI layout (`image`, for stashes).

pub mod box_image;
pub mod client;
pub mod format;
pub mod image;
pub mod layout;
pub mod push;
pub mod registries;
pub mod resolve;
pub mod signature;
pub mod source;

pub use client::Registry;
