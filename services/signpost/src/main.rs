//! `signpost`: the control plane (`signpost serve`) and its admin CLI.

/// jemalloc with its background purging thread. The server allocates many small,
/// short-lived objects from many threads: glibc malloc spent ~15% of the CPU there
/// (profiled under write load) and fragmented its arenas. mimalloc, used before, left
/// about 150 MiB more resident after a first start on 100,000 organizations than after
/// a restart on the same data: its delayed purging did not return what the start-up
/// fold freed (`MIMALLOC_PURGE_DELAY=0` returned most of it, but mimalloc reads that
/// before `main`). jemalloc's background thread returns freed pages once they have
/// decayed, whichever thread freed them. Side by side (bench/FINDINGS.md, round 5):
/// RSS after a first start 603-624 → 514-523 MiB, after a restart 455-458 → 425-429
/// MiB, write and lookup throughput not lower. jemalloc asks for no transparent huge
/// pages (mimalloc was built with `no_thp` for the zeroing cost of 2 MiB pages).
/// Freed pages go back after a second rather than ten (`dirty_decay_ms`), and thread
/// caches keep blocks of at most 1 KiB (`tcache_max`); both are set when jemalloc is
/// built (`.cargo/config.toml`, where the measurements are).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    signpost::entry::main_entry()
}
