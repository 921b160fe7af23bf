//! The `stripefs` command line.

mod demo;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "stripefs",
    version,
    about = "A striped multi-device filesystem with registered-buffer I/O"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make scratch devices, write a pattern across a striped volume with registered writes,
    /// read it back with registered reads while the buffer migrates, verify every byte.
    Demo(demo::DemoArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Demo(args) => demo::run(args),
    };
    if let Err(e) = result {
        eprintln!("stripefs: {e:#}");
        std::process::exit(1);
    }
}
