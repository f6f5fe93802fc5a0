//! The `credvend` binary: everything lives in the library; see `credvend::cli`.

fn main() -> std::process::ExitCode {
    credvend::cli::main()
}
