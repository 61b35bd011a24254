//! `signpost`: the control plane (`signpost serve`) and its admin CLI.

/// mimalloc instead of glibc malloc: the server allocates many small, short-lived
/// objects from many threads, where glibc spent ~15% of the CPU (profiled under write
/// load) and fragmented its arenas (resident memory far above live data).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    signpost::entry::main_entry()
}
