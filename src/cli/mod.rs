//! Command-line definitions (clap) and one function per subcommand.

pub fn main() -> i32 {
    0
}
