//! `signpost`: the control plane (`signpost serve`) and its admin CLI.

fn main() -> std::process::ExitCode {
    signpost::entry::main_entry()
}
