//! The one loader of `.fm` programs from files, shared by schedulers and
//! grids: whether a spec names a file, and a bounded read of it.

use super::parser::{source_too_large, MAX_SOURCE_BYTES};
use super::Diagnostic;
use crate::error::{Error, Result};

/// Whether `spec` names a file (ends in `.fm` or holds a path separator)
/// rather than a built-in.
pub(crate) fn looks_like_path(spec: &str) -> bool {
    spec.ends_with(".fm") || spec.contains('/') || spec.contains(std::path::MAIN_SEPARATOR)
}

/// Reads the `.fm` source in the file `path` for
/// [`Scheduler::from_source`](crate::scheduler::Scheduler::from_source) or
/// [`TimeGrid::from_source`](crate::grid::TimeGrid::from_source),
/// refusing (without reading it whole) a file over the 1 MiB limit
/// ([`MAX_SOURCE_BYTES`]). A failure to read is [`Error::Io`], a
/// file over the limit [`Error::Scheduler`].
pub fn read_source_file(path: &str) -> Result<String> {
    match read_limited(path) {
        Ok(Ok(src)) => Ok(src),
        Ok(Err(d)) => Err(Error::Scheduler {
            name: path.to_string(),
            report: d.render(path, ""),
        }),
        Err(e) => Err(Error::Io {
            path: path.to_string(),
            source: e,
        }),
    }
}

/// Reads the `.fm` file `path`, at most [`MAX_SOURCE_BYTES`] + 1
/// bytes of it (so a huge file, or an endless one such as `/dev/zero`, is never
/// read whole): the outer error is a failure to read, the inner one a file over
/// the limit.
pub(crate) fn read_limited(path: &str) -> std::io::Result<std::result::Result<String, Diagnostic>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if let Some(d) = source_too_large(bytes.len()) {
        let d = Diagnostic {
            message: format!(
                "`{path}` is too large: more than the limit of 1 MiB ({} bytes) for a `.fm` source",
                MAX_SOURCE_BYTES
            ),
            ..d
        };
        return Ok(Err(d));
    }
    String::from_utf8(bytes)
        .map(Ok)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
