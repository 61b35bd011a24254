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
    /// `signpost.audit.v1.ExportAuditEventsResponse`, its entries kept as the bytes of
    /// encoded `AuditEntry` messages: the server sends entries as its audit database
    /// stores them, without building them as messages to encode them again. The wire is
    /// the one `audit.proto` declares (a repeated message field and a repeated bytes field
    /// are encoded alike); [`ExportAuditEventsResponse::decode_entries`] gives the
    /// messages.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ExportAuditEventsResponse {
        /// The entries, each an encoded `signpost.audit.v1.AuditEntry`.
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub entries: Vec<Vec<u8>>,
        /// The export has covered the log up to here; resume after it.
        #[prost(uint64, tag = "2")]
        pub position: u64,
        /// The log head when the export started (for progress).
        #[prost(uint64, tag = "3")]
        pub head: u64,
    }

    impl ExportAuditEventsResponse {
        /// The entries as messages.
        pub fn decode_entries(&self) -> Result<Vec<v1::AuditEntry>, ::prost::DecodeError> {
            use ::prost::Message as _;
            self.entries
                .iter()
                .map(|entry| v1::AuditEntry::decode(entry.as_slice()))
                .collect()
        }
    }

    /// Version 1 of the audit API.
    pub mod v1 {
        #![allow(
            missing_docs,
            clippy::large_enum_variant,
            clippy::doc_lazy_continuation
        )]
        include!(concat!(env!("OUT_DIR"), "/signpost.audit.v1.rs"));
        pub use super::ExportAuditEventsResponse;
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
