use clap::Parser;
use gallery::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One TLS crypto backend for every client (NATS, S3), chosen before any connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    gallery::telemetry::init();
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => gallery::app::run_until_signal(args.into_config()?).await,
        Command::Api(args) => gallery::app::run_until_signal(args.into_config()?).await,
        Command::Processor(args) => gallery::app::run_processor_until_signal(args).await,
        Command::Rebuild(args) => gallery::app::rebuild(args).await,
        Command::Bench(args) => gallery::bench::run(args),
    }
}
