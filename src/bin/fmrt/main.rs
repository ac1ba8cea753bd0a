//! The `fmrt` command-line tool.
//!
//! Arguments are parsed by clap into [`args::Cli`], then each subcommand runs
//! from its own module and returns the process exit code.

mod args;
mod check;
mod eval;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let result = match &cli.command {
        args::Command::Check(a) => check::run(a),
        args::Command::Eval(a) => eval::run(a),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}
