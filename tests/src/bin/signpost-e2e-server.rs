//! The `signpost` binary's entry point, built inside the e2e package so that
//! tests can start it as a child process (`CARGO_BIN_EXE_signpost-e2e-server`).

/// mimalloc instead of glibc malloc: the server allocates many small, short-lived
/// objects from many threads, where glibc spent ~15% of the CPU (profiled under write
/// load) and fragmented its arenas (resident memory far above live data).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    signpost::entry::main_entry()
}
