//! The `signpost` binary's entry point, built inside the e2e package so that
//! tests can start it as a child process (`CARGO_BIN_EXE_signpost-e2e-server`).

fn main() -> std::process::ExitCode {
    signpost::entry::main_entry()
}
