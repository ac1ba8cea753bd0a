//! Reading and writing NumPy `.npy` files, with errors that name the file.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::Path;

use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};

/// Reads a float32 array of any shape from `path`.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>, String> {
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ArrayD::<f32>::read_npy(BufReader::new(file)).map_err(|e| match e {
        ReadNpyError::WrongDescriptor(descr) => format!(
            "{}: expected a float32 array (dtype '<f4'), found dtype {descr}; convert it with numpy's .astype('float32')",
            path.display()
        ),
        other => format!("{}: not a readable .npy file: {other}", path.display()),
    })
}

/// Writes `array` (f32 or f64) to `path` through a temporary file beside it,
/// renamed into place once complete, so an interrupted run never leaves a
/// truncated file behind.
pub fn write<A: ndarray_npy::WritableElement>(
    path: &Path,
    array: &ArrayD<A>,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: cannot write: {e}", path.display());
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".partial");
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let file = File::create(&tmp).map_err(|e| fail(&e))?;
        let mut writer = BufWriter::new(file);
        array.write_npy(&mut writer).map_err(|e| fail(&e))?;
        let file = writer.into_inner().map_err(|e| fail(&e))?;
        file.sync_all().map_err(|e| fail(&e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail(&e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
