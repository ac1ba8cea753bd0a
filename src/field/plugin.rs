//! Native plugins: velocity fields implemented in a shared library that follows
//! the versioned C interface of `include/fmrt_plugin.h`.
//!
//! The library exports `fmrt_plugin_v1`, which returns a table of function
//! pointers with its ABI version. [`PluginField::open`] loads the library,
//! checks the version, creates an instance from a configuration string and
//! exposes it as a [`VelocityField`]. The plugin contract requires `velocity`
//! and `jvp` to be callable from several threads at once, which is what makes
//! [`PluginField`] `Send + Sync`.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};

use libloading::Library;
use ndarray::{ArrayViewD, ArrayViewMutD};

use crate::field::{Derivatives, Extras, VelocityField};
use crate::{Error, Result};

/// The ABI version this build of fmrt implements (`FMRT_PLUGIN_ABI_VERSION`).
pub const PLUGIN_ABI_VERSION: u32 = 1;

/// The entry symbol a version-1 plugin exports.
pub const PLUGIN_ENTRY_SYMBOL: &str = "fmrt_plugin_v1";

/// Largest state rank accepted from a plugin.
const MAX_RANK: usize = 16;

/// Size of the buffer plugins may write an error message into.
const ERR_LEN: usize = 512;

type CreateFn = unsafe extern "C" fn(
    config: *const c_char,
    instance: *mut *mut c_void,
    *mut c_char,
    usize,
) -> i32;
type StateShapeFn = unsafe extern "C" fn(instance: *const c_void, *mut usize, usize) -> usize;
type VelocityFn = unsafe extern "C" fn(
    instance: *const c_void,
    x: *const f32,
    batch: usize,
    t: *const f64,
    t_len: usize,
    out: *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32;
type JvpFn = unsafe extern "C" fn(
    instance: *const c_void,
    x: *const f32,
    batch: usize,
    t: *const f64,
    t_len: usize,
    v: *const f32,
    out: *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32;
type DestroyFn = unsafe extern "C" fn(instance: *mut c_void);

/// `fmrt_plugin_vtable_v1` of `fmrt_plugin.h`, field for field.
#[repr(C)]
struct VTableV1 {
    abi_version: u32,
    reserved: u32,
    name: *const c_char,
    create: Option<CreateFn>,
    state_shape: Option<StateShapeFn>,
    velocity: Option<VelocityFn>,
    jvp: Option<JvpFn>,
    destroy: Option<DestroyFn>,
}

type EntryFn = unsafe extern "C" fn() -> *const VTableV1;

/// A velocity field implemented by a native plugin.
pub struct PluginField {
    path: PathBuf,
    name: String,
    instance: *mut c_void,
    state_shape: Vec<usize>,
    velocity: VelocityFn,
    jvp: Option<JvpFn>,
    destroy: Option<DestroyFn>,
    /// Kept last so the library is unloaded after the instance is destroyed.
    _library: Library,
}

// SAFETY: the plugin contract (fmrt_plugin.h) requires `velocity` and `jvp` to
// be safe to call concurrently from any thread on one instance, and `destroy`
// is called once, from `Drop`, when no other call can be running.
unsafe impl Send for PluginField {}
// SAFETY: as above; `&self` methods only call the thread-safe callbacks.
unsafe impl Sync for PluginField {}

impl std::fmt::Debug for PluginField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginField")
            .field("path", &self.path)
            .field("name", &self.name)
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

impl PluginField {
    /// Loads the plugin library at `path` and creates an instance with `config`
    /// (passed to the plugin's `create`; `None` passes `""`).
    ///
    /// Errors ([`Error::PluginLoad`], each naming the file): the library does not
    /// open, it lacks the `fmrt_plugin_v1` symbol, the table is NULL or has
    /// another ABI version or lacks a required function, `create` fails (with the
    /// plugin's message), or the state shape is empty or too large.
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
        // SAFETY: the symbol's type is the contract of fmrt_plugin.h.
        let entry = unsafe { library.get::<EntryFn>(PLUGIN_ENTRY_SYMBOL.as_bytes()) }
            .map_err(|e| fail(format!("missing symbol `{PLUGIN_ENTRY_SYMBOL}`: {e}")))?;
        // SAFETY: calling the entry point per the contract.
        let table = unsafe { entry() };
        // SAFETY: the table stays valid while the library is loaded (contract).
        let table = unsafe { table.as_ref() }
            .ok_or_else(|| fail(format!("`{PLUGIN_ENTRY_SYMBOL}` returned NULL")))?;
        if table.abi_version != PLUGIN_ABI_VERSION {
            return Err(fail(format!(
                "`{PLUGIN_ENTRY_SYMBOL}` reports ABI version {}, but this fmrt implements \
                 version {PLUGIN_ABI_VERSION}; rebuild the plugin against this fmrt_plugin.h",
                table.abi_version
            )));
        }
        let required = |f: Option<()>, name: &str| {
            f.ok_or_else(|| {
                fail(format!(
                    "the table of `{PLUGIN_ENTRY_SYMBOL}` has no `{name}`"
                ))
            })
        };
        required(table.create.map(|_| ()), "create")?;
        required(table.state_shape.map(|_| ()), "state_shape")?;
        required(table.velocity.map(|_| ()), "velocity")?;
        required(table.destroy.map(|_| ()), "destroy")?;
        let (Some(create), Some(state_shape), Some(velocity)) =
            (table.create, table.state_shape, table.velocity)
        else {
            unreachable!("checked above")
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
        let code = unsafe { create(config.as_ptr(), &mut instance, err.as_mut_ptr(), ERR_LEN) };
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
            instance,
            state_shape: Vec::new(),
            velocity,
            jvp: table.jvp,
            destroy: table.destroy,
            _library: library,
        };
        let mut shape = [0usize; MAX_RANK];
        // SAFETY: `shape` holds MAX_RANK entries (contract).
        let rank = unsafe { state_shape(field.instance, shape.as_mut_ptr(), MAX_RANK) };
        if rank == 0 || rank > MAX_RANK {
            return Err(fail(format!(
                "state_shape returned rank {rank}; it must be between 1 and {MAX_RANK}"
            )));
        }
        field.state_shape = shape[..rank].to_vec();
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

    /// Checks `x` (and `other`, shaped like it) against the state shape and `t`;
    /// returns the batch size.
    fn check(&self, x: &[usize], others: &[(&str, &[usize])], t: &[f64]) -> Result<usize> {
        if x.len() != self.state_shape.len() + 1 || x[1..] != self.state_shape[..] {
            return Err(Error::Shape {
                tensor: "x".to_string(),
                expected: format!("[B, {:?}] (the plugin's state shape)", self.state_shape),
                actual: x.to_vec(),
            });
        }
        for (name, shape) in others {
            if *shape != x {
                return Err(Error::Shape {
                    tensor: name.to_string(),
                    expected: format!("{x:?} (the shape of x)"),
                    actual: shape.to_vec(),
                });
            }
        }
        crate::field::check_times(t, x[0])?;
        Ok(x[0])
    }

    /// Runs `call(x, out)` with contiguous buffers, copying when a view is not.
    fn with_buffers(
        &self,
        inputs: &[&ArrayViewD<'_, f32>],
        mut out: ArrayViewMutD<'_, f32>,
        call: impl FnOnce(&[&[f32]], &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let owned: Vec<std::borrow::Cow<'_, [f32]>> = inputs
            .iter()
            .map(|a| match a.as_slice() {
                Some(s) => std::borrow::Cow::Borrowed(s),
                None => std::borrow::Cow::Owned(a.iter().copied().collect()),
            })
            .collect();
        let slices: Vec<&[f32]> = owned.iter().map(|c| c.as_ref()).collect();
        match out.as_slice_mut() {
            Some(o) => call(&slices, o),
            None => {
                let mut tmp = vec![0.0f32; out.len()];
                call(&slices, &mut tmp)?;
                for (o, v) in out.iter_mut().zip(tmp) {
                    *o = v;
                }
                Ok(())
            }
        }
    }

    fn callback_error(&self, what: &str, err: &[c_char], code: i32) -> Error {
        Error::field(
            format!("plugin {} ({})", self.path.display(), self.name),
            format!("{what} failed: {}", callback_message(err, code)),
        )
    }
}

impl Drop for PluginField {
    fn drop(&mut self) {
        if let Some(destroy) = self.destroy {
            // SAFETY: the instance came from `create` and is destroyed once; no
            // other call can run since we hold `&mut self`.
            unsafe { destroy(self.instance) };
        }
    }
}

impl VelocityField for PluginField {
    fn state_shape(&self) -> Option<&[usize]> {
        Some(&self.state_shape)
    }

    fn derivatives(&self) -> Derivatives {
        Derivatives {
            jvp: self.jvp.is_some(),
            ..Derivatives::NONE
        }
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        extras.expect_none(&format!("plugin {}", self.path.display()))?;
        let batch = self.check(x.shape(), &[("out", out.shape())], t)?;
        self.with_buffers(&[&x], out, |ins, o| {
            let mut err = [0 as c_char; ERR_LEN];
            // SAFETY: buffers sized per the checked shapes; thread safety per the
            // plugin contract.
            let code = unsafe {
                (self.velocity)(
                    self.instance,
                    ins[0].as_ptr(),
                    batch,
                    t.as_ptr(),
                    t.len(),
                    o.as_mut_ptr(),
                    err.as_mut_ptr(),
                    ERR_LEN,
                )
            };
            if code == 0 {
                Ok(())
            } else {
                Err(self.callback_error("velocity", &err, code))
            }
        })
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        t: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        extras.expect_none(&format!("plugin {}", self.path.display()))?;
        let Some(jvp) = self.jvp else {
            return Err(Error::unsupported(format!(
                "plugin {} provides no Jacobian-vector products",
                self.path.display()
            )));
        };
        let batch = self.check(x.shape(), &[("v", v.shape()), ("out", out.shape())], t)?;
        self.with_buffers(&[&x, &v], out, |ins, o| {
            let mut err = [0 as c_char; ERR_LEN];
            // SAFETY: as for `velocity`.
            let code = unsafe {
                jvp(
                    self.instance,
                    ins[0].as_ptr(),
                    batch,
                    t.as_ptr(),
                    t.len(),
                    ins[1].as_ptr(),
                    o.as_mut_ptr(),
                    err.as_mut_ptr(),
                    ERR_LEN,
                )
            };
            if code == 0 {
                Ok(())
            } else {
                Err(self.callback_error("jvp", &err, code))
            }
        })
    }
}
