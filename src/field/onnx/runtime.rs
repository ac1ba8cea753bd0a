//! Finding and loading the ONNX Runtime shared library.
//!
//! fmrt links nothing at build time: the library (`libonnxruntime.so`, version
//! ≥ 1.31) is loaded once per process, the first time an ONNX model is opened
//! or [`init_runtime`] is called. The places tried, in order:
//!
//! 1. an explicit path given by the caller ([`init_runtime`]`(Some(path))`,
//!    [`OnnxFieldBuilder::ort_library`](super::OnnxFieldBuilder::ort_library));
//! 2. the environment variable `ORT_DYLIB_PATH`;
//! 3. `.ort/lib/` beside the running executable;
//! 4. the system's library search path (a plain `libonnxruntime.so`).
//!
//! An explicit path or `ORT_DYLIB_PATH` is used alone: if it does not load, that
//! is the error, without falling back. The library is never downloaded by fmrt
//! itself, and no folder of the machine fmrt was built on is searched: a
//! shipped `libfmrt.so` must not load whatever someone plants in a source tree.
//!
//! Development is the one exception, and it is asked for explicitly: tests,
//! examples and the CLI run from a source checkout call
//! [`ensure_runtime_for_development`] with that checkout's folder, which also
//! searches its `.ort/lib/` (with the `cuda` feature, `.ort/gpu/lib/` first)
//! and runs its `bash scripts/fetch-onnxruntime.sh` (see [`FETCH_COMMAND`])
//! when the library is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ort::logging::LogLevel;

use crate::{Error, Result};

/// The ONNX Runtime version the fetch script provides (and ort is built for).
pub const ORT_VERSION: &str = "1.31.1";

/// The one command that provides the library in a source checkout.
pub const FETCH_COMMAND: &str = "bash scripts/fetch-onnxruntime.sh";

/// The environment variable naming the library file (shared with ort).
pub const ORT_DYLIB_PATH: &str = "ORT_DYLIB_PATH";

/// Where the loaded library was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LibrarySource {
    /// A path given through the API (or the CLI's `--ort-lib`).
    Explicit,
    /// The `ORT_DYLIB_PATH` environment variable.
    Environment,
    /// The `.ort/` folder of an fmrt source checkout named by the caller
    /// ([`ensure_runtime_for_development`], [`SearchPlaces::development`]).
    Project,
    /// The `.ort/lib/` folder beside the running executable.
    BesideExecutable,
    /// The system's library search path.
    System,
}

impl std::fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LibrarySource::Explicit => "explicit path",
            LibrarySource::Environment => "ORT_DYLIB_PATH",
            LibrarySource::Project => "project folder .ort/",
            LibrarySource::BesideExecutable => ".ort/lib beside the executable",
            LibrarySource::System => "system library path",
        })
    }
}

/// The ONNX Runtime library this process uses.
#[derive(Clone, Debug)]
pub struct RuntimeInfo {
    /// The library file as it was loaded (a bare file name for the system path).
    pub library: PathBuf,
    /// How it was found.
    pub source: LibrarySource,
    /// Candidates tried before it that exist but failed to load, with the reason.
    pub skipped: Vec<String>,
}

struct Runtime {
    info: RuntimeInfo,
    environment: ort::environment::Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

/// The runtime loaded in this process, if any.
pub fn runtime_info() -> Option<&'static RuntimeInfo> {
    RUNTIME.get().map(|r| &r.info)
}

/// Loads ONNX Runtime (once per process) and returns which library is in use.
///
/// With `explicit`, only that file is tried. Once a library is loaded, later
/// calls return it; an explicit path naming a different file is then an error,
/// since a process can hold only one ONNX Runtime.
pub fn init_runtime(explicit: Option<&Path>) -> Result<&'static RuntimeInfo> {
    Ok(&runtime(explicit)?.info)
}

/// The process's ort environment and library, loading the library if needed
/// (as [`init_runtime`]); for code that builds its own ort sessions, such as
/// derived graphs, on the same runtime.
pub fn ort_environment(
    explicit: Option<&Path>,
) -> Result<(&'static ort::environment::Environment, &'static RuntimeInfo)> {
    let rt = runtime(explicit)?;
    Ok((&rt.environment, &rt.info))
}

fn runtime(explicit: Option<&Path>) -> Result<&'static Runtime> {
    if let Some(rt) = RUNTIME.get() {
        return check_same(rt, explicit);
    }
    // A poisoned lock only means another thread panicked while loading; the
    // OnceLock is still consistent, so carry on.
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return check_same(rt, explicit);
    }
    let loaded = load(&SearchPlaces::standard(explicit))?;
    Ok(RUNTIME.get_or_init(|| loaded))
}

/// Loads ONNX Runtime (once per process) from the first of `places` that
/// loads; when one is already loaded, returns it without searching.
pub fn init_runtime_from(places: &SearchPlaces) -> Result<&'static RuntimeInfo> {
    if let Some(rt) = RUNTIME.get() {
        return Ok(&rt.info);
    }
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rt) = RUNTIME.get() {
        return Ok(&rt.info);
    }
    let loaded = load(places)?;
    Ok(&RUNTIME.get_or_init(|| loaded).info)
}

fn check_same(rt: &'static Runtime, explicit: Option<&Path>) -> Result<&'static Runtime> {
    let Some(path) = explicit else {
        return Ok(rt);
    };
    if !path.is_file() {
        return Err(Error::InvalidArgument(format!(
            "ONNX Runtime library `{}` does not exist (ONNX Runtime is already loaded from `{}`)",
            path.display(),
            rt.info.library.display()
        )));
    }
    let same = match (path.canonicalize(), rt.info.library.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        Ok(rt)
    } else {
        Err(Error::InvalidArgument(format!(
            "cannot load ONNX Runtime from `{}`: this process already uses `{}` ({}), \
             and only one ONNX Runtime library can be loaded per process",
            path.display(),
            rt.info.library.display(),
            rt.info.source
        )))
    }
}

/// The library's file names, most specific first.
fn library_names() -> [String; 2] {
    let (prefix, suffix) = (std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    [
        format!("{prefix}onnxruntime{suffix}.{ORT_VERSION}"),
        format!("{prefix}onnxruntime{suffix}"),
    ]
}

/// The `.ort/` library folders of the source checkout `checkout`, in the
/// order searched (with the `cuda` feature, the GPU build's folder first).
pub fn checkout_folders(checkout: &Path) -> Vec<(LibrarySource, PathBuf)> {
    let mut folders = Vec::new();
    if cfg!(feature = "cuda") {
        folders.push((LibrarySource::Project, checkout.join(".ort/gpu/lib")));
    }
    folders.push((LibrarySource::Project, checkout.join(".ort/lib")));
    folders
}

/// `.ort/lib/` beside the running executable, if its folder is known.
fn beside_executable() -> Option<(LibrarySource, PathBuf)> {
    let exe = std::env::current_exe().ok()?;
    Some((
        LibrarySource::BesideExecutable,
        exe.parent()?.join(".ort/lib"),
    ))
}

/// The places searched for the library, in order (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchPlaces {
    /// A file given by the caller; when set, nothing else is tried.
    pub explicit: Option<PathBuf>,
    /// The value of `ORT_DYLIB_PATH`; when set (and no explicit file), nothing
    /// else is tried.
    pub environment: Option<PathBuf>,
    /// Folders searched for `libonnxruntime.so.1.31.1`, then `libonnxruntime.so`.
    pub folders: Vec<(LibrarySource, PathBuf)>,
    /// The file name tried on the system's library search path, last.
    pub system: Option<String>,
}

impl SearchPlaces {
    /// The places fmrt searches: `explicit`, then `ORT_DYLIB_PATH`, then
    /// `.ort/lib/` beside the executable, then the system's `libonnxruntime.so`.
    pub fn standard(explicit: Option<&Path>) -> SearchPlaces {
        SearchPlaces {
            explicit: explicit.map(Path::to_path_buf),
            environment: std::env::var_os(ORT_DYLIB_PATH)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            folders: beside_executable().into_iter().collect(),
            system: Some(library_names()[1].clone()),
        }
    }

    /// The [standard](Self::standard) places with the source checkout
    /// `checkout`'s [`checkout_folders`] searched first among the folders:
    /// for tests, examples and tools run from that checkout.
    pub fn development(explicit: Option<&Path>, checkout: &Path) -> SearchPlaces {
        let mut places = SearchPlaces::standard(explicit);
        let mut folders = checkout_folders(checkout);
        folders.append(&mut places.folders);
        places.folders = folders;
        places
    }
}

/// Finds the library without loading it into ort: the first existing file
/// among `places` (a system library counts when the dynamic loader can open
/// it). The error lists every place looked at and names [`FETCH_COMMAND`].
pub fn locate(places: &SearchPlaces) -> Result<(PathBuf, LibrarySource)> {
    search(places, |path, source| Ok((path.to_path_buf(), source)))
}

fn load(places: &SearchPlaces) -> Result<Runtime> {
    let mut skipped = Vec::new();
    search(places, |path, source| {
        let result = load_from(path, source, skipped.clone());
        if let Err(e) = &result {
            skipped.push(format!("{}: {e}", path.display()));
        }
        result
    })
}

/// Tries `attempt` on each existing candidate of `places` in order.
fn search<T>(
    places: &SearchPlaces,
    mut attempt: impl FnMut(&Path, LibrarySource) -> Result<T, String>,
) -> Result<T> {
    if let Some(path) = &places.explicit {
        if !path.is_file() {
            return Err(not_found(
                format!(
                    "ONNX Runtime library `{}` (given explicitly) does not exist",
                    path.display()
                ),
                vec![format!("{} (not found)", path.display())],
            ));
        }
        return attempt(path, LibrarySource::Explicit).map_err(|e| {
            not_found(
                format!(
                    "cannot load ONNX Runtime library `{}` (given explicitly): {e}",
                    path.display()
                ),
                vec![format!("{}: {e}", path.display())],
            )
        });
    }
    if let Some(path) = &places.environment {
        if !path.is_file() {
            return Err(not_found(
                format!(
                    "{ORT_DYLIB_PATH} names `{}`, which does not exist; unset it to use \
                     the library that `{FETCH_COMMAND}` puts in .ort/lib/",
                    path.display()
                ),
                vec![format!("{} (not found)", path.display())],
            ));
        }
        return attempt(path, LibrarySource::Environment).map_err(|e| {
            not_found(
                format!(
                    "cannot load ONNX Runtime library `{}` (from {ORT_DYLIB_PATH}): {e}",
                    path.display()
                ),
                vec![format!("{}: {e}", path.display())],
            )
        });
    }

    let mut looked = Vec::new();
    for (source, folder) in &places.folders {
        for name in library_names() {
            let path = folder.join(&name);
            if !path.is_file() {
                looked.push(format!("{} (not found)", path.display()));
                continue;
            }
            match attempt(&path, *source) {
                Ok(found) => return Ok(found),
                Err(e) => looked.push(format!("{}: {e}", path.display())),
            }
        }
    }

    if let Some(system) = &places.system {
        // Probe first: ort panics instead of returning an error for some failed
        // loads it performs itself, and this probe cannot.
        // SAFETY: loading ONNX Runtime runs its initialisers, which have no
        // preconditions; the handle is dropped again right away.
        match unsafe { libloading::Library::new(system) } {
            Ok(lib) => {
                drop(lib);
                match attempt(Path::new(system), LibrarySource::System) {
                    Ok(found) => return Ok(found),
                    Err(e) => looked.push(format!("{system} on the system library path: {e}")),
                }
            }
            Err(_) => looked.push(format!("{system} on the system library path (not found)")),
        }
    }

    Err(not_found(
        format!(
            "the ONNX Runtime library (version >= 1.31) was not found. Run `{FETCH_COMMAND}` \
             in the fmrt source tree to download it into .ort/lib/, or set {ORT_DYLIB_PATH} \
             to a libonnxruntime shared library. Looked in:"
        ),
        looked,
    ))
}

fn not_found(summary: String, tried: Vec<String>) -> Error {
    Error::RuntimeNotFound { summary, tried }
}

/// Which of ONNX Runtime's own log messages reach stderr.
///
/// fmrt runs inside other people's processes, and ONNX Runtime's errors
/// reach the caller through fmrt's error (its message included), so by
/// default none of its log lines are printed. Hosts and tools that want them
/// (the CLI's `--verbose`) raise the level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum RuntimeLog {
    /// Nothing (the default).
    #[default]
    Off,
    /// Errors.
    Errors,
    /// Warnings and errors.
    Warnings,
    /// Informational messages, warnings and errors.
    Info,
    /// Everything, verbose messages included.
    Verbose,
}

static RUNTIME_LOG: AtomicU8 = AtomicU8::new(RuntimeLog::Off as u8);

/// Sets which of ONNX Runtime's log messages this process prints on stderr
/// (see [`RuntimeLog`]); takes effect at once, before or after the library
/// is loaded.
pub fn set_runtime_log(level: RuntimeLog) {
    RUNTIME_LOG.store(level as u8, Ordering::Relaxed);
    if let Some(rt) = RUNTIME.get() {
        rt.environment.set_log_level(ort_level(level));
    }
}

/// The level [`set_runtime_log`] last set.
fn current_log() -> RuntimeLog {
    const LEVELS: [RuntimeLog; 5] = [
        RuntimeLog::Off,
        RuntimeLog::Errors,
        RuntimeLog::Warnings,
        RuntimeLog::Info,
        RuntimeLog::Verbose,
    ];
    LEVELS
        .into_iter()
        .find(|l| *l as u8 == RUNTIME_LOG.load(Ordering::Relaxed))
        .unwrap_or_default()
}

/// The level ONNX Runtime filters its messages at before fmrt's logger sees them.
fn ort_level(level: RuntimeLog) -> LogLevel {
    match level {
        RuntimeLog::Off | RuntimeLog::Errors => LogLevel::Error,
        RuntimeLog::Warnings => LogLevel::Warning,
        RuntimeLog::Info => LogLevel::Info,
        RuntimeLog::Verbose => LogLevel::Verbose,
    }
}

/// fmrt's logger for ONNX Runtime: prints what [`set_runtime_log`] lets through.
fn runtime_logger() -> ort::logging::LoggerFunction {
    Arc::new(
        |level: LogLevel, _category: &str, _id: &str, location: &str, message: &str| {
            let needs = match level {
                LogLevel::Fatal | LogLevel::Error => RuntimeLog::Errors,
                LogLevel::Warning => RuntimeLog::Warnings,
                LogLevel::Info => RuntimeLog::Info,
                LogLevel::Verbose => RuntimeLog::Verbose,
            };
            if current_log() >= needs {
                eprintln!("onnxruntime {level:?} {location}: {message}");
            }
        },
    )
}

fn load_from(path: &Path, source: LibrarySource, skipped: Vec<String>) -> Result<Runtime, String> {
    let builder = ort::init_from(path).map_err(|e| e.to_string())?;
    let environment = builder
        .with_name("fmrt")
        .with_telemetry(false)
        .with_logger(runtime_logger())
        .build()
        .map_err(|e| e.to_string())?;
    environment.set_log_level(ort_level(current_log()));
    Ok(Runtime {
        info: RuntimeInfo {
            library: path.to_path_buf(),
            source,
            skipped,
        },
        environment,
    })
}

/// For tests, examples and tools run from the fmrt source checkout `checkout`:
/// loads ONNX Runtime from [`SearchPlaces::development`], and if no library is
/// found (and `ORT_DYLIB_PATH` is unset), runs the checkout's fetch script
/// (once per process), then tries again.
///
/// Applications should call [`init_runtime`] instead: this function downloads
/// from PyPI (through pip) when the library is missing.
pub fn ensure_runtime_for_development(checkout: &Path) -> Result<&'static RuntimeInfo> {
    let places = SearchPlaces::development(None, checkout);
    let first = match init_runtime_from(&places) {
        Ok(info) => return Ok(info),
        Err(e) => e,
    };
    if places.environment.is_some() {
        // The caller chose a library; fetching another would not be used.
        return Err(first);
    }
    run_fetch_script(checkout)?;
    init_runtime_from(&places)
}

fn run_fetch_script(checkout: &Path) -> Result<()> {
    static FETCHED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let result = FETCHED.get_or_init(|| {
        let script = checkout.join("scripts/fetch-onnxruntime.sh");
        // The CPU library, also for `cuda` builds: tests run on it, and the GPU
        // wheel is ten times larger.
        let mut command = Command::new("bash");
        command.arg(&script);
        eprintln!("fmrt: ONNX Runtime not found; running {}", script.display());
        match command.status() {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => Err(format!("`bash {}` failed ({status})", script.display())),
            Err(e) => Err(format!("cannot run `bash {}`: {e}", script.display())),
        }
    });
    result.clone().map_err(|reason| {
        not_found(
            format!("ONNX Runtime was not found, and fetching it failed: {reason}"),
            Vec::new(),
        )
    })
}
