//! Signpost's gRPC services: handlers a few lines each over
//! `signpost_control::ControlPlane`.
//!
//! - [`admin`]: `ConnectionAdminService` ([`admin::AdminApi`], served by
//!   [`admin::AdminServer`], which reads and answers each call without tonic's codec
//!   streams) and `SetupFormService` ([`admin::SetupFormApi`]).
//! - [`routing`]: `RoutingService` ([`routing::RoutingApi`]): `Resolve` and
//!   `WatchRoutes` over the routing projection, served by
//!   [`routing::RoutingServer`], which encodes each published delta once for
//!   every watch stream; [`routing::relay::ChangeRelay`] wakes a connection's watch
//!   streams together when the table changes.
//! - [`audit`]: `AuditService` ([`audit::AuditApi`]): timeline, verification,
//!   checkpoints and point-in-time answers over `signpost_audit`.
//! - [`eventlog`]: `EventLogService` ([`eventlog::EventLogApi`]): the raw log feed.
//! - [`convert`]: control-plane views → wire messages ([`convert::ToWire`]).
//! - [`status`]: the one place errors become gRPC statuses, with
//!   `google.rpc.ErrorInfo` reasons and `BadRequest` field violations.
//! - [`transport`]: [`transport::CoalescingStream`], the server's sockets, with
//!   the responses finished in one turn of the runtime written together, and
//!   [`transport::incoming`], the accepted sockets as the server serves them.
//! - `unary`: unary calls read and answered with one buffer each way (the admin
//!   service's methods and `Resolve`).
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod convert;
pub mod eventlog;
pub mod routing;
pub mod status;
pub mod transport;
mod unary;

pub use admin::{AdminApi, AdminServer, SetupFormApi, CORRELATION_ID_HEADER, ON_BEHALF_OF_HEADER};
pub use audit::AuditApi;
pub use eventlog::EventLogApi;
pub use routing::{RoutingApi, RoutingServer};
