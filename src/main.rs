//! The `ecmigrate` binary: install the TLS crypto provider, run the CLI, exit with its code.

fn main() {
    // Without an installed provider the first TLS connection panics; aws-lc-rs is the one rustls builds.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    std::process::exit(ecmigrate::cli::main());
}
