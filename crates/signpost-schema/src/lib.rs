//! The log's schema, generated from `proto/signpost/log/v1`.
//!
//! - [`log::v1::EventEnvelope`]: what the event log stores for every event
//!   (position, stream, version, actor, hash chain, payload bytes).
//! - [`log::v1::Event`]: the payload, a `oneof` of every domain event.
//!
//! Only prost types live here (no tonic), so the event log and the domain can
//! depend on the schema without knowing anything of gRPC. The API crate
//! (`signpost-api`) refers to these types through `extern_path`.
#![forbid(unsafe_code)]

/// `signpost.log.v1`.
pub mod log {
    /// Version 1 of the log schema.
    pub mod v1 {
        #![allow(
            missing_docs,
            clippy::large_enum_variant,
            clippy::doc_lazy_continuation
        )]
        include!(concat!(env!("OUT_DIR"), "/signpost.log.v1.rs"));
    }
}
