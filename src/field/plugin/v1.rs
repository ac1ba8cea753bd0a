//! ABI version 1: `fmrt_plugin_v1` and `fmrt_plugin_vtable_v1`, loaded as
//! before version 2 existed (a fixed state shape, `velocity`, optional `jvp`).

use std::ffi::c_char;
use std::ffi::c_void;

use super::{Calls as AnyCalls, Capabilities, CreateFn, DestroyFn, PluginField, StateShapeFn};
use super::{Table, ERR_LEN};
use crate::{Error, Result};

/// The ABI version a version-1 table reports (`FMRT_PLUGIN_ABI_VERSION`).
pub const PLUGIN_ABI_VERSION: u32 = 1;

/// The entry symbol a version-1 plugin exports.
pub const PLUGIN_ENTRY_SYMBOL: &str = "fmrt_plugin_v1";

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

/// `fmrt_plugin_vtable_v1` of `fmrt_plugin.h`, field for field.
#[repr(C)]
pub(super) struct VTableV1 {
    abi_version: u32,
    reserved: u32,
    name: *const c_char,
    create: Option<CreateFn>,
    state_shape: Option<StateShapeFn>,
    velocity: Option<VelocityFn>,
    jvp: Option<JvpFn>,
    destroy: Option<DestroyFn>,
}

pub(super) type EntryFn = unsafe extern "C" fn() -> *const VTableV1;

/// The callbacks of a version-1 plugin.
pub(super) struct Calls {
    velocity: VelocityFn,
    jvp: Option<JvpFn>,
}

/// Calls `entry` and checks its table.
///
/// # Safety
///
/// `entry` is the `fmrt_plugin_v1` of a loaded library that follows the
/// contract of `fmrt_plugin.h`.
pub(super) unsafe fn read_table(entry: EntryFn, fail: &dyn Fn(String) -> Error) -> Result<Table> {
    // SAFETY: calling the entry point per the contract.
    let table = unsafe { entry() };
    // SAFETY: the table stays valid while the library is loaded (contract).
    let table = unsafe { table.as_ref() }
        .ok_or_else(|| fail(format!("`{PLUGIN_ENTRY_SYMBOL}` returned NULL")))?;
    if table.abi_version != PLUGIN_ABI_VERSION {
        return Err(fail(format!(
            "`{PLUGIN_ENTRY_SYMBOL}` reports ABI version {}, but this fmrt implements \
             version {PLUGIN_ABI_VERSION} for that symbol; rebuild the plugin against this \
             fmrt_plugin.h",
            table.abi_version
        )));
    }
    let missing = |name: &str| {
        fail(format!(
            "the table of `{PLUGIN_ENTRY_SYMBOL}` has no `{name}`"
        ))
    };
    let create = table.create.ok_or_else(|| missing("create"))?;
    let state_shape = table.state_shape.ok_or_else(|| missing("state_shape"))?;
    let velocity = table.velocity.ok_or_else(|| missing("velocity"))?;
    let destroy = table.destroy.ok_or_else(|| missing("destroy"))?;
    let capabilities = if table.jvp.is_some() {
        Capabilities::JVP
    } else {
        Capabilities::NONE
    };
    Ok(Table {
        abi_version: PLUGIN_ABI_VERSION,
        name: table.name,
        capabilities,
        create,
        destroy,
        state_shape: Some(state_shape),
        calls: AnyCalls::V1(Calls {
            velocity,
            jvp: table.jvp,
        }),
    })
}

impl PluginField {
    /// The version-1 `velocity` on checked, contiguous buffers.
    pub(super) fn v1_velocity(
        &self,
        calls: &Calls,
        x: &[f32],
        batch: usize,
        t: &[f64],
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let [out] = outs else {
            return Err(Error::internal("a plugin velocity call needs one output"));
        };
        let mut err = [0 as c_char; ERR_LEN];
        // SAFETY: buffers sized per the checked shapes; thread safety per the
        // plugin contract.
        let code = unsafe {
            (calls.velocity)(
                self.instance,
                x.as_ptr(),
                batch,
                t.as_ptr(),
                t.len(),
                out.as_mut_ptr(),
                err.as_mut_ptr(),
                ERR_LEN,
            )
        };
        self.status("velocity", &err, code)
    }

    /// The version-1 `jvp` on checked, contiguous buffers.
    pub(super) fn v1_jvp(
        &self,
        calls: &Calls,
        x: &[f32],
        batch: usize,
        t: &[f64],
        v: &[f32],
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let (Some(jvp), [out]) = (calls.jvp, outs) else {
            return Err(self.unsupported("Jacobian-vector products"));
        };
        let mut err = [0 as c_char; ERR_LEN];
        // SAFETY: as for `velocity`.
        let code = unsafe {
            jvp(
                self.instance,
                x.as_ptr(),
                batch,
                t.as_ptr(),
                t.len(),
                v.as_ptr(),
                out.as_mut_ptr(),
                err.as_mut_ptr(),
                ERR_LEN,
            )
        };
        self.status("jvp", &err, code)
    }
}
