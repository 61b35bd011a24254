//! The `signpost` binary's entry point, built inside the e2e package so that
//! tests can start it as a child process (`CARGO_BIN_EXE_signpost-e2e-server`).

/// The allocator of the `signpost` binary (see its `main.rs`): jemalloc with its
/// background purging thread.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    signpost::entry::main_entry()
}
