//! Writing an array row block by row block, so `fmrt sample` holds one chunk
//! of samples in memory however many it writes.
//!
//! The file is a `.npy` (its header, with the whole shape, written first)
//! or a `.csv` (one row per entry of the first axis), written to
//! `NAME.partial` beside the target and renamed into place by
//! [`RowWriter::finish`] once every row is there, as [`crate::npy::write`]
//! does for whole arrays: an interrupted or failed run leaves no truncated
//! file behind.

use std::fmt::Display;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ndarray::ArrayD;

use crate::failure::{fail, Failure};
use crate::npy::{format_of, Format};

/// An element type a [`RowWriter`] writes: its NumPy descriptor and bytes.
pub trait Element: Copy + Display {
    /// The `.npy` descriptor (`<f4`, `<f8`).
    const DESCR: &'static str;
    /// Appends the little-endian bytes of `self` to `out`.
    fn put_le(self, out: &mut Vec<u8>);
}

impl Element for f32 {
    const DESCR: &'static str = "<f4";
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Element for f64 {
    const DESCR: &'static str = "<f8";
    fn put_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// A file being written in blocks of rows along its first axis.
pub struct RowWriter {
    path: PathBuf,
    partial: PathBuf,
    format: Format,
    writer: Option<BufWriter<File>>,
    /// The shape of one row (the shape after the first axis).
    row_shape: Vec<usize>,
    rows_expected: usize,
    rows_written: usize,
}

impl RowWriter {
    /// Starts `path` for an array of `shape` (`[rows, ...]`) of `E`.
    pub fn create<E: Element>(path: &Path, shape: &[usize]) -> Result<Self, Failure> {
        let format = format_of(path)?;
        let (&rows, row_shape) = shape
            .split_first()
            .ok_or_else(|| fail!("internal error: {} has no rows axis", path.display()))?;
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(".partial");
        let partial = path.with_file_name(name);
        let file =
            File::create(&partial).map_err(|e| fail!("{}: cannot write: {e}", path.display()))?;
        let mut writer = RowWriter {
            path: path.to_path_buf(),
            partial,
            format,
            writer: Some(BufWriter::new(file)),
            row_shape: row_shape.to_vec(),
            rows_expected: rows,
            rows_written: 0,
        };
        if format == Format::Npy {
            let header = npy_header(E::DESCR, shape);
            writer.put(&header)?;
        }
        Ok(writer)
    }

    /// Appends the rows of `block` (`[k, ...row shape]`).
    pub fn append<E: Element>(&mut self, block: &ArrayD<E>) -> Result<(), Failure> {
        let rows = block.shape().first().copied().unwrap_or(0);
        if block.shape().get(1..) != Some(&self.row_shape[..])
            || self.rows_written + rows > self.rows_expected
        {
            return Err(fail!(
                "internal error: {}: a block of shape {:?} does not continue [{}, {:?}] after {} rows",
                self.path.display(),
                block.shape(),
                self.rows_expected,
                self.row_shape,
                self.rows_written
            ));
        }
        let width: usize = self.row_shape.iter().product();
        let mut bytes = Vec::new();
        match self.format {
            Format::Npy => {
                bytes.reserve(block.len() * std::mem::size_of::<E>());
                for &v in block.iter() {
                    v.put_le(&mut bytes);
                }
            }
            Format::Csv => {
                let mut line = String::new();
                for (i, v) in block.iter().enumerate() {
                    if width > 0 && i % width != 0 {
                        line.push(',');
                    }
                    line.push_str(&v.to_string());
                    if width == 0 || i % width == width - 1 {
                        line.push('\n');
                    }
                }
                bytes = line.into_bytes();
            }
        }
        self.put(&bytes)?;
        self.rows_written += rows;
        Ok(())
    }

    /// Completes the file and moves it into place; every row must have been
    /// written.
    pub fn finish(mut self) -> Result<(), Failure> {
        if self.rows_written != self.rows_expected {
            return Err(fail!(
                "internal error: {}: {} of {} rows written",
                self.path.display(),
                self.rows_written,
                self.rows_expected
            ));
        }
        let fail = |e: &dyn Display| fail!("{}: cannot write: {e}", self.path.display());
        let writer = self
            .writer
            .take()
            .ok_or_else(|| fail(&"already finished"))?;
        let result = writer
            .into_inner()
            .map_err(|e| fail(&e))
            .and_then(|file| file.sync_all().map_err(|e| fail(&e)))
            .and_then(|()| std::fs::rename(&self.partial, &self.path).map_err(|e| fail(&e)));
        if result.is_err() {
            let _ = std::fs::remove_file(&self.partial);
        }
        result
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| fail!("internal error: {} is finished", self.path.display()))?;
        writer
            .write_all(bytes)
            .map_err(|e| fail!("{}: cannot write: {e}", self.path.display()))
    }
}

impl Drop for RowWriter {
    /// A writer dropped before [`finish`](Self::finish) (a failed run)
    /// removes its partial file.
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// The `.npy` (format 1.0, or 2.0 for a header past 64 KiB) header of a
/// C-order array of `shape` with element descriptor `descr`, padded so the
/// data starts at a multiple of 64 bytes.
fn npy_header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape_text = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}}}");
    // The dict, padded with spaces and ended by a newline, so the data after
    // a preamble of `preamble` bytes starts at a multiple of 64.
    let padded = |preamble: usize| {
        let padding = (64 - (preamble + dict.len() + 1) % 64) % 64;
        format!("{dict}{}\n", " ".repeat(padding))
    };
    let v1 = padded(10);
    let version_1 = u16::try_from(v1.len()).is_ok();
    let dict = if version_1 { v1 } else { padded(12) };
    let mut out = b"\x93NUMPY".to_vec();
    if version_1 {
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&[2, 0]);
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray_npy::ReadNpyExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fmrt-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn blocks_make_the_file_one_write_makes() {
        let whole =
            ArrayD::from_shape_fn(vec![7, 2, 3], |i| (i[0] * 6 + i[1] * 3 + i[2]) as f32 * 0.5);
        for name in ["rows.npy", "rows.csv"] {
            let streamed = scratch(name);
            let mut writer = RowWriter::create::<f32>(&streamed, whole.shape()).unwrap();
            for rows in [0..3, 3..3, 3..7] {
                let block = whole.slice_axis(ndarray::Axis(0), rows.into()).to_owned();
                writer.append(&block).unwrap();
            }
            writer.finish().unwrap();
            let direct = scratch(&format!("direct_{name}"));
            crate::npy::write(&direct, &whole).unwrap();
            assert_eq!(
                std::fs::read(&streamed).unwrap(),
                std::fs::read(&direct).unwrap(),
                "{name}"
            );
        }
        let log_p = ArrayD::from_shape_fn(vec![5], |i| -(i[0] as f64) / 3.0);
        let path = scratch("logp.npy");
        let mut writer = RowWriter::create::<f64>(&path, &[5]).unwrap();
        writer.append(&log_p).unwrap();
        writer.finish().unwrap();
        let back = ArrayD::<f64>::read_npy(File::open(&path).unwrap()).unwrap();
        assert_eq!(back, log_p);
    }

    #[test]
    fn an_unfinished_file_is_removed_and_never_appears() {
        let path = scratch("unfinished.npy");
        let mut writer = RowWriter::create::<f32>(&path, &[4, 2]).unwrap();
        writer.append(&ArrayD::<f32>::zeros(vec![2, 2])).unwrap();
        assert!(
            writer.append(&ArrayD::<f32>::zeros(vec![3, 2])).is_err(),
            "past the end"
        );
        assert!(
            writer.append(&ArrayD::<f32>::zeros(vec![1, 3])).is_err(),
            "wrong row shape"
        );
        drop(writer);
        assert!(!path.exists());
        assert!(!path.with_file_name("unfinished.npy.partial").exists());
        let short = RowWriter::create::<f32>(&path, &[4, 2]).unwrap();
        assert!(short.finish().is_err(), "finished with rows missing");
        assert!(!path.exists());
    }
}
