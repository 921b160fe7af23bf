//! Stand-alone `stripefs-bench`: the same as `stripefs bench`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "stripefs-bench", about = "The stripefs benchmark")]
struct Cli {
    #[command(flatten)]
    args: stripefs_bench::BenchArgs,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = stripefs_bench::run(&cli.args) {
        eprintln!("stripefs bench: {e:#}");
        std::process::exit(1);
    }
}
