//! Native plugins: velocity fields implemented in a shared library that follows
//! the versioned C interface of `include/fmrt_plugin.h`.
//!
//! A library exports `fmrt_plugin_v2` (ABI version 2, [`v2`](self) below) or
//! `fmrt_plugin_v1` (version 1); [`PluginField::open`] uses version 2 when
//! the library has it. Either entry returns a table of function pointers.
//! `open` checks the table, creates an instance from a configuration string
//! and exposes it as a [`VelocityField`].
//!
//! - Version 1: a fixed state shape, `velocity` and an optional `jvp`.
//! - Version 2: the table carries its own size (fmrt reads only what it
//!   covers, so later headers append fields) and [`Capabilities`] (extras,
//!   per-call state shapes, JVP, stacked JVP, exact divergence), each checked
//!   against its callback at load; calls take a size-prefixed descriptor
//!   with the state shape and the extras.
//!
//! Every buffer is checked against the shapes before a callback sees it. The
//! ABI-specific loading and call marshalling live in `v1.rs` and `v2.rs`;
//! this module holds what both share and the [`VelocityField`] impl, which
//! only delegates to the `call_*` methods.
//!
//! The plugin contract requires the callbacks to be callable from several
//! threads at once, which is what makes [`PluginField`] `Send + Sync`.

mod v1;
mod v2;

use std::borrow::Cow;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};

use libloading::Library;
use ndarray::{ArrayViewD, ArrayViewMutD};

use crate::field::{Derivatives, Extras, VelocityField};
use crate::{Error, Result};

pub use v1::{PLUGIN_ABI_VERSION, PLUGIN_ENTRY_SYMBOL};
pub use v2::{
    dtype_code, Capabilities, PLUGIN_V2_ABI_VERSION, PLUGIN_V2_CALL_SIZE, PLUGIN_V2_ENTRY_SYMBOL,
    PLUGIN_V2_EXTRA_SIZE, PLUGIN_V2_MIN_TABLE_SIZE,
};

/// Largest state rank accepted from a plugin (and, for a plugin with
/// per-call shapes, in a call).
pub const MAX_RANK: usize = 16;

/// Size of the buffer plugins may write an error message into.
const ERR_LEN: usize = 512;

/// `create`, the same in both versions.
type CreateFn = unsafe extern "C" fn(
    config: *const c_char,
    instance: *mut *mut c_void,
    *mut c_char,
    usize,
) -> i32;
/// `state_shape`, the same in both versions.
type StateShapeFn = unsafe extern "C" fn(instance: *const c_void, *mut usize, usize) -> usize;
/// `destroy`, the same in both versions.
type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// A checked table, whichever version it came from.
struct Table {
    abi_version: u32,
    name: *const c_char,
    capabilities: Capabilities,
    create: CreateFn,
    destroy: DestroyFn,
    /// `None` for a plugin with per-call state shapes.
    state_shape: Option<StateShapeFn>,
    calls: Calls,
}

/// The callbacks of one ABI version.
enum Calls {
    V1(v1::Calls),
    V2(v2::Calls),
}

/// A velocity field implemented by a native plugin.
pub struct PluginField {
    path: PathBuf,
    name: String,
    abi_version: u32,
    capabilities: Capabilities,
    instance: *mut c_void,
    /// `None` when the shape comes with each call (version 2,
    /// [`Capabilities::DYNAMIC_SHAPE`]).
    state_shape: Option<Vec<usize>>,
    calls: Calls,
    destroy: DestroyFn,
    /// Kept last so the library is unloaded after the instance is destroyed.
    _library: Library,
}

// SAFETY: the plugin contract (fmrt_plugin.h) requires every callback but
// `create` and `destroy` to be safe to call concurrently from any thread on
// one instance, and `destroy` is called once, from `Drop`, when no other call
// can be running.
unsafe impl Send for PluginField {}
// SAFETY: as above; `&self` methods only call the thread-safe callbacks.
unsafe impl Sync for PluginField {}

impl std::fmt::Debug for PluginField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginField")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("abi_version", &self.abi_version)
            .field("capabilities", &self.capabilities)
            .field("state_shape", &self.state_shape)
            .finish_non_exhaustive()
    }
}

/// The message a failed callback left in `err`, or a generic one.
fn callback_message(err: &[c_char], code: i32) -> String {
    let bytes: Vec<u8> = err
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    if bytes.is_empty() {
        format!("the plugin returned error code {code} without a message")
    } else {
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// `a` as one contiguous row-major slice, copied when the view is not.
fn contiguous<'a>(a: &'a ArrayViewD<'_, f32>) -> Cow<'a, [f32]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().copied().collect()),
    }
}

/// Runs `call` with each of `outs` as a contiguous row-major slice, writing
/// through a temporary (copied back after a successful call) where a view
/// is not contiguous.
fn with_outputs(
    outs: &mut [ArrayViewMutD<'_, f32>],
    call: impl FnOnce(&mut [&mut [f32]]) -> Result<()>,
) -> Result<()> {
    let mut temps: Vec<Option<Vec<f32>>> = outs.iter().map(|_| None).collect();
    {
        let mut slices: Vec<&mut [f32]> = Vec::with_capacity(outs.len());
        for (o, temp) in outs.iter_mut().zip(temps.iter_mut()) {
            let len = o.len();
            match o.as_slice_mut() {
                Some(s) => slices.push(s),
                None => slices.push(temp.insert(vec![0.0f32; len]).as_mut_slice()),
            }
        }
        call(&mut slices)?;
    }
    for (o, temp) in outs.iter_mut().zip(temps) {
        if let Some(values) = temp {
            for (o, v) in o.iter_mut().zip(values) {
                *o = v;
            }
        }
    }
    Ok(())
}

impl PluginField {
    /// Loads the plugin library at `path` and creates an instance with `config`
    /// (passed to the plugin's `create`; `None` passes `""`). A library that
    /// exports `fmrt_plugin_v2` is loaded through ABI version 2, else through
    /// `fmrt_plugin_v1`.
    ///
    /// Errors ([`Error::PluginLoad`], each naming the file): the library does not
    /// open, it exports neither entry symbol, the table is NULL or has another
    /// ABI version, a version-2 table is smaller than
    /// [`PLUGIN_V2_MIN_TABLE_SIZE`] or its capability flags and callbacks
    /// disagree (each named), a required function is missing, `create` fails
    /// (with the plugin's message), or the state shape is empty or too large.
    ///
    /// # Safety
    ///
    /// Loading a library runs its initialisers, and its functions are trusted to
    /// follow the contract of `include/fmrt_plugin.h` (signatures, thread safety,
    /// buffer sizes). Nothing can check that from here.
    pub unsafe fn open(path: impl AsRef<Path>, config: Option<&str>) -> Result<PluginField> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let fail = |reason: String| Error::PluginLoad {
            file: shown.clone(),
            reason,
        };
        // SAFETY: the caller accepts running the library's initialisers.
        let library = unsafe { Library::new(&path) }
            .map_err(|e| fail(format!("cannot load the library: {e}")))?;
        // SAFETY: the symbols' types are the contract of fmrt_plugin.h; the
        // tables they return stay valid while the library is loaded, and the
        // library is kept in the field.
        let table = unsafe {
            match library.get::<v2::EntryFn>(PLUGIN_V2_ENTRY_SYMBOL.as_bytes()) {
                Ok(entry) => v2::read_table(*entry, &fail)?,
                Err(_) => {
                    let entry = library
                        .get::<v1::EntryFn>(PLUGIN_ENTRY_SYMBOL.as_bytes())
                        .map_err(|e| {
                            fail(format!(
                                "missing symbol `{PLUGIN_ENTRY_SYMBOL}` (nor \
                                 `{PLUGIN_V2_ENTRY_SYMBOL}`): {e}"
                            ))
                        })?;
                    v1::read_table(*entry, &fail)?
                }
            }
        };
        let name = if table.name.is_null() {
            String::new()
        } else {
            // SAFETY: a non-NULL name is a NUL-terminated string (contract).
            unsafe { CStr::from_ptr(table.name) }
                .to_string_lossy()
                .into_owned()
        };

        let config = CString::new(config.unwrap_or(""))
            .map_err(|_| fail("the configuration string contains a NUL byte".to_string()))?;
        let mut instance: *mut c_void = std::ptr::null_mut();
        let mut err = [0 as c_char; ERR_LEN];
        // SAFETY: arguments per the contract; `err` holds ERR_LEN bytes.
        let code =
            unsafe { (table.create)(config.as_ptr(), &mut instance, err.as_mut_ptr(), ERR_LEN) };
        if code != 0 {
            return Err(fail(format!(
                "create failed: {}",
                callback_message(&err, code)
            )));
        }
        // From here the instance is owned, and destroyed by Drop on any error.
        let mut field = PluginField {
            path,
            name,
            abi_version: table.abi_version,
            capabilities: table.capabilities,
            instance,
            state_shape: None,
            calls: table.calls,
            destroy: table.destroy,
            _library: library,
        };
        if let Some(state_shape) = table.state_shape {
            let mut shape = [0usize; MAX_RANK];
            // SAFETY: `shape` holds MAX_RANK entries (contract).
            let rank = unsafe { state_shape(field.instance, shape.as_mut_ptr(), MAX_RANK) };
            if rank == 0 || rank > MAX_RANK {
                return Err(fail(format!(
                    "state_shape returned rank {rank}; it must be between 1 and {MAX_RANK}"
                )));
            }
            let shape = shape[..rank].to_vec();
            crate::error::checked_product(&shape, "the plugin's state shape")
                .map_err(|e| fail(e.to_string()))?;
            field.state_shape = Some(shape);
        }
        Ok(field)
    }

    /// The plugin's self-reported name (empty when it gives none).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The library's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ABI version the plugin was loaded through (1 or 2).
    pub fn abi_version(&self) -> u32 {
        self.abi_version
    }

    /// What the plugin offers: for version 2 its flags (the bits this fmrt
    /// knows), for version 1 [`Capabilities::JVP`] when it has a `jvp`.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// The fixed state shape, or `None` when it comes with each call.
    pub fn fixed_state_shape(&self) -> Option<&[usize]> {
        self.state_shape.as_deref()
    }

    /// How errors name this field.
    fn label(&self) -> String {
        format!("plugin {} ({})", self.path.display(), self.name)
    }

    /// Checks `x` against the state shape (any rank from 1 to [`MAX_RANK`]
    /// per sample when the shape comes with each call), `others` against the
    /// shapes they must have, and `t`; returns the batch size.
    fn check(
        &self,
        x: &[usize],
        others: &[(&str, &[usize], Vec<usize>)],
        t: &[f64],
    ) -> Result<usize> {
        let fits = match &self.state_shape {
            Some(shape) => x.len() == shape.len() + 1 && x[1..] == shape[..],
            None => (2..=MAX_RANK + 1).contains(&x.len()),
        };
        if !fits {
            let expected = match &self.state_shape {
                Some(shape) => format!("[B, {shape:?}] (the plugin's state shape)"),
                None => format!("[B, ...] with 1 to {MAX_RANK} axes per sample"),
            };
            return Err(Error::Shape {
                tensor: "x".to_string(),
                expected,
                actual: x.to_vec(),
            });
        }
        for (name, shape, want) in others {
            if shape[..] != want[..] {
                return Err(Error::Shape {
                    tensor: name.to_string(),
                    expected: format!("{want:?}"),
                    actual: shape.to_vec(),
                });
            }
        }
        crate::field::check_times(t, x[0])?;
        Ok(x[0])
    }

    /// Refuses non-empty `extras` unless the plugin takes extras.
    fn refuse_extras(&self, extras: &Extras) -> Result<()> {
        if extras.is_empty() || self.capabilities.contains(Capabilities::EXTRAS) {
            return Ok(());
        }
        let first = extras.iter().next().map_or("", |(name, _)| name);
        Err(Error::extra(
            self.label(),
            first,
            format!(
                "this plugin takes no extra inputs (its table does not set \
                 FMRT_PLUGIN_CAP_EXTRAS), but got {}",
                extras.describe()
            ),
        ))
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::unsupported(format!("plugin {} provides no {what}", self.path.display()))
    }

    fn callback_error(&self, what: &str, err: &[c_char], code: i32) -> Error {
        Error::field(
            self.label(),
            format!("{what} failed: {}", callback_message(err, code)),
        )
    }

    /// Turns a callback's return code into a result.
    fn status(&self, what: &str, err: &[c_char], code: i32) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(self.callback_error(what, err, code))
        }
    }

    /// Writes u(x, t, extras) into `out` (`x`'s shape).
    pub fn call_velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        let batch = self.check(x.shape(), &[("out", out.shape(), x.shape().to_vec())], t)?;
        self.refuse_extras(extras)?;
        let xs = contiguous(&x);
        with_outputs(&mut [out], |outs| match &self.calls {
            Calls::V1(c) => self.v1_velocity(c, &xs, batch, t, outs),
            Calls::V2(c) => self.v2_velocity(c, &xs, x.shape(), t, extras, outs),
        })
    }

    /// Writes J(x, t, extras)·v into `out` (`v` and `out` shaped like `x`).
    pub fn call_jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        if !self.capabilities.contains(Capabilities::JVP) {
            return Err(self.unsupported("Jacobian-vector products"));
        }
        let like_x = x.shape().to_vec();
        let batch = self.check(
            x.shape(),
            &[
                ("v", v.shape(), like_x.clone()),
                ("out", out.shape(), like_x),
            ],
            t,
        )?;
        self.refuse_extras(extras)?;
        let (xs, vs) = (contiguous(&x), contiguous(&v));
        with_outputs(&mut [out], |outs| match &self.calls {
            Calls::V1(c) => self.v1_jvp(c, &xs, batch, t, &vs, outs),
            Calls::V2(c) => self.v2_jvp(c, &xs, x.shape(), t, extras, &vs, outs),
        })
    }

    /// Writes u into `velocity` (`x`'s shape) and the products J·vₚ into
    /// `products` in one call: `v` and `products` are `[P, ...x's shape]`
    /// with P ≥ 1.
    pub fn call_velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        velocity: ArrayViewMutD<'_, f32>,
        products: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        if !self.capabilities.contains(Capabilities::STACKED_JVP) {
            return Err(self.unsupported("stacked Jacobian-vector products"));
        }
        let directions = v.shape().first().copied().unwrap_or(0);
        if directions == 0 {
            return Err(Error::Shape {
                tensor: "v".to_string(),
                expected: format!("[P, {:?}] with P >= 1 directions", x.shape()),
                actual: v.shape().to_vec(),
            });
        }
        let stacked: Vec<usize> = std::iter::once(directions)
            .chain(x.shape().iter().copied())
            .collect();
        self.check(
            x.shape(),
            &[
                ("v", v.shape(), stacked.clone()),
                ("velocity", velocity.shape(), x.shape().to_vec()),
                ("products", products.shape(), stacked),
            ],
            t,
        )?;
        self.refuse_extras(extras)?;
        let (xs, vs) = (contiguous(&x), contiguous(&v));
        with_outputs(&mut [velocity, products], |outs| match &self.calls {
            Calls::V1(_) => Err(self.unsupported("stacked Jacobian-vector products")),
            Calls::V2(c) => {
                self.v2_velocity_and_jvps(c, &xs, x.shape(), t, extras, directions, &vs, outs)
            }
        })
    }

    /// Writes the exact divergence of each sample into `out` (B values).
    pub fn call_divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        if !self.capabilities.contains(Capabilities::DIVERGENCE) {
            return Err(self.unsupported("exact divergence"));
        }
        let batch = x.shape().first().copied().unwrap_or(0);
        self.check(x.shape(), &[("out", &[out.len()], vec![batch])], t)?;
        self.refuse_extras(extras)?;
        let xs = contiguous(&x);
        match &self.calls {
            Calls::V1(_) => Err(self.unsupported("exact divergence")),
            Calls::V2(c) => self.v2_divergence(c, &xs, x.shape(), t, extras, out),
        }
    }
}

impl Drop for PluginField {
    fn drop(&mut self) {
        // SAFETY: the instance came from `create` and is destroyed once; no
        // other call can run since we hold `&mut self`.
        unsafe { (self.destroy)(self.instance) };
    }
}

// The trait impl only delegates: the trait's shape changes without touching
// the ABI code.
impl VelocityField for PluginField {
    fn state_shape(&self) -> Option<&[usize]> {
        self.fixed_state_shape()
    }

    fn derivatives(&self) -> Derivatives {
        let caps = self.capabilities;
        Derivatives {
            jvp: caps.contains(Capabilities::JVP),
            stacked_jvp: caps.contains(Capabilities::STACKED_JVP),
            divergence: caps.contains(Capabilities::DIVERGENCE),
        }
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.call_velocity(x, t, extras, out)
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.call_jvp(x, t, extras, v, out)
    }

    fn velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        velocity: ArrayViewMutD<'_, f32>,
        products: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        self.call_velocity_and_jvps(x, t, extras, v, velocity, products)
    }

    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        self.call_divergence(x, t, extras, out)
    }
}
