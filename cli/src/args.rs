//! Command-line arguments, defined once; clap derives the help text from them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fmrt::field::onnx::{ExecutionProvider, ProviderPolicy};
use fmrt::likelihood::{Divergence, ProbeDistribution};
use fmrt::solver::StatePrecision;

/// fmrt: a runtime for flow-matching generative models.
#[derive(Debug, Parser)]
#[command(
    name = "fmrt",
    version,
    about,
    long_about = None,
    after_help = "Examples:\n  fmrt demo                      sample the shipped two-moons model and plot it\n  fmrt check cosine              print a scheduler and its diagnostics\n  fmrt plot samples.npy -o samples.png"
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
    /// Also print ONNX Runtime's own warnings and errors on stderr (its
    /// errors otherwise reach you once, in fmrt's message).
    #[arg(long = "verbose", global = true)]
    pub verbose: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a `.fm` scheduler: print α, σ, α', σ' and every diagnostic
    /// (exit 0 without errors, 1 with errors).
    Check(CheckArgs),
    /// Evaluate α, σ, α', σ' of a scheduler at given times.
    Eval(EvalArgs),
    /// Sample an ONNX velocity model and write the samples as .npy.
    Sample(SampleArgs),
    /// Show a model's inputs, outputs, detected mapping, metadata and provider.
    Inspect(InspectArgs),
    /// Log-likelihoods of data under an ONNX velocity model.
    Likelihood(LikelihoodArgs),
    /// Draw samples, trajectories or a scheduler's coefficients as a PNG.
    Plot(PlotArgs),
    /// Find the most accurate fixed-step solver and grid for each call
    /// budget: every candidate against a tight adaptive reference from the
    /// same noise, as a table and a work-precision plot.
    Tune(TuneArgs),
    /// Sample the shipped two-moons model into demo/samples.npy and demo/samples.png.
    Demo(DemoArgs),
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

/// `A,B` as two numbers.
fn parse_interval(s: &str) -> Result<[f64; 2], String> {
    let parts: Vec<&str> = s.split(',').collect();
    let [a, b] = parts.as_slice() else {
        return Err(format!("expected A,B (two numbers), got `{s}`"));
    };
    let number = |p: &str| {
        p.trim()
            .parse::<f64>()
            .map_err(|e| format!("`{p}` is not a number: {e}"))
    };
    Ok([number(a)?, number(b)?])
}

/// Arguments of `fmrt check`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fmrt check my_schedule.fm\n  fmrt check poly --param n=3\n  fmrt check --grid shift --param mu=2 --steps 10"
)]
pub struct CheckArgs {
    /// The scheduler to check.
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    /// Check a time grid (a built-in grid name or a `.fm` grid file) and
    /// print its points; a file with a `grid = …` statement is a grid anyway.
    #[arg(long = "grid")]
    pub grid: bool,
    /// The number of steps whose grid points are printed (grids only).
    #[arg(long = "steps", value_name = "N", default_value_t = 28)]
    pub steps: usize,
}

/// Arguments of `fmrt eval`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fmrt eval cosine --t 0,0.5,1\n  fmrt eval my_schedule.fm --t 0.25 --json"
)]
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

/// Where an ONNX model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EpChoice {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// NVIDIA GPU through the CUDA provider (needs a build with `--features cuda`).
    Cuda,
}

/// What to do when the requested provider is unavailable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyChoice {
    /// Fail.
    Require,
    /// Fall back to the CPU with a note.
    Prefer,
}

/// An ONNX model and how to run it.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The ONNX model.
    #[arg(long = "model", value_name = "M.onnx")]
    pub model: PathBuf,
    /// The ONNX Runtime library (default: $ORT_DYLIB_PATH, then the project's .ort/lib, then the system).
    #[arg(long = "ort-lib", value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// The execution provider.
    #[arg(long = "ep", value_enum, default_value = "cpu")]
    pub ep: EpChoice,
    /// The CUDA device ordinal (with --ep cuda).
    #[arg(long = "device-id", default_value_t = 0)]
    pub device_id: i32,
    /// Fail when the provider is unavailable (require), or fall back to the CPU (prefer).
    #[arg(long = "ep-policy", value_enum, default_value = "require")]
    pub ep_policy: PolicyChoice,
    /// ONNX Runtime's intra-op threads (default: its own choice).
    #[arg(long = "threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Largest batch per model call; larger batches are split (default 16384).
    #[arg(long = "max-batch", value_name = "N")]
    pub max_batch: Option<usize>,
    /// One copy of the model's external-data weights for all its sessions (less memory, slower small batches).
    #[arg(long = "share-weights")]
    pub share_weights: bool,
    /// The model's state input (default: its `fmrt.state_input` metadata, else detected by name and shape).
    #[arg(long = "state-input", value_name = "NAME")]
    pub state_input: Option<String>,
    /// The model's time input (default: its `fmrt.time_input` metadata, else detected by name and shape).
    #[arg(long = "time-input", value_name = "NAME")]
    pub time_input: Option<String>,
}

impl ModelArgs {
    /// The execution provider asked for.
    pub fn provider(&self) -> Result<ExecutionProvider, String> {
        Ok(match self.ep {
            EpChoice::Cpu => ExecutionProvider::Cpu,
            EpChoice::Cuda => ExecutionProvider::Cuda {
                device_id: self.device_id,
            },
        })
    }

    /// The provider policy asked for.
    pub fn policy(&self) -> ProviderPolicy {
        match self.ep_policy {
            PolicyChoice::Require => ProviderPolicy::Require,
            PolicyChoice::Prefer => ProviderPolicy::Prefer,
        }
    }
}

/// Solver settings.
#[derive(Debug, Args)]
pub struct SolverArgs {
    /// euler, midpoint, heun, rk4, bosh3, dopri5, tsit5, the multistep ab2, ab3, pec2, or diffusers' flow-mode dpmpp2m, unipc (fixed steps, one call per step).
    #[arg(long = "solver", default_value = "dopri5")]
    pub solver: String,
    /// Fixed step count (default 100 for fixed-step methods; with an adaptive
    /// method, runs it with this many fixed steps).
    #[arg(long = "steps", value_name = "N", value_parser = parse_steps, allow_negative_numbers = true)]
    pub steps: Option<usize>,
    /// Relative tolerance of adaptive methods (default 1e-5).
    #[arg(long = "rtol", value_name = "TOL")]
    pub rtol: Option<f64>,
    /// Absolute tolerance of adaptive methods (default 1e-5).
    #[arg(long = "atol", value_name = "TOL")]
    pub atol: Option<f64>,
    /// Place the fixed steps on a time grid: a built-in (uniform, shift, sway,
    /// cosine), `edm` (Karras spacing through the model's SNR; params
    /// sigma_min, sigma_max, rho), `diffusers-flow` (diffusers' flow-mode σ
    /// list; params shift, train_steps) or a `.fm` grid file, with --steps N: step i
    /// ends at t(i/N); or an explicit list of times in a .npy/.csv file
    /// (strictly increasing in [0, 1], ending at 1; it may start after 0, the
    /// noise then being the state at its first time).
    #[arg(long = "grid", value_name = "NAME|FILE.fm|FILE.npy|FILE.csv")]
    pub grid: Option<String>,
    /// Override a `param` of the grid (repeatable), e.g. `--grid-param mu=3`.
    #[arg(long = "grid-param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub grid_params: Vec<(String, f64)>,
    /// How adaptive methods measure a step's error and which steps it
    /// controls: independent (each sample its own steps, so a sample's result
    /// does not depend on its batch mates and shards match the whole run; the
    /// default), sample (one shared step, the RMS per sample maximised over
    /// the batch) or batch (one shared step, one RMS over the batch:
    /// torchdiffeq's norm, fewer steps, but a sample's accuracy depends on
    /// its batch mates).
    #[arg(long = "error-norm", value_name = "independent|sample|batch")]
    pub error_norm: Option<String>,
    /// The step-size controller of adaptive methods: pi (proportional–integral,
    /// Gustafsson's coefficients; the default) or i (the plain integral one).
    #[arg(long = "controller", value_name = "pi|i")]
    pub controller: Option<String>,
    /// The most steps (accepted and rejected) an adaptive solve may attempt,
    /// per sample with --error-norm independent (default 100000); see
    /// --partial.
    #[arg(long = "max-steps", value_name = "N")]
    pub max_steps: Option<usize>,
}

/// How a model's output becomes the velocity to integrate; the same options
/// for `fmrt sample` and `fmrt likelihood`.
#[derive(Debug, Args)]
pub struct AdaptArgs {
    /// The schedule the model was trained with (default: its `fmrt.scheduler` metadata).
    #[arg(long = "scheduler", value_name = "FILE.fm|BUILTIN")]
    pub scheduler: Option<String>,
    /// Override a param of the training scheduler (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, f64)>,
    /// Sample along another schedule than the training one.
    #[arg(long = "sample-scheduler", value_name = "FILE.fm|BUILTIN")]
    pub sample_scheduler: Option<String>,
    /// What the model predicts: velocity, x1 or x0 (default: its `fmrt.prediction` metadata, else velocity).
    #[arg(long = "prediction")]
    pub prediction: Option<String>,
    /// Class label for every sample (for models with an int64 label input).
    #[arg(long = "label", value_name = "L", allow_negative_numbers = true)]
    pub label: Option<i64>,
    /// Classifier-free guidance scale w (0: plain conditional sampling).
    #[arg(
        long = "guidance",
        value_name = "W",
        default_value_t = 0.0,
        allow_negative_numbers = true
    )]
    pub guidance: f64,
    /// Apply guidance only for times t in [A, B] (the model's own time; plain
    /// conditional sampling outside), e.g. `--guidance-interval 0.2,0.8`.
    #[arg(long = "guidance-interval", value_name = "A,B", value_parser = parse_interval)]
    pub guidance_interval: Option<[f64; 2]>,
    /// The null label for guidance (default: the model's `fmrt.null_condition`).
    #[arg(long = "null-label", value_name = "L")]
    pub null_label: Option<i64>,
    /// A conditioning input (repeatable): a .npy/.csv file (converted to the
    /// input's type where nothing is lost: 0/1 to bool, in-range integers to
    /// int32, float32 to float16) with one row per sample or one for all, or
    /// one number for every sample.
    #[arg(long = "cond", value_name = "NAME=FILE.npy|NUMBER", value_parser = parse_named)]
    pub cond: Vec<(String, String)>,
    /// The unconditional value of a conditioning input for --guidance
    /// (repeatable; inputs not named keep their conditional value): a
    /// .npy/.csv file, `zeros`, or `fill:VALUE` (default: the model's
    /// `fmrt.null_condition`).
    #[arg(long = "null-cond", value_name = "NAME=FILE.npy|zeros|fill:VALUE", value_parser = parse_named)]
    pub null_cond: Vec<(String, String)>,
    /// Which way the network's time runs: forward (noise 0 → data 1, fmrt's
    /// own) or reversed (σ = 1 − t, output dx/dσ: diffusers, SD3, FLUX)
    /// (default: the model's `fmrt.time_direction`, else forward).
    #[arg(long = "time-direction", value_name = "forward|reversed")]
    pub time_direction: Option<String>,
    /// The factor K of the network's time input (SD3: 1000) (default: the
    /// model's `fmrt.time_scale`, else 1).
    #[arg(long = "time-scale", value_name = "K")]
    pub time_scale: Option<f64>,
    /// Scale the source noise: x0 = S·z with z standard normal (Matcha-TTS:
    /// 0.667); --noise files hold z. Likelihoods use the same source.
    #[arg(long = "noise-scale", value_name = "S")]
    pub noise_scale: Option<f64>,
}

/// Arguments of `fmrt sample`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  fmrt sample --model examples/models/two_moons.onnx -n 2000 --seed 1 -o moons.npy"
)]
pub struct SampleArgs {
    /// The model and where it runs.
    #[command(flatten)]
    pub model: ModelArgs,
    /// How the model's output becomes the velocity (metadata overrides,
    /// guidance, schedule change).
    #[command(flatten)]
    pub adapt: AdaptArgs,
    /// Solver settings.
    #[command(flatten)]
    pub solver: SolverArgs,
    /// Number of samples (ignored with --noise).
    #[arg(short = 'n', default_value_t = 1000)]
    pub n: usize,
    /// Seed of the source noise.
    #[arg(long = "seed", default_value_t = 0)]
    pub seed: u64,
    /// Index of the first sample: writes samples I..I+n of the run the seed
    /// defines (sample i's noise depends on the seed and i only), so shards
    /// run anywhere concatenate to the unsharded run.
    #[arg(long = "first-index", value_name = "I", default_value_t = 0)]
    pub first_index: u64,
    /// Sample the SDE with the ODE's marginals and noise scale G (0: the ODE)
    /// by Euler–Maruyama; needs `--solver euler` (any --steps or --grid) and
    /// the model's schedule.
    #[arg(long = "sde", value_name = "G")]
    pub sde: Option<f64>,
    /// Also write log p of each sample (float64 [N]), integrated along with
    /// the samples in the same solve (see --divergence; probes use --seed).
    #[arg(long = "log-prob", value_name = "LOGP.npy|LOGP.csv")]
    pub log_prob: Option<PathBuf>,
    /// How the divergence is computed for --log-prob.
    #[command(flatten)]
    pub divergence: DivergenceArgs,
    /// Starting points: a float32/float64 .npy of shape [N, ...state shape], or a .csv with one sample per row.
    #[arg(long = "noise", value_name = "X0.npy|X0.csv")]
    pub noise: Option<PathBuf>,
    /// The shape of one sample for -n (needed by models with a dynamic length
    /// or resolution), e.g. `--shape 80,237`; --noise gives its own.
    #[arg(long = "shape", value_name = "D1,D2,...", value_delimiter = ',')]
    pub shape: Vec<usize>,
    /// Write the states at these times as [len(times), N, ...] instead of the final states.
    #[arg(long = "times", value_name = "T,...", value_delimiter = ',')]
    pub times: Vec<f64>,
    /// The output file: .npy (float32), or .csv (one sample per row).
    #[arg(short = 'o', long = "output", value_name = "OUT.npy|OUT.csv")]
    pub output: PathBuf,
    /// Samples per chunk: the run goes through the solver and into the
    /// files one chunk at a time, so memory holds one chunk whatever -n is
    /// (default: 2^20 state values, e.g. 524288 samples of a 2-D model).
    /// Fixed steps and the default independent adaptive steps give the same
    /// samples at any chunk size; --error-norm sample|batch share steps
    /// within a chunk.
    #[arg(long = "chunk", value_name = "N", value_parser = parse_chunk)]
    pub chunk: Option<usize>,
    /// Let a sample that fails (--max-steps, a step-size underflow, a
    /// non-finite state) stop alone: the others are written as a full run
    /// writes them, the stopped ones where they got to (log p NaN), a
    /// status report names them, and the exit code is 4 when any stopped.
    /// Needs adaptive steps with --error-norm independent (the default).
    #[arg(long = "partial")]
    pub partial: bool,
    /// The float type of the solver state: f64 (the default) or f32, the
    /// network's own precision as the projects' sampling loops keep it (no
    /// conversion per model call, half the memory traffic per step). f32
    /// needs an explicit Runge–Kutta method on fixed steps, and no --sde or
    /// --log-prob.
    #[arg(long = "state-precision", value_name = "f64|f32", value_parser = parse_state_precision)]
    pub state_precision: Option<StatePrecision>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long = "json")]
    pub json: bool,
    /// Print nothing on success (unless --json) and show no progress bar.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// Arguments of `fmrt tune`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fmrt tune --model tests/fixtures/gmm_ot.onnx --calls 8,16 --plot wp.png\n  fmrt tune --model M.onnx --cond mu=mu.npy --shape 80,37 -n 2 --solvers euler,heun,unipc"
)]
pub struct TuneArgs {
    /// The model and where it runs.
    #[command(flatten)]
    pub model: ModelArgs,
    /// How the model's output becomes the velocity (metadata overrides,
    /// guidance, schedule change, conditioning), as for `fmrt sample`.
    #[command(flatten)]
    pub adapt: AdaptArgs,
    /// The call budgets (network evaluations per sample), comma-separated:
    /// each candidate takes the most steps that fit.
    #[arg(
        long = "calls",
        value_name = "N,...",
        value_delimiter = ',',
        value_parser = parse_budget,
        default_value = "8,12,16,24,32"
    )]
    pub calls: Vec<usize>,
    /// The candidate solvers, comma-separated (default: all twelve, the
    /// adaptive pairs on fixed steps).
    #[arg(long = "solvers", value_name = "NAME,...", value_delimiter = ',')]
    pub solvers: Vec<String>,
    /// The candidate grids, comma-separated, each a name (a built-in, edm,
    /// diffusers-flow or a .fm file) with its params after colons, e.g.
    /// `uniform,shift:mu=3,edm:rho=5` (default: uniform, shift mu=2, 3, 5,
    /// cosine, sway, edm, diffusers-flow shift=1 and 3).
    #[arg(long = "grids", value_name = "GRID[:P=V...],...", value_delimiter = ',', value_parser = parse_grid)]
    pub grids: Vec<fmrt::tune::GridSpec>,
    /// Number of samples measured.
    #[arg(short = 'n', default_value_t = fmrt::tune::DEFAULT_SAMPLES)]
    pub n: usize,
    /// Seed of the source noise (samples 0..n of the run it defines).
    #[arg(long = "seed", default_value_t = 0)]
    pub seed: u64,
    /// The shape of one sample (needed by models with a dynamic length or
    /// resolution), e.g. `--shape 80,237`.
    #[arg(long = "shape", value_name = "D1,D2,...", value_delimiter = ',')]
    pub shape: Vec<usize>,
    /// rtol = atol of the reference (dopri5, independent per-sample steps).
    #[arg(long = "reference-tol", value_name = "TOL", default_value_t = fmrt::tune::DEFAULT_REFERENCE_TOLERANCE)]
    pub reference_tol: f64,
    /// Rows printed per budget, most accurate first (0: all; --json has all).
    #[arg(long = "top", value_name = "K", default_value_t = 8)]
    pub top: usize,
    /// Write a work-precision plot (median error against calls and against
    /// seconds, log-log) to this PNG file.
    #[arg(long = "plot", value_name = "OUT.png")]
    pub plot: Option<PathBuf>,
    /// Print the whole table as one JSON object on stdout instead.
    #[arg(long = "json")]
    pub json: bool,
}

/// How the divergence is computed (`fmrt likelihood`, `fmrt sample --log-prob`).
#[derive(Debug, Args)]
pub struct DivergenceArgs {
    /// How the divergence is computed: exact (Jacobian-vector products along
    /// every dimension), hutchinson (the unbiased estimator with --probes random
    /// probes) or finite-difference (central differences of the velocity;
    /// biased, an explicit opt-in).
    #[arg(
        long = "divergence",
        value_name = "exact|hutchinson|finite-difference",
        default_value = "exact"
    )]
    pub divergence: Divergence,
    /// Hutchinson probes per sample.
    #[arg(long = "probes", value_name = "K", default_value_t = 1)]
    pub probes: usize,
    /// The distribution of Hutchinson probes: rademacher (±1 entries, lower
    /// variance) or gaussian (standard normal entries).
    #[arg(
        long = "probe-dist",
        value_name = "rademacher|gaussian",
        default_value = "rademacher"
    )]
    pub probe_dist: ProbeDistribution,
    /// Step of the finite-difference divergence.
    #[arg(long = "epsilon", default_value_t = 1e-3)]
    pub epsilon: f64,
}

/// Arguments of `fmrt likelihood`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  fmrt likelihood --model tests/fixtures/gmm_ot.onnx --data x.npy -o logp.npy --json"
)]
pub struct LikelihoodArgs {
    /// The model and where it runs.
    #[command(flatten)]
    pub model: ModelArgs,
    /// How the model's output becomes the velocity (metadata overrides,
    /// guidance, schedule change), as for `fmrt sample`.
    #[command(flatten)]
    pub adapt: AdaptArgs,
    /// The data: a float32/float64 .npy of shape [N, ...state shape], or a .csv with one sample per row.
    #[arg(long = "data", value_name = "X.npy|X.csv")]
    pub data: PathBuf,
    /// How the divergence is computed.
    #[command(flatten)]
    pub divergence: DivergenceArgs,
    /// Solver settings.
    #[command(flatten)]
    pub solver: SolverArgs,
    /// The time the data is taken at (1: data; less: a sample of p_t).
    #[arg(long = "t-start", default_value_t = 1.0)]
    pub t_start: f64,
    /// Seed of the Hutchinson probes.
    #[arg(long = "seed", default_value_t = 0)]
    pub seed: u64,
    /// The output file: log p per sample, float64 [N], as .npy or .csv.
    #[arg(short = 'o', long = "output", value_name = "LOGP.npy|LOGP.csv")]
    pub output: PathBuf,
    /// Also write the standard error of each log p, float64 [N]: the
    /// spread of the Hutchinson probes' estimates over sqrt(K). Needs
    /// --divergence hutchinson (or finite differences along Hutchinson
    /// probes) with --probes 2 or more.
    #[arg(long = "std-error", value_name = "SE.npy|SE.csv")]
    pub std_error: Option<PathBuf>,
    /// Let a sample that fails (--max-steps, a step-size underflow, a
    /// non-finite state) stop alone: the others are written as a full run
    /// writes them, the stopped ones as NaN, a status report names them,
    /// and the exit code is 4 when any stopped. Needs adaptive steps with
    /// --error-norm independent (the default).
    #[arg(long = "partial")]
    pub partial: bool,
    /// Print the summary as one JSON object on stdout.
    #[arg(long = "json")]
    pub json: bool,
    /// Print nothing on success (unless --json) and show no progress bar.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// What `fmrt plot` draws from an array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlotKind {
    /// One dot per sample.
    Scatter,
    /// A 2-D histogram of the samples.
    Density,
    /// Paths of samples through time, from `fmrt sample --times` ([T, N, 2]).
    Trajectory,
}

/// Arguments of `fmrt plot`.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  fmrt plot samples.npy -o samples.png\n  fmrt plot samples.csv -o density.png --kind density --title 'two moons'\n  fmrt plot traj.npy -o traj.png            (from fmrt sample --times 0,0.5,1)\n  fmrt plot --scheduler cosine -o cosine.png"
)]
pub struct PlotArgs {
    /// Samples [N, D] or trajectories [T, N, D] as .npy or .csv (D > 2: the first two axes are drawn).
    #[arg(
        value_name = "X.npy|X.csv",
        required_unless_present_any = ["scheduler", "grid"],
        conflicts_with_all = ["scheduler", "grid"]
    )]
    pub input: Option<PathBuf>,
    /// Draw α, σ, α', σ' of this scheduler over [0, 1] instead of data.
    #[arg(
        long = "scheduler",
        value_name = "FILE.fm|BUILTIN",
        conflicts_with = "grid"
    )]
    pub scheduler: Option<String>,
    /// Draw the time grid t(u) of a built-in grid or `.fm` grid file, with the
    /// points of --steps steps.
    #[arg(long = "grid", value_name = "NAME|FILE.fm")]
    pub grid: Option<String>,
    /// Override a param of the scheduler or grid (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, f64)>,
    /// The number of steps whose points a grid plot marks.
    #[arg(long = "steps", value_name = "N", default_value_t = 28)]
    pub steps: usize,
    /// What to draw (default: trajectory for a 3-D array, else scatter).
    #[arg(long = "kind", value_enum)]
    pub kind: Option<PlotKind>,
    /// The title above the plot (default: the input's name).
    #[arg(long = "title", value_name = "T")]
    pub title: Option<String>,
    /// The output PNG file.
    #[arg(short = 'o', long = "output", value_name = "OUT.png")]
    pub output: PathBuf,
    /// Width and height of the image in pixels.
    #[arg(long = "size", value_name = "PIXELS", default_value_t = 800)]
    pub size: u32,
}

/// Arguments of `fmrt demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  fmrt demo            writes demo/samples.npy and demo/samples.png"
)]
pub struct DemoArgs {
    /// Number of samples.
    #[arg(short = 'n', default_value_t = 2000)]
    pub n: usize,
    /// Seed of the source noise.
    #[arg(long = "seed", default_value_t = 0)]
    pub seed: u64,
    /// The folder the files are written to.
    #[arg(long = "out-dir", value_name = "DIR", default_value = "demo")]
    pub out_dir: PathBuf,
    /// Show no progress bar.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// Arguments of `fmrt inspect`.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  fmrt inspect examples/models/conditional.onnx")]
pub struct InspectArgs {
    /// The ONNX model.
    #[arg(value_name = "M.onnx")]
    pub model: PathBuf,
    /// The ONNX Runtime library.
    #[arg(long = "ort-lib", value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// The execution provider to load it on.
    #[arg(long = "ep", value_enum, default_value = "cpu")]
    pub ep: EpChoice,
    /// The CUDA device ordinal (with --ep cuda).
    #[arg(long = "device-id", default_value_t = 0)]
    pub device_id: i32,
    /// Fail when the provider is unavailable (require), or fall back to the CPU (prefer).
    #[arg(long = "ep-policy", value_enum, default_value = "require")]
    pub ep_policy: PolicyChoice,
    /// The model's state input (default: metadata, else detected).
    #[arg(long = "state-input", value_name = "NAME")]
    pub state_input: Option<String>,
    /// The model's time input (default: metadata, else detected).
    #[arg(long = "time-input", value_name = "NAME")]
    pub time_input: Option<String>,
}

impl InspectArgs {
    /// The model arguments `fmrt inspect` shares with `fmrt sample`.
    pub fn model_args(&self) -> ModelArgs {
        ModelArgs {
            model: self.model.clone(),
            ort_lib: self.ort_lib.clone(),
            ep: self.ep,
            device_id: self.device_id,
            ep_policy: self.ep_policy,
            threads: None,
            max_batch: None,
            share_weights: false,
            state_input: self.state_input.clone(),
            time_input: self.time_input.clone(),
        }
    }
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

/// Parses `NAME=VALUE` (the value kept as text).
fn parse_named(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("`{text}` has no input name before `=`"));
    }
    if value.trim().is_empty() {
        return Err(format!("`{text}` has no value after `=`"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// `--state-precision`: the library's names, f64 or f32.
fn parse_state_precision(text: &str) -> Result<StatePrecision, String> {
    StatePrecision::from_name(text).map_err(|e| e.to_string())
}

/// Parses a step count: a whole number of at least 1.
fn parse_chunk(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{text}` is not a chunk size: --chunk takes a whole number of samples, at least 1"
        )),
    }
}

/// Parses a tuning grid: `NAME` or `NAME:PARAM=VALUE:...`.
fn parse_grid(text: &str) -> Result<fmrt::tune::GridSpec, String> {
    let mut parts = text.trim().split(':');
    let name = parts.next().unwrap_or("").trim();
    if name.is_empty() {
        return Err(format!(
            "`{text}` names no grid: --grids takes NAME or NAME:PARAM=VALUE, e.g. shift:mu=3"
        ));
    }
    let params = parts.map(parse_param).collect::<Result<Vec<_>, _>>()?;
    Ok(fmrt::tune::GridSpec {
        name: name.to_string(),
        params,
    })
}

/// Parses a call budget: a whole number from 1 to [`fmrt::tune::MAX_BUDGET`].
fn parse_budget(text: &str) -> Result<usize, String> {
    let max = fmrt::tune::MAX_BUDGET;
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}` is not a call budget: --calls takes whole numbers from 1 to {max}, e.g. 8,12,16"
        )),
    }
}

fn parse_steps(text: &str) -> Result<usize, String> {
    match text.trim().parse::<i64>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|e| e.to_string()),
        Ok(_) => Err(format!(
            "`{text}` is not a step count: --steps must be at least 1"
        )),
        Err(_) => Err(format!(
            "`{text}` is not a whole number: --steps must be at least 1"
        )),
    }
}
