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
            // A reader that closed the pipe (`lifeboat dump ... | head`) is not an error
            // worth printing; exit like a process killed by SIGPIPE would.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) || e.to_string().contains("Broken pipe")
            {
                return ExitCode::from(141);
            }
            output::print_error(&e);
            ExitCode::from(1)
        }
    }
}
