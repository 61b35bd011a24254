//! Signpost's wire types: what clients (the CLI, login edges, tests) and the
//! server share. Handlers live in `signpost-grpc`.
//!
//! - [`admin::v1`]: the generated `ConnectionAdminService` and `SetupFormService`
//!   (server and client), from `proto/signpost/admin/v1`.
//! - [`routing::v1`]: the generated `RoutingService` (login edges), from
//!   `proto/signpost/routing/v1`.
//! - [`audit::v1`]: `AuditService` (timeline, verification, checkpoints,
//!   point-in-time answers); [`eventlog::v1`]: `EventLogService` (raw log feed).
//! - [`FILE_DESCRIPTOR_SET`]: every API and log schema file, for server reflection.
//!
//! Log schema types (`signpost.log.v1`) come from `signpost_schema`; they are
//! re-exported as [`log`] so clients need one crate only.
#![forbid(unsafe_code)]

pub use signpost_schema::log;

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

/// `signpost.routing.v1`.
pub mod routing {
    /// Version 1 of the routing API.
    pub mod v1 {
        #![allow(
            missing_docs,
            clippy::large_enum_variant,
            clippy::doc_lazy_continuation
        )]
        include!(concat!(env!("OUT_DIR"), "/signpost.routing.v1.rs"));
    }
}

/// `signpost.audit.v1`.
pub mod audit {
    /// Version 1 of the audit API.
    pub mod v1 {
        #![allow(
            missing_docs,
            clippy::large_enum_variant,
            clippy::doc_lazy_continuation
        )]
        include!(concat!(env!("OUT_DIR"), "/signpost.audit.v1.rs"));
    }
}

/// `signpost.eventlog.v1`.
pub mod eventlog {
    /// Version 1 of the event log API.
    pub mod v1 {
        #![allow(
            missing_docs,
            clippy::large_enum_variant,
            clippy::doc_lazy_continuation
        )]
        include!(concat!(env!("OUT_DIR"), "/signpost.eventlog.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of the API (with its imports), for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/signpost_descriptor.bin"));
