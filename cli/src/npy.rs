//! Reading and writing arrays as NumPy `.npy` or `.csv` files (chosen by the
//! file's extension), with one-line errors that name the file, what it holds
//! and what was expected.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use crate::failure::{fail, Failure};

use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

/// The array file formats the command line reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// NumPy `.npy`.
    Npy,
    /// Comma-separated values: one sample per row.
    Csv,
}

/// The format of `path` by its extension, or an error naming the accepted ones.
pub fn format_of(path: &Path) -> Result<Format, Failure> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("npy") => Ok(Format::Npy),
        Some("csv") => Ok(Format::Csv),
        _ => Err(fail!(
            "{}: unknown array format; use a file name ending in .npy or .csv",
            path.display()
        )),
    }
}

/// Reads a float32 array from a `.npy` (float32 or float64) or `.csv` file.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>, Failure> {
    let format = format_of(path)?;
    let file = File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
    match format {
        Format::Npy => read_npy(path, file),
        Format::Csv => read_csv(path, file),
    }
}

/// Reads a `.npy` of float32, or of float64 converted to the nearest float32.
fn read_npy(path: &Path, file: File) -> Result<ArrayD<f32>, Failure> {
    let unreadable = |e: ReadNpyError| format!("{}: not a readable .npy file: {e}", path.display());
    match ArrayD::<f32>::read_npy(BufReader::new(file)) {
        Ok(array) => Ok(array),
        Err(ReadNpyError::WrongDescriptor(_)) => {
            // Not float32: try float64, reopening since the header was consumed.
            let file =
                File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
            match ArrayD::<f64>::read_npy(BufReader::new(file)) {
                Ok(wide) => narrow(path, &wide),
                Err(ReadNpyError::WrongDescriptor(descr)) => Err(fail!(
                    "{}: holds an array of dtype {descr}, expected float32 or float64; convert it with numpy's .astype('float32')",
                    path.display()
                )),
                Err(e) => Err(unreadable(e).into()),
            }
        }
        Err(e) => Err(unreadable(e).into()),
    }
}

/// float64 → float32, refusing finite values beyond float32's range (they
/// would silently become infinities).
fn narrow(path: &Path, wide: &ArrayD<f64>) -> Result<ArrayD<f32>, Failure> {
    if let Some(v) = wide
        .iter()
        .find(|v| v.is_finite() && v.abs() > f64::from(f32::MAX))
    {
        return Err(fail!(
            "{}: holds float64 value {v:e}, beyond float32's range (±3.4e38) that fmrt computes in",
            path.display()
        ));
    }
    Ok(wide.mapv(|v| v as f32))
}

/// Reads a CSV of numbers, one sample per row, into an array [rows, columns].
/// Empty lines and lines starting with `#` are skipped; a first line that is
/// not numeric is taken as a header.
fn read_csv(path: &Path, file: File) -> Result<ArrayD<f32>, Failure> {
    let text = std::io::read_to_string(BufReader::new(file))
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut values = Vec::new();
    let mut columns: Option<usize> = None;
    let mut rows = 0usize;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let parsed: Result<Vec<f32>, &str> = fields
            .iter()
            .map(|f| f.parse::<f32>().map_err(|_| *f))
            .collect();
        let row = match parsed {
            Ok(row) => row,
            Err(_) if rows == 0 && columns.is_none() && fields.iter().all(|f| f.parse::<f32>().is_err()) => {
                // A header line: remember its width.
                columns = Some(fields.len());
                continue;
            }
            Err(field) => {
                return Err(fail!(
                    "{}:{}: `{field}` is not a number; expected comma-separated numbers, one sample per row",
                    path.display(),
                    index + 1
                ))
            }
        };
        match columns {
            Some(c) if c != row.len() => {
                return Err(fail!(
                    "{}:{}: holds {} values, expected {c} like the lines before it",
                    path.display(),
                    index + 1,
                    row.len()
                ))
            }
            _ => columns = Some(row.len()),
        }
        values.extend(row);
        rows += 1;
    }
    let columns = columns.unwrap_or(0);
    if rows == 0 {
        return Err(fail!(
            "{}: holds no rows of numbers, expected one sample per row",
            path.display()
        ));
    }
    ArrayD::from_shape_vec(vec![rows, columns], values)
        .map_err(|e| fail!("internal error: {}: {e}", path.display()))
}

/// Checks before a long run that `path` names a format [`write`] can write.
pub fn check_output(path: &Path) -> Result<(), Failure> {
    format_of(path).map(|_| ())
}

/// Writes `array` (f32 or f64) as `.npy` or `.csv` (by extension) through a
/// temporary file beside it, renamed into place once complete, so an
/// interrupted run never leaves a truncated file behind. A CSV has one row
/// per entry of the first axis, later axes flattened in C order.
pub fn write<A: ndarray_npy::WritableElement + Display>(
    path: &Path,
    array: &ArrayD<A>,
) -> Result<(), Failure> {
    let format = format_of(path)?;
    let fail = |e: &dyn Display| format!("{}: cannot write: {e}", path.display());
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| fail(&e))?;
        let mut writer = BufWriter::new(file);
        match format {
            Format::Npy => array.write_npy(&mut writer).map_err(|e| fail(&e))?,
            Format::Csv => write_csv(&mut writer, array).map_err(|e| fail(&e))?,
        }
        let file = writer.into_inner().map_err(|e| fail(&e))?;
        file.sync_all().map_err(|e| fail(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail(&e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}

/// CSV rows: the first axis, later axes flattened (a 1-D array: one value a row).
fn write_csv<A: Display, W: Write>(out: &mut W, array: &ArrayD<A>) -> std::io::Result<()> {
    let rows = array.shape().first().copied().unwrap_or(1);
    let width = array.len().checked_div(rows).unwrap_or(0);
    let mut line = String::new();
    for (i, v) in array.iter().enumerate() {
        if width > 0 && i % width != 0 {
            line.push(',');
        }
        line.push_str(&v.to_string());
        if width > 0 && i % width == width - 1 {
            line.push('\n');
            out.write_all(line.as_bytes())?;
            line.clear();
        }
    }
    Ok(())
}
