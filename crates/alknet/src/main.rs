//! The `alknet` binary: see the library (`alknet_cli`) for the commands.

fn main() {
    std::process::exit(alknet_cli::run(std::env::args_os()));
}
