//! Compiles `proto/signpost/log/v1` with protox (no system `protoc`) and prost-build.

fn main() {
    let proto_root = "../../proto";
    let files = [
        "signpost/log/v1/envelope.proto",
        "signpost/log/v1/events.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={proto_root}/{file}");
    }
    let descriptors = protox::compile(files, [proto_root]).expect("compile log protos");
    prost_build::Config::new()
        // The envelope's payload and hashes are `Bytes`: decoded from a buffer of the log
        // that is `Bytes` too, they are slices of it, neither allocated nor copied.
        .bytes([".signpost.log.v1.EventEnvelope"])
        // A SAML `ConnectionConfigured` is 544 bytes inline, the next largest event 152:
        // boxed, every decoded event is the smaller size where it is moved by value.
        .boxed(".signpost.log.v1.Event.kind.connection_configured")
        .compile_fds(descriptors)
        .expect("generate log schema");
}
