//! Signpost's wire boundary.
//!
//! - [`admin::v1`]: the generated `ConnectionAdminService` and `SetupFormService`
//!   (server and client), from `proto/signpost/admin/v1`.
//! - [`grpc`]: the handlers ([`grpc::AdminApi`], [`grpc::SetupFormApi`]) over
//!   `signpost_control::ControlPlane`; a few lines each.
//! - [`convert`]: control-plane views → wire messages.
//! - [`status`]: the one place errors become gRPC statuses with `ErrorInfo`
//!   reasons and `BadRequest` field violations.
//! - [`FILE_DESCRIPTOR_SET`]: every API and log schema file, for server reflection.
//!
//! Log schema types (`signpost.log.v1`) come from `signpost_schema`; they are
//! re-exported as [`log`] so clients need one crate only.
#![forbid(unsafe_code)]

pub use signpost_schema::log;

pub mod convert;
pub mod grpc;
pub mod status;

/// `signpost.admin.v1`.
pub mod admin {
    /// Version 1 of the admin API.
    pub mod v1 {
        #![allow(
            missing_docs,
            clippy::large_enum_variant,
            clippy::doc_lazy_continuation
        )]
        include!(concat!(env!("OUT_DIR"), "/signpost.admin.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of the API (with its imports), for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/signpost_descriptor.bin"));
