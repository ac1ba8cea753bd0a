//! ABI version 2: `fmrt_plugin_v2`, a table with its own size and
//! capability flags, and calls through a size-prefixed descriptor
//! (`fmrt_plugin_call`) carrying the state shape and the extras.

use std::borrow::Cow;
use std::ffi::{c_char, c_void, CString};
use std::mem::{size_of, MaybeUninit};

use super::{Calls as AnyCalls, CreateFn, DestroyFn, PluginField, StateShapeFn, Table, ERR_LEN};
use crate::field::{ExtraDtype, ExtraTensor, Extras};
use crate::{Error, Result};

/// The ABI version a version-2 table reports (`FMRT_PLUGIN_V2_ABI_VERSION`).
pub const PLUGIN_V2_ABI_VERSION: u32 = 2;

/// The entry symbol a version-2 plugin exports.
pub const PLUGIN_V2_ENTRY_SYMBOL: &str = "fmrt_plugin_v2";

/// The smallest `size` a version-2 table may report
/// (`FMRT_PLUGIN_V2_MIN_SIZE`): the table of the first version-2 header.
pub const PLUGIN_V2_MIN_TABLE_SIZE: usize = size_of::<VTableV2>();

/// `sizeof(fmrt_plugin_call)` as this fmrt passes it (the call's `size`).
pub const PLUGIN_V2_CALL_SIZE: usize = size_of::<CallV2>();

/// `sizeof(fmrt_plugin_extra)` as this fmrt passes it (the call's
/// `extra_size`).
pub const PLUGIN_V2_EXTRA_SIZE: usize = size_of::<ExtraV2>();

/// The element type code of `dtype` in a call descriptor
/// (`FMRT_PLUGIN_DTYPE_*`): the values of `fmrt_dtype` in `fmrt.h`.
pub const fn dtype_code(dtype: ExtraDtype) -> u32 {
    match dtype {
        ExtraDtype::Float32 => 0,
        ExtraDtype::Float16 => 1,
        ExtraDtype::Int64 => 2,
        ExtraDtype::Int32 => 3,
        ExtraDtype::Bool => 4,
    }
}

/// What a plugin offers: the `FMRT_PLUGIN_CAP_*` bits of a version-2 table
/// that this fmrt knows. Bits it does not know are ignored (a new bit only
/// adds an optional ability; see `fmrt_plugin.h`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u64);

impl Capabilities {
    /// Nothing beyond `velocity`.
    pub const NONE: Capabilities = Capabilities(0);
    /// Takes extras (conditioning inputs).
    pub const EXTRAS: Capabilities = Capabilities(1 << 0);
    /// The state shape comes with each call.
    pub const DYNAMIC_SHAPE: Capabilities = Capabilities(1 << 1);
    /// Jacobian-vector products (`jvp`).
    pub const JVP: Capabilities = Capabilities(1 << 2);
    /// Velocity and P JVPs in one call (`velocity_and_jvps`).
    pub const STACKED_JVP: Capabilities = Capabilities(1 << 3);
    /// The exact divergence (`divergence`).
    pub const DIVERGENCE: Capabilities = Capabilities(1 << 4);
    /// Every bit this fmrt knows.
    pub const KNOWN: Capabilities = Capabilities(0x1f);

    /// The capabilities of the known bits of `bits` (the others dropped).
    pub const fn from_bits_truncate(bits: u64) -> Capabilities {
        Capabilities(bits & Self::KNOWN.0)
    }

    /// The bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }
}

impl Capabilities {
    /// The names of the set bits, as the header spells them without the
    /// `FMRT_PLUGIN_CAP_` prefix (`["JVP", "DIVERGENCE"]`).
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::EXTRAS, "EXTRAS"),
            (Self::DYNAMIC_SHAPE, "DYNAMIC_SHAPE"),
            (Self::JVP, "JVP"),
            (Self::STACKED_JVP, "STACKED_JVP"),
            (Self::DIVERGENCE, "DIVERGENCE"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.contains(*bit))
        .map(|(_, name)| name)
        .collect()
    }
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Capabilities({})", self.names().join(" | "))
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Capabilities;
    fn bitor(self, rhs: Capabilities) -> Capabilities {
        Capabilities(self.0 | rhs.0)
    }
}

/// `fmrt_plugin_extra`.
#[repr(C)]
struct ExtraV2 {
    name: *const c_char,
    dtype: u32,
    shared: u32,
    data: *const c_void,
    shape: *const usize,
    rank: usize,
    n_elements: usize,
}

/// `fmrt_plugin_call`.
#[repr(C)]
pub(super) struct CallV2 {
    size: usize,
    x: *const f32,
    batch: usize,
    state_shape: *const usize,
    state_rank: usize,
    state_len: usize,
    t: *const f64,
    t_len: usize,
    extras: *const ExtraV2,
    n_extras: usize,
    extra_size: usize,
}

type VelocityFn = unsafe extern "C" fn(
    instance: *const c_void,
    call: *const CallV2,
    out: *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32;
type JvpFn = unsafe extern "C" fn(
    instance: *const c_void,
    call: *const CallV2,
    v: *const f32,
    out: *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32;
type StackedFn = unsafe extern "C" fn(
    instance: *const c_void,
    call: *const CallV2,
    directions: usize,
    v: *const f32,
    velocity: *mut f32,
    products: *mut f32,
    err: *mut c_char,
    err_len: usize,
) -> i32;
type DivergenceFn = unsafe extern "C" fn(
    instance: *const c_void,
    call: *const CallV2,
    out: *mut f64,
    err: *mut c_char,
    err_len: usize,
) -> i32;

/// The first two fields of every version-2 table, read before the rest.
#[repr(C)]
struct Head {
    abi_version: u32,
    size: u32,
}

/// `fmrt_plugin_vtable_v2` of `fmrt_plugin.h`, field for field. Every field
/// is valid when zeroed (NULL, `None`, 0), which is how the fields a smaller
/// table lacks read.
#[repr(C)]
pub(super) struct VTableV2 {
    abi_version: u32,
    size: u32,
    capabilities: u64,
    name: *const c_char,
    create: Option<CreateFn>,
    destroy: Option<DestroyFn>,
    state_shape: Option<StateShapeFn>,
    velocity: Option<VelocityFn>,
    jvp: Option<JvpFn>,
    velocity_and_jvps: Option<StackedFn>,
    divergence: Option<DivergenceFn>,
}

pub(super) type EntryFn = unsafe extern "C" fn() -> *const VTableV2;

/// The callbacks of a version-2 plugin (each optional one present exactly
/// when its capability is).
pub(super) struct Calls {
    velocity: VelocityFn,
    jvp: Option<JvpFn>,
    velocity_and_jvps: Option<StackedFn>,
    divergence: Option<DivergenceFn>,
}

/// Calls `entry` and checks its table: version, size, then each capability
/// against its callback.
///
/// # Safety
///
/// `entry` is the `fmrt_plugin_v2` of a loaded library that follows the
/// contract of `fmrt_plugin.h`: it returns NULL or a table of at least the
/// `size` it reports, valid while the library is loaded.
pub(super) unsafe fn read_table(entry: EntryFn, fail: &dyn Fn(String) -> Error) -> Result<Table> {
    let sym = PLUGIN_V2_ENTRY_SYMBOL;
    // SAFETY: calling the entry point per the contract.
    let ptr = unsafe { entry() };
    if ptr.is_null() {
        return Err(fail(format!("`{sym}` returned NULL")));
    }
    // SAFETY: every table starts with these 8 bytes (contract); unaligned
    // reads make no assumption on the plugin's alignment.
    let head = unsafe { std::ptr::read_unaligned(ptr.cast::<Head>()) };
    if head.abi_version != PLUGIN_V2_ABI_VERSION {
        return Err(fail(format!(
            "`{sym}` reports ABI version {}, but that symbol's table is version \
             {PLUGIN_V2_ABI_VERSION}; rebuild the plugin against this fmrt_plugin.h",
            head.abi_version
        )));
    }
    let size = head.size as usize;
    if size < PLUGIN_V2_MIN_TABLE_SIZE {
        return Err(fail(format!(
            "the table of `{sym}` reports size {size} bytes, smaller than the \
             {PLUGIN_V2_MIN_TABLE_SIZE} bytes of a version-2 table \
             (FMRT_PLUGIN_V2_MIN_SIZE); set size to sizeof(fmrt_plugin_vtable_v2)"
        )));
    }
    // Read what both sides know: the plugin's size covers at least this
    // fmrt's table (checked above); a larger, newer table has fields appended
    // that this fmrt does not read.
    let mut table = MaybeUninit::<VTableV2>::zeroed();
    let known = size.min(size_of::<VTableV2>());
    // SAFETY: the plugin's table holds `size` >= `known` bytes (contract);
    // the copy is bytewise, so alignment does not matter; every bit pattern
    // of the fields (NULL or a function pointer, integers) is valid, and the
    // bytes not copied stay zero.
    let table = unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), table.as_mut_ptr().cast::<u8>(), known);
        table.assume_init()
    };
    let missing = |name: &str| fail(format!("the table of `{sym}` has no `{name}`"));
    let create = table.create.ok_or_else(|| missing("create"))?;
    let destroy = table.destroy.ok_or_else(|| missing("destroy"))?;
    let velocity = table.velocity.ok_or_else(|| missing("velocity"))?;
    let caps = Capabilities::from_bits_truncate(table.capabilities);
    let dynamic = caps.contains(Capabilities::DYNAMIC_SHAPE);
    match (dynamic, table.state_shape.is_some()) {
        (true, true) => {
            return Err(fail(format!(
                "the table of `{sym}` sets FMRT_PLUGIN_CAP_DYNAMIC_SHAPE but gives \
                 `state_shape`; a plugin whose shape comes with each call has none"
            )))
        }
        (false, false) => {
            return Err(fail(format!(
                "the table of `{sym}` has no `state_shape` (required unless \
                 FMRT_PLUGIN_CAP_DYNAMIC_SHAPE is set)"
            )))
        }
        _ => {}
    }
    for (bit, flag, callback, present) in [
        (
            Capabilities::JVP,
            "FMRT_PLUGIN_CAP_JVP",
            "jvp",
            table.jvp.is_some(),
        ),
        (
            Capabilities::STACKED_JVP,
            "FMRT_PLUGIN_CAP_STACKED_JVP",
            "velocity_and_jvps",
            table.velocity_and_jvps.is_some(),
        ),
        (
            Capabilities::DIVERGENCE,
            "FMRT_PLUGIN_CAP_DIVERGENCE",
            "divergence",
            table.divergence.is_some(),
        ),
    ] {
        match (caps.contains(bit), present) {
            (true, false) => {
                return Err(fail(format!(
                    "the table of `{sym}` sets {flag} but its `{callback}` is NULL"
                )))
            }
            (false, true) => {
                return Err(fail(format!(
                    "the table of `{sym}` gives `{callback}` without setting {flag}"
                )))
            }
            _ => {}
        }
    }
    Ok(Table {
        abi_version: PLUGIN_V2_ABI_VERSION,
        name: table.name,
        capabilities: caps,
        create,
        destroy,
        state_shape: table.state_shape,
        calls: AnyCalls::V2(Calls {
            velocity,
            jvp: table.jvp,
            velocity_and_jvps: table.velocity_and_jvps,
            divergence: table.divergence,
        }),
    })
}

/// The tensor's data pointer; `None` unless it is in standard layout.
fn data_ptr(tensor: &ExtraTensor) -> Option<*const c_void> {
    fn ptr<T>(a: &ndarray::ArrayD<T>) -> Option<*const c_void> {
        a.is_standard_layout().then(|| a.as_ptr().cast::<c_void>())
    }
    match tensor {
        ExtraTensor::Float32(a) => ptr(a),
        ExtraTensor::Float16(a) => ptr(a),
        ExtraTensor::Int64(a) => ptr(a),
        ExtraTensor::Int32(a) => ptr(a),
        ExtraTensor::Bool(a) => ptr(a),
    }
}

/// `tensor` in standard (row-major, contiguous) layout.
fn standard(tensor: &ExtraTensor) -> ExtraTensor {
    match tensor {
        ExtraTensor::Float32(a) => ExtraTensor::Float32(a.as_standard_layout().into_owned()),
        ExtraTensor::Float16(a) => ExtraTensor::Float16(a.as_standard_layout().into_owned()),
        ExtraTensor::Int64(a) => ExtraTensor::Int64(a.as_standard_layout().into_owned()),
        ExtraTensor::Int32(a) => ExtraTensor::Int32(a.as_standard_layout().into_owned()),
        ExtraTensor::Bool(a) => ExtraTensor::Bool(a.as_standard_layout().into_owned()),
    }
}

impl PluginField {
    /// Builds the call descriptor for the checked, contiguous states `x` of
    /// shape `shape` and runs `f` on it; the descriptor's pointers (extras
    /// included) stay valid until `f` returns.
    ///
    /// Each extra with a batch axis must have `B` rows or one (then repeated
    /// to `B`); shared extras pass as given. Every tensor passes row-major.
    fn with_call(
        &self,
        x: &[f32],
        shape: &[usize],
        t: &[f64],
        extras: &Extras,
        f: impl FnOnce(&CallV2) -> Result<()>,
    ) -> Result<()> {
        let batch = shape[0];
        // Owned copies (one-row extras repeated, non-standard layouts) are
        // all made before any pointer is taken.
        let mut held: Vec<(CString, bool, Cow<'_, ExtraTensor>)> = Vec::with_capacity(extras.len());
        for (name, tensor) in extras.iter() {
            let shared = extras.is_shared(name);
            let c_name = CString::new(name)
                .map_err(|_| Error::extra(self.label(), name, "the name contains a NUL byte"))?;
            let mut tensor = match tensor.shape().first() {
                _ if shared => Cow::Borrowed(tensor),
                Some(&rows) if rows == batch => Cow::Borrowed(tensor),
                Some(1) => Cow::Owned(tensor.broadcast_rows(batch)?),
                _ => {
                    return Err(Error::Shape {
                        tensor: name.to_string(),
                        expected: format!(
                            "[{batch}, ...] or [1, ...] (one row per sample, or one for all)"
                        ),
                        actual: tensor.shape().to_vec(),
                    })
                }
            };
            if data_ptr(&tensor).is_none() {
                tensor = Cow::Owned(standard(&tensor));
            }
            held.push((c_name, shared, tensor));
        }
        let mut entries = Vec::with_capacity(held.len());
        for (name, shared, tensor) in &held {
            let data = data_ptr(tensor)
                .ok_or_else(|| Error::internal("an extra is not in standard layout"))?;
            let dims = tensor.shape();
            entries.push(ExtraV2 {
                name: name.as_ptr(),
                dtype: dtype_code(tensor.dtype()),
                shared: u32::from(*shared),
                data,
                shape: if dims.is_empty() {
                    std::ptr::null()
                } else {
                    dims.as_ptr()
                },
                rank: dims.len(),
                n_elements: dims.iter().product(),
            });
        }
        let state = &shape[1..];
        let call = CallV2 {
            size: size_of::<CallV2>(),
            x: x.as_ptr(),
            batch,
            state_shape: state.as_ptr(),
            state_rank: state.len(),
            state_len: state.iter().product(),
            t: t.as_ptr(),
            t_len: t.len(),
            extras: if entries.is_empty() {
                std::ptr::null()
            } else {
                entries.as_ptr()
            },
            n_extras: entries.len(),
            extra_size: size_of::<ExtraV2>(),
        };
        f(&call)
    }

    /// The version-2 `velocity` on checked, contiguous buffers.
    pub(super) fn v2_velocity(
        &self,
        calls: &Calls,
        x: &[f32],
        shape: &[usize],
        t: &[f64],
        extras: &Extras,
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let [out] = outs else {
            return Err(Error::internal("a plugin velocity call needs one output"));
        };
        if shape[0] == 0 {
            return Ok(());
        }
        self.with_call(x, shape, t, extras, |call| {
            let mut err = [0 as c_char; ERR_LEN];
            // SAFETY: the descriptor and `out` are sized per the checked
            // shapes; thread safety per the plugin contract.
            let code = unsafe {
                (calls.velocity)(
                    self.instance,
                    call,
                    out.as_mut_ptr(),
                    err.as_mut_ptr(),
                    ERR_LEN,
                )
            };
            self.status("velocity", &err, code)
        })
    }

    /// The version-2 `jvp` on checked, contiguous buffers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn v2_jvp(
        &self,
        calls: &Calls,
        x: &[f32],
        shape: &[usize],
        t: &[f64],
        extras: &Extras,
        v: &[f32],
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let (Some(jvp), [out]) = (calls.jvp, outs) else {
            return Err(self.unsupported("Jacobian-vector products"));
        };
        if shape[0] == 0 {
            return Ok(());
        }
        self.with_call(x, shape, t, extras, |call| {
            let mut err = [0 as c_char; ERR_LEN];
            // SAFETY: as for `velocity`; `v` is shaped like `x`.
            let code = unsafe {
                jvp(
                    self.instance,
                    call,
                    v.as_ptr(),
                    out.as_mut_ptr(),
                    err.as_mut_ptr(),
                    ERR_LEN,
                )
            };
            self.status("jvp", &err, code)
        })
    }

    /// The version-2 `velocity_and_jvps` on checked, contiguous buffers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn v2_velocity_and_jvps(
        &self,
        calls: &Calls,
        x: &[f32],
        shape: &[usize],
        t: &[f64],
        extras: &Extras,
        directions: usize,
        v: &[f32],
        outs: &mut [&mut [f32]],
    ) -> Result<()> {
        let (Some(stacked), [velocity, products]) = (calls.velocity_and_jvps, outs) else {
            return Err(self.unsupported("stacked Jacobian-vector products"));
        };
        if shape[0] == 0 {
            return Ok(());
        }
        self.with_call(x, shape, t, extras, |call| {
            let mut err = [0 as c_char; ERR_LEN];
            // SAFETY: as for `velocity`; `v` and `products` hold `directions`
            // copies of x's shape (checked by the caller).
            let code = unsafe {
                stacked(
                    self.instance,
                    call,
                    directions,
                    v.as_ptr(),
                    velocity.as_mut_ptr(),
                    products.as_mut_ptr(),
                    err.as_mut_ptr(),
                    ERR_LEN,
                )
            };
            self.status("velocity_and_jvps", &err, code)
        })
    }

    /// The version-2 `divergence` on checked, contiguous buffers.
    pub(super) fn v2_divergence(
        &self,
        calls: &Calls,
        x: &[f32],
        shape: &[usize],
        t: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        let Some(divergence) = calls.divergence else {
            return Err(self.unsupported("exact divergence"));
        };
        if shape[0] == 0 {
            return Ok(());
        }
        self.with_call(x, shape, t, extras, |call| {
            let mut err = [0 as c_char; ERR_LEN];
            // SAFETY: as for `velocity`; `out` holds one value per sample.
            let code = unsafe {
                divergence(
                    self.instance,
                    call,
                    out.as_mut_ptr(),
                    err.as_mut_ptr(),
                    ERR_LEN,
                )
            };
            self.status("divergence", &err, code)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_capabilities_drop_unknown_bits_and_name_the_rest() {
        let caps = Capabilities::from_bits_truncate((1 << 40) | 0b10100);
        assert_eq!(caps, Capabilities::JVP | Capabilities::DIVERGENCE);
        assert_eq!(caps.bits(), 0b10100);
        assert_eq!(format!("{caps:?}"), "Capabilities(JVP | DIVERGENCE)");
        assert!(caps.contains(Capabilities::NONE) && !caps.contains(Capabilities::EXTRAS));
        assert_eq!(Capabilities::KNOWN.names().len(), 5);
    }

    #[test]
    fn plugin_dtype_codes_are_the_order_of_the_enum() {
        // fmrt.h numbers fmrt_dtype in ExtraDtype's order (c-api checks that
        // side; the C tests check FMRT_PLUGIN_DTYPE_* against fmrt.h).
        for (i, d) in ExtraDtype::ALL.into_iter().enumerate() {
            assert_eq!(dtype_code(d) as usize, i, "{d}");
        }
    }
}
