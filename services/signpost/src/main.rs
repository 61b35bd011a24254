//! `signpost`: the control plane (`signpost serve`) and its admin CLI.

/// mimalloc instead of glibc malloc: the server allocates many small, short-lived
/// objects from many threads, where glibc spent ~15% of the CPU (profiled under write
/// load) and fragmented its arenas (resident memory far above live data). Built with
/// `no_thp`: with transparent huge pages mimalloc's fresh memory arrived as 2 MiB pages
/// zeroed on first touch, which was a quarter of the CPU of a start on 500,000 events and
/// inflated the resident set (see bench/FINDINGS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    signpost::entry::main_entry()
}
