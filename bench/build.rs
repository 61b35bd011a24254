//! Generates the etcd v3 client subset (`proto/etcd.proto`) with protox (no
//! system `protoc`) and tonic-prost-build.

fn main() {
    println!("cargo:rerun-if-changed=proto/etcd.proto");
    let descriptors = protox::compile(["etcd.proto"], ["proto"]).expect("compile etcd.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)
        .expect("generate the etcd client");
}
