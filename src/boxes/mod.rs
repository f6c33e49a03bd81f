//! Where boxes come from: a reference (a catalog name, `oci://`, an OCI layout) goes in
//! (`library`), a ready box on disk comes out. Catalogs (`catalog`), OCI registries and
//! layouts (`oci`), downloads (`fetch`), the cache (`store`, which also takes x86 kernels
//! out and makes overlays), and which sources must be signed (`trust`).

pub mod catalog;
pub mod fetch;
pub mod library;
pub mod oci;
pub mod reference;
pub mod stash;
pub mod store;
pub mod trust;
