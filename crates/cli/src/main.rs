//! The `lifeboat` binary: parse arguments, resolve settings, run one command.

use std::process::ExitCode;

use clap::Parser;

mod args;
mod commands;
mod output;
mod progress;
mod settings;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    settings::init_tracing(&cli.global);
    match commands::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(1)
        }
    }
}
