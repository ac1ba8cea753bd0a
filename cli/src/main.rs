//! The `fmrt` command-line tool.
//!
//! Arguments are parsed by clap into [`args::Cli`], then each subcommand runs
//! from its own module. A failure's exit code comes from its kind
//! ([`failure`]): 0 success, 1 the input is at fault, 2 an internal error (a
//! bug), 3 ONNX Runtime missing, 4 the computation failed.

mod args;
mod check;
mod checkout;
mod color;
mod condition;
mod demo;
mod eval;
mod failure;
mod inspect;
mod likelihood;
mod npy;
mod outcome;
mod plot;
mod progress;
mod sample;
mod setup;
mod stream;
mod tune;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print and succeed; usage errors are user errors.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    quiet_on_closed_pipe();
    if cli.verbose {
        fmrt::field::onnx::set_runtime_log(fmrt::field::onnx::RuntimeLog::Warnings);
    }
    let result = std::panic::catch_unwind(|| match &cli.command {
        args::Command::Check(a) => check::run(a),
        args::Command::Eval(a) => eval::run(a),
        args::Command::Sample(a) => sample::run(a),
        args::Command::Inspect(a) => inspect::run(a),
        args::Command::Likelihood(a) => likelihood::run(a),
        args::Command::Plot(a) => plot::run(a),
        args::Command::Tune(a) => tune::run(a),
        args::Command::Demo(a) => demo::run(a),
    });
    let Ok(result) = result else {
        eprintln!("internal error: fmrt panicked (a bug; please report it with the command line)");
        return ExitCode::from(2);
    };
    match result {
        Ok(code) => code,
        Err(failure) => {
            let message = failure.to_string();
            eprintln!("{}", color::diagnostics(&message, color::enabled(false)));
            failure.exit_code()
        }
    }
}

/// A reader that stops early (`fmrt inspect M.onnx | head`) closes the pipe;
/// `println!` then panics with "Broken pipe". That is the reader's choice,
/// not a failure: exit quietly with success, as other command-line tools do.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if payload.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}
