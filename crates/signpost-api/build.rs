//! Generates the gRPC API from `proto/signpost/{admin,routing,audit,eventlog}/v1` with protox (no system
//! `protoc`) and tonic-prost-build. Log schema types are not generated again:
//! they resolve to `signpost_schema` through `extern_path`.

use prost::Message;

fn main() {
    let proto_root = "../../proto";
    let files = [
        "signpost/admin/v1/admin.proto",
        "signpost/routing/v1/routing.proto",
        "signpost/audit/v1/audit.proto",
        "signpost/eventlog/v1/eventlog.proto",
    ];
    println!("cargo:rerun-if-changed={proto_root}");
    let descriptors = protox::compile(files, [proto_root]).expect("compile api protos");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap());
    std::fs::write(
        out_dir.join("signpost_descriptor.bin"),
        descriptors.encode_to_vec(),
    )
    .expect("write descriptor set");
    tonic_prost_build::configure()
        .extern_path(".signpost.log.v1", "::signpost_schema::log::v1")
        // Export batches carry their entries encoded (`crate::audit::ExportAuditEventsResponse`):
        // the server sends them as its audit database stores them.
        .extern_path(
            ".signpost.audit.v1.ExportAuditEventsResponse",
            "crate::audit::ExportAuditEventsResponse",
        )
        // Routes are kept and compared encoded (`signpost_routing::EncodedRoute`): a
        // map in key order makes equal routes encode to equal bytes.
        .btree_map(".signpost.routing.v1.Route.group_roles")
        .compile_fds(descriptors)
        .expect("generate api");
}
