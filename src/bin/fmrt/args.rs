//! Command-line arguments, defined once; clap derives the help text from them.

use clap::{Args, Parser, Subcommand};

/// fmrt: a runtime for flow-matching generative models.
#[derive(Debug, Parser)]
#[command(name = "fmrt", version, about, long_about = None)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a `.fm` scheduler: print α, σ, α', σ' and every diagnostic
    /// (exit 0 without errors, 1 with errors).
    Check(CheckArgs),
    /// Evaluate α, σ, α', σ' of a scheduler at given times.
    Eval(EvalArgs),
}

/// A scheduler given by file or built-in name, with parameter overrides.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// A `.fm` file, or a built-in name (ot, poly, cosine, convex_cosine, linear_vp, vp).
    #[arg(value_name = "FILE.fm|BUILTIN")]
    pub scheduler: String,
    /// Override a `param` of the scheduler (repeatable), e.g. `--param n=3`.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, f64)>,
}

/// Arguments of `fmrt check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The scheduler to check.
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
}

/// Arguments of `fmrt eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The scheduler to evaluate.
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    /// Comma-separated times, e.g. `--t 0,0.25,0.5`.
    #[arg(
        long = "t",
        value_name = "T,...",
        value_delimiter = ',',
        required = true,
        allow_negative_numbers = true
    )]
    pub times: Vec<f64>,
    /// Print a JSON list of objects with keys t, alpha, sigma, d_alpha, d_sigma
    /// (non-finite values are written as null).
    #[arg(long)]
    pub json: bool,
}

/// Parses `NAME=VALUE` with a finite number as the value.
fn parse_param(text: &str) -> Result<(String, f64), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{text}` has no parameter name before `=`"));
    }
    let value: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{}` in `{text}` is not a number", value.trim()))?;
    if !value.is_finite() {
        return Err(format!("the value of `{name}` must be finite"));
    }
    Ok((name.to_string(), value))
}
