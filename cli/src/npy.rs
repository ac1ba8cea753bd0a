//! Reading and writing arrays as NumPy `.npy` or `.csv` files (chosen by the
//! file's extension), with one-line errors that name the file, what it holds
//! and what was expected.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use crate::failure::{fail, Failure};

use fmrt::field::ExtraTensor;
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

/// The shape and item size a `.npy` header claims, and where its data starts.
#[derive(Debug, PartialEq)]
struct NpyHeader {
    shape: Vec<u64>,
    item_size: u64,
    data_start: u64,
}

/// Reads the header of the `.npy` file `file` (of `file_len` bytes) without
/// trusting any length in it: the header is read only as far as the file goes.
/// `Ok(None)` when the file does not start like a `.npy` (the reader then says
/// why); an error when it does but its header cannot be trusted: longer than
/// the file, not text, or without exactly one `descr` and one `shape` (the
/// reader, which parses the header again, must not see a shape this check did
/// not).
fn npy_header(file: &File, file_len: u64) -> Result<Option<NpyHeader>, String> {
    use std::io::Read as _;
    let mut reader = BufReader::new(file);
    let mut prefix = [0u8; 8];
    if reader.read_exact(&mut prefix).is_err() || &prefix[..6] != b"\x93NUMPY" {
        return Ok(None);
    }
    let (header_len, fixed) = match prefix[6] {
        1 => {
            let mut n = [0u8; 2];
            if reader.read_exact(&mut n).is_err() {
                return Ok(None);
            }
            (u64::from(u16::from_le_bytes(n)), 10)
        }
        _ => {
            let mut n = [0u8; 4];
            if reader.read_exact(&mut n).is_err() {
                return Ok(None);
            }
            (u64::from(u32::from_le_bytes(n)), 12)
        }
    };
    if header_len > file_len.saturating_sub(fixed) {
        return Err(format!(
            "the .npy header claims to be {header_len} bytes long, but the file is {file_len} bytes"
        ));
    }
    let mut text = String::new();
    reader
        .take(header_len)
        .read_to_string(&mut text)
        .map_err(|_| "the .npy header is not text".to_string())?;
    let field = |key: &str| {
        let single = text.matches(&format!("'{key}'")).count()
            + text.matches(&format!("\"{key}\"")).count()
            == 1;
        single
            .then(|| dict_value(&text, key))
            .flatten()
            .ok_or_else(|| format!("the .npy header does not hold one readable `{key}`"))
    };
    let descr = field("descr")?.trim_matches(|c| c == '\'' || c == '"');
    let item_size = descr
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .unwrap_or(1);
    let unreadable_shape = || "the .npy header does not hold one readable `shape`".to_string();
    let shape = field("shape")?
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(unreadable_shape)?
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(unreadable_shape)?;
    Ok(Some(NpyHeader {
        shape,
        item_size,
        data_start: fixed + header_len,
    }))
}

/// The text of the value of `key` in a `.npy` header's dict literal
/// (`{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }`).
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = text[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

/// Refuses a `.npy` whose header claims more data than the file holds, or a
/// header longer than the file, before anything is allocated for it (a 64-byte
/// file claiming 10^9 rows, or a header of 3.7 GB, would otherwise allocate
/// gigabytes in the reader).
fn check_npy_size(path: &Path, file: &File) -> Result<(), Failure> {
    let file_len = file
        .metadata()
        .map_err(|e| fail!("{}: cannot read: {e}", path.display()))?
        .len();
    let header = npy_header(file, file_len)
        .map_err(|why| fail!("{}: not a readable .npy file: {why}", path.display()))?;
    let Some(header) = header else {
        return Ok(());
    };
    let needed = header
        .shape
        .iter()
        .try_fold(header.item_size, |acc, &d| acc.checked_mul(d));
    let available = file_len.saturating_sub(header.data_start);
    let shape = format!("{:?}", header.shape);
    match needed {
        Some(n) if n <= available => Ok(()),
        Some(n) => Err(fail!(
            "{}: the .npy header claims shape {shape} ({n} bytes of data), but the file is {file_len} bytes",
            path.display()
        )),
        None => Err(fail!(
            "{}: the .npy header claims shape {shape}, whose size overflows; the file is {file_len} bytes",
            path.display()
        )),
    }
}

/// Reads a `.npy` of float32, or of float64 converted to the nearest float32.
fn read_npy(path: &Path, file: File) -> Result<ArrayD<f32>, Failure> {
    check_npy_size(path, &file)?;
    let file = File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
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
/// not numeric is taken as a header. Memory is bounded by the file's own size
/// (the text, and at most one float per two bytes of it): nothing in a CSV
/// claims a size.
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

/// Refuses outputs that name the same file (`-o P --log-prob P`), which
/// would overwrite one result with another: each pair is compared as
/// written and with their folders resolved (`./a.npy` and `a.npy`).
pub fn check_distinct_outputs(outputs: &[(&str, &Path)]) -> Result<(), Failure> {
    let resolved = |path: &Path| {
        let folder = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        folder
            .canonicalize()
            .ok()
            .map(|f| f.join(path.file_name().unwrap_or_default()))
    };
    for (i, (flag_a, a)) in outputs.iter().enumerate() {
        for (flag_b, b) in &outputs[i + 1..] {
            let same = a == b || matches!((resolved(a), resolved(b)), (Some(x), Some(y)) if x == y);
            if same {
                return Err(fail!(
                    "{flag_a} and {flag_b} both name {}: give each output its own file",
                    b.display()
                ));
            }
        }
    }
    Ok(())
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

/// Reads a conditioning tensor from a `.npy` (float32, float64, int64,
/// int32, uint8 or bool) or a `.csv` (numbers, read as float32); float64 is
/// narrowed to float32 (refusing values beyond its range) and uint8 read as
/// int64, since conditioning inputs take neither.
pub fn read_tensor(path: &Path) -> Result<ExtraTensor, Failure> {
    let format = format_of(path)?;
    let open = || File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()));
    if format == Format::Csv {
        return Ok(ExtraTensor::Float32(read_csv(path, open()?)?));
    }
    check_npy_size(path, &open()?)?;
    let unreadable = |e: ReadNpyError| format!("{}: not a readable .npy file: {e}", path.display());
    macro_rules! attempt {
        ($ty:ty, $wrap:expr) => {
            match ArrayD::<$ty>::read_npy(BufReader::new(open()?)) {
                Ok(array) => return Ok($wrap(array)),
                Err(ReadNpyError::WrongDescriptor(_)) => {}
                Err(e) => return Err(unreadable(e).into()),
            }
        };
    }
    attempt!(f32, ExtraTensor::Float32);
    attempt!(i64, ExtraTensor::Int64);
    attempt!(i32, ExtraTensor::Int32);
    attempt!(bool, ExtraTensor::Bool);
    attempt!(u8, |a: ArrayD<u8>| ExtraTensor::Int64(a.mapv(i64::from)));
    match ArrayD::<f64>::read_npy(BufReader::new(open()?)) {
        Ok(wide) => Ok(ExtraTensor::Float32(narrow(path, &wide)?)),
        Err(ReadNpyError::WrongDescriptor(descr)) => Err(fail!(
            "{}: holds an array of dtype {descr}; conditioning files hold float32, float64, int64, int32, uint8 or bool",
            path.display()
        )),
        Err(e) => Err(unreadable(e).into()),
    }
}

/// Reads a list of times from a `.npy` (float64 or float32, any shape,
/// flattened) or a `.csv` (numbers, one or more per line), in float64.
pub fn read_times(path: &Path) -> Result<Vec<f64>, Failure> {
    let format = format_of(path)?;
    let file = File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
    match format {
        Format::Npy => {
            check_npy_size(path, &file)?;
            let reopen =
                || File::open(path).map_err(|e| format!("{}: cannot open: {e}", path.display()));
            match ArrayD::<f64>::read_npy(BufReader::new(reopen()?)) {
                Ok(a) => Ok(a.iter().copied().collect()),
                Err(ReadNpyError::WrongDescriptor(_)) => Ok(read_npy(path, reopen()?)?
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect()),
                Err(e) => Err(fail!("{}: not a readable .npy file: {e}", path.display())),
            }
        }
        Format::Csv => {
            let text = std::io::read_to_string(BufReader::new(file))
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let mut times = Vec::new();
            for (line_no, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                for (col, field) in line.split(',').enumerate() {
                    let v: f64 = field.trim().parse().map_err(|_| {
                        fail!(
                            "{}:{}:{}: `{}` is not a number",
                            path.display(),
                            line_no + 1,
                            col + 1,
                            field.trim()
                        )
                    })?;
                    times.push(v);
                }
            }
            Ok(times)
        }
    }
}
