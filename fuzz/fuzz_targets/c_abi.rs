//! A sequence of C ABI calls driven by the fuzzer's bytes: schedulers from
//! built-ins and from source, fields and their adapters, solvers, samplers,
//! velocity, sampling and likelihood calls with fuzzed counts and lengths,
//! typed and shared extras of any element type and shape, sampling with
//! per-call state shapes, noise scales, model options' null conditions and
//! clock, NULLs where pointers go, and handles freed in any order.
//!
//! The calls keep the C contract (a pointer is NULL or holds the length
//! stated beside it; handles are live), so anything the sanitizer or an
//! assertion reports is fmrt's fault. Asserted after every call: no
//! `FMRT_STATUS_PANIC` (a caught panic is still a bug), and a failure leaves a
//! message in `fmrt_last_error()`.

#![no_main]

use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::mem::MaybeUninit;
use std::ptr::{null, null_mut};

use fmrt_c_api::error::{fmrt_last_error, fmrt_last_error_copy, fmrt_status_name};
use fmrt_c_api::extras::*;
use fmrt_c_api::field::*;
use fmrt_c_api::fmrt_status;
use fmrt_c_api::likelihood::*;
use fmrt_c_api::likelihood_result::*;
use fmrt_c_api::model::*;
use fmrt_c_api::path::*;
use fmrt_c_api::random::*;
use fmrt_c_api::sampler::*;
use fmrt_c_api::scheduler::*;
use fmrt_c_api::solver::*;
use fmrt_c_api::tune::*;
use libfuzzer_sys::fuzz_target;

/// Most calls one input makes (each call is cheap, but inputs stay fast).
const MAX_CALLS: usize = 64;
/// Largest array the target allocates for a call; larger stated lengths go
/// with a NULL pointer (which every call must refuse before reading).
const MAX_ALLOC: usize = 4096;

/// Reads choices from the fuzzer's bytes; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True with a chance of one in `n` (for uniform bytes).
    fn one_in(&mut self, n: u8) -> bool {
        self.u8().is_multiple_of(n)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n.max(1)
    }

    /// A count: mostly small, sometimes one that overflows any product.
    fn count(&mut self) -> usize {
        match self.u8() {
            250 => usize::MAX,
            251 => usize::MAX / 2 + 1,
            252 => 1 << 32,
            253 => 1 << 20,
            b => usize::from(b % 9),
        }
    }

    /// A length near `expected` (the right one, off by one, zero, another).
    fn length(&mut self, expected: usize) -> usize {
        match self.u8() % 8 {
            0..=2 => expected,
            3 => expected.wrapping_add(1),
            4 => expected.wrapping_sub(1),
            5 => 0,
            6 => self.count(),
            _ => usize::MAX,
        }
    }

    /// A float from values that break arithmetic, or one from the bytes.
    fn f64(&mut self) -> f64 {
        match self.u8() % 16 {
            0 => 0.0,
            1 => 1.0,
            2 => 0.5,
            3 => -0.25,
            4 => 1.5,
            5 => f64::NAN,
            6 => f64::INFINITY,
            7 => f64::NEG_INFINITY,
            8 => 1e-300,
            9 => 1.0 - 1e-12,
            10 => 1e300,
            11 => -1.0,
            _ => f64::from(self.u8()) / 255.0,
        }
    }

    fn string(&mut self, options: &[&str]) -> CString {
        let len = self.below(options.len() + 1);
        match options.get(len) {
            Some(s) => CString::new(*s).expect("no NUL inside"),
            None => {
                // Free text: up to 64 bytes, NULs dropped, maybe not UTF-8.
                let n = self.below(65);
                let bytes: Vec<u8> = (0..n).map(|_| self.u8()).filter(|&b| b != 0).collect();
                CString::new(bytes).expect("NULs dropped")
            }
        }
    }
}

/// A caller-owned array: `len` values, allocated when small, else NULL.
struct Buffer<T> {
    data: Vec<T>,
    len: usize,
    null: bool,
}

impl<T: Copy> Buffer<T> {
    fn new(len: usize, null: bool, mut fill: impl FnMut() -> T) -> Self {
        let null = null || len > MAX_ALLOC;
        let data = if null {
            Vec::new()
        } else {
            (0..len).map(|_| fill()).collect()
        };
        Buffer { data, len, null }
    }

    fn ptr(&self) -> *const T {
        if self.null {
            null()
        } else {
            self.data.as_ptr()
        }
    }

    fn mut_ptr(&mut self) -> *mut T {
        if self.null {
            null_mut()
        } else {
            self.data.as_mut_ptr()
        }
    }
}

/// The live handles of one input, by class.
#[derive(Default)]
struct Handles {
    schedulers: Vec<*mut fmrt_scheduler>,
    fields: Vec<*mut fmrt_field>,
    solvers: Vec<*mut fmrt_solver>,
    samplers: Vec<*mut fmrt_sampler>,
    extras: Vec<*mut fmrt_extras>,
    /// The state size of each live sampler's field, by address.
    sampler_sizes: HashMap<usize, usize>,
}

impl Handles {
    /// The state size of the field `sampler` integrates (0 for NULL).
    fn sampler_state_size(&self, sampler: *const fmrt_sampler) -> usize {
        self.sampler_sizes
            .get(&(sampler as usize))
            .copied()
            .unwrap_or(0)
    }
}

/// One of `handles`, or NULL (one choice in `len + 1`).
fn pick<T>(bytes: &mut Bytes, handles: &[*mut T]) -> *mut T {
    let i = bytes.below(handles.len() + 1);
    handles.get(i).copied().unwrap_or(null_mut())
}

/// Removes and returns one of `handles` (NULL when there are none).
fn take<T>(bytes: &mut Bytes, handles: &mut Vec<*mut T>) -> *mut T {
    if handles.is_empty() {
        return null_mut();
    }
    let i = bytes.below(handles.len());
    handles.swap_remove(i)
}

/// Checks the outcome of a call: no caught panic; a failure explains itself.
fn check(status: fmrt_status) {
    assert!(
        status != fmrt_status::Panic,
        "a call panicked: {}",
        last_error()
    );
    if status != fmrt_status::Ok {
        assert!(!last_error().is_empty(), "{status:?} without a message");
    }
}

fn last_error() -> String {
    let message = fmrt_last_error();
    if message.is_null() {
        return String::new();
    }
    // SAFETY: fmrt_last_error returns a NUL-terminated string valid until the
    // thread's next call.
    unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .into_owned()
}

/// Keeps a new handle if the call made one.
fn keep<T>(status: fmrt_status, out: *mut T, into: &mut Vec<*mut T>) {
    check(status);
    if status == fmrt_status::Ok {
        assert!(!out.is_null(), "success without a handle");
        into.push(out);
    }
}

const BUILTINS: &[&str] = &[
    "ot",
    "poly",
    "cosine",
    "convex_cosine",
    "linear_vp",
    "vp",
    "otx",
];
const SOURCES: &[&str] = &[
    "alpha = t\nsigma = 1 - t\n",
    "param n = 2\nalpha = t^n\nsigma = 1 - t^n\n",
    "alpha = sin(pi/2*t)\nsigma = cos(pi/2*t)\n",
    "alpha = t\r\nsigma = 1 - t +\r\n",
    "let a = t*t\nalpha = a\nsigma = 1 - a\n",
    "alpha = 1\nsigma = 0\n",
];
const PARAM_NAMES: &[&str] = &["n", "a", "k"];
const METHODS: &[&str] = &[
    "euler", "midpoint", "heun", "rk4", "bosh3", "dopri5", "tsit5", "RK4",
];
const PREDICTIONS: &[&str] = &["velocity", "x1", "x0", "data", "noise", "epsilon"];
const DIVERGENCES: &[&str] = &["exact", "hutchinson", "finite-difference"];
const NORMS: &[&str] = &["independent", "sample", "batch"];
const CONTROLLERS: &[&str] = &["pi", "i"];
const DISTRIBUTIONS: &[&str] = &["rademacher", "gaussian"];

/// The number of floats of one state of `field`, when it has one.
fn state_size(field: *const fmrt_field) -> usize {
    let mut size = 0;
    // SAFETY: `field` is NULL or live; `size` is writable.
    let status = unsafe { fmrt_field_state_size(field, &mut size) };
    check(status);
    size
}

/// Runs one call chosen by the next byte.
fn step(bytes: &mut Bytes, h: &mut Handles) {
    // SAFETY (all calls below): every handle is NULL or live (freed handles
    // leave `h`), every array pointer is NULL or holds the length passed
    // beside it, and outputs are distinct from inputs.
    unsafe {
        match bytes.u8() % 26 {
            0 => {
                let name = bytes.string(BUILTINS);
                let param_name = bytes.string(PARAM_NAMES);
                let param = fmrt_param {
                    name: param_name.as_ptr(),
                    value: bytes.f64(),
                };
                let n_params = bytes.below(2);
                let mut out = null_mut();
                let status = fmrt_scheduler_builtin(name.as_ptr(), &param, n_params, &mut out);
                keep(status, out, &mut h.schedulers);
            }
            1 => {
                let source = bytes.string(SOURCES);
                let file = if bytes.one_in(2) {
                    c"f.fm".as_ptr()
                } else {
                    null()
                };
                let mut out = null_mut();
                let status = fmrt_scheduler_from_source(source.as_ptr(), file, null(), 0, &mut out);
                keep(status, out, &mut h.schedulers);
            }
            2 => {
                let s = pick(bytes, &h.schedulers);
                let t = Buffer::new(bytes.count(), bytes.one_in(5), || 0.5);
                let out_len = bytes.length(t.len);
                let mut out = Buffer::new(out_len, false, || fmrt_coefficients {
                    alpha: 0.0,
                    sigma: 0.0,
                    d_alpha: 0.0,
                    d_sigma: 0.0,
                });
                let status =
                    fmrt_scheduler_coefficients_many(s, t.ptr(), t.len, out.mut_ptr(), out.len);
                check(status);
                let mut one = MaybeUninit::uninit();
                check(fmrt_scheduler_coefficients(
                    s,
                    bytes.f64(),
                    one.as_mut_ptr(),
                ));
            }
            3 => {
                let s = pick(bytes, &h.schedulers);
                let quantity = u32::from(bytes.u8() % 6);
                let buf_len = bytes.below(48);
                let mut buf = Buffer::new(buf_len, bytes.one_in(4), || 0 as c_char);
                let mut need = 0;
                check(fmrt_scheduler_expression(
                    s,
                    quantity,
                    buf.mut_ptr(),
                    buf.len,
                    &mut need,
                ));
            }
            4 => {
                let s = pick(bytes, &h.schedulers);
                let (k, d) = (bytes.count(), bytes.count());
                let null = bytes.u8();
                let weights = Buffer::new(k, null % 7 == 1, || 1.0);
                let means = Buffer::new(k.saturating_mul(d), null % 7 == 2, || bytes.f64());
                let stds = Buffer::new(k, null % 7 == 3, || 0.5);
                let mut out = null_mut();
                let status = fmrt_field_gaussian_mixture(
                    s,
                    weights.ptr(),
                    means.ptr(),
                    stds.ptr(),
                    k,
                    d,
                    &mut out,
                );
                keep(status, out, &mut h.fields);
            }
            5 => {
                let s = pick(bytes, &h.schedulers);
                let k = bytes.count();
                let mut out = null_mut();
                let status =
                    fmrt_field_gaussian_ring(s, k, bytes.f64() * 4.0, bytes.f64(), &mut out);
                keep(status, out, &mut h.fields);
            }
            6 => {
                let f = pick(bytes, &h.fields);
                let s = pick(bytes, &h.schedulers);
                let prediction = bytes.string(PREDICTIONS);
                let mut out = null_mut();
                let status = fmrt_field_predicted(f, s, prediction.as_ptr(), &mut out);
                keep(status, out, &mut h.fields);
            }
            7 => {
                let f = pick(bytes, &h.fields);
                let (a, b) = (pick(bytes, &h.schedulers), pick(bytes, &h.schedulers));
                let mut out = null_mut();
                let status = fmrt_field_schedule_change(f, a, b, &mut out);
                keep(status, out, &mut h.fields);
            }
            8 => {
                let f = pick(bytes, &h.fields);
                let e = pick(bytes, &h.extras);
                let mut out = null_mut();
                let status = fmrt_field_guided(f, bytes.f64(), e, &mut out);
                keep(status, out, &mut h.fields);
            }
            9 => {
                let method = bytes.string(METHODS);
                let mut out = null_mut();
                let status = if bytes.one_in(2) {
                    fmrt_solver_fixed(method.as_ptr(), bytes.below(17), &mut out)
                } else {
                    let grid = Buffer::new(bytes.below(6), false, || bytes.f64());
                    fmrt_solver_grid(method.as_ptr(), grid.ptr(), grid.len, &mut out)
                };
                keep(status, out, &mut h.solvers);
            }
            10 if bytes.one_in(2) => {
                // The handle: every setter with fuzzed values, each refusal
                // leaving the config as it was.
                let method = bytes.string(METHODS);
                let (norm, controller) = (bytes.string(NORMS), bytes.string(CONTROLLERS));
                let mut config = null_mut();
                check(fmrt_adaptive_config_new(&mut config));
                check(fmrt_adaptive_config_set_rtol(config, bytes.f64() * 1e-2));
                check(fmrt_adaptive_config_set_atol(config, bytes.f64() * 1e-2));
                check(fmrt_adaptive_config_set_safety(config, bytes.f64()));
                check(fmrt_adaptive_config_set_min_factor(config, bytes.f64()));
                check(fmrt_adaptive_config_set_max_factor(
                    config,
                    bytes.f64() * 10.0,
                ));
                check(fmrt_adaptive_config_set_max_steps(
                    config,
                    bytes.below(200) as u64,
                ));
                check(fmrt_adaptive_config_set_initial_step(config, bytes.f64()));
                check(fmrt_adaptive_config_set_error_norm(config, norm.as_ptr()));
                check(fmrt_adaptive_config_set_controller(
                    config,
                    controller.as_ptr(),
                ));
                let mut out = null_mut();
                let status = fmrt_solver_adaptive_config(method.as_ptr(), config, &mut out);
                fmrt_adaptive_config_free(config);
                keep(status, out, &mut h.solvers);
            }
            10 => {
                let method = bytes.string(METHODS);
                let mut options = MaybeUninit::uninit();
                check(fmrt_adaptive_options_default(options.as_mut_ptr()));
                let mut options = options.assume_init();
                options.rtol = bytes.f64() * 1e-2;
                options.atol = bytes.f64() * 1e-2;
                options.initial_step = bytes.f64();
                options.max_steps = bytes.below(200) as u64;
                let mut out = null_mut();
                let status = fmrt_solver_adaptive(method.as_ptr(), &options, &mut out);
                keep(status, out, &mut h.solvers);
            }
            11 => {
                let (f, s) = (pick(bytes, &h.fields), pick(bytes, &h.solvers));
                let mut out = null_mut();
                let status = fmrt_sampler_new(f, s, &mut out);
                if status == fmrt_status::Ok {
                    h.sampler_sizes.insert(out as usize, state_size(f));
                }
                keep(status, out, &mut h.samplers);
            }
            12 => {
                let f = pick(bytes, &h.fields);
                let e = pick(bytes, &h.extras);
                let size = if f.is_null() { 0 } else { state_size(f) };
                let n = bytes.count();
                let want = n.saturating_mul(size);
                let x = Buffer::new(bytes.length(want), bytes.one_in(9), || bytes.f64() as f32);
                let t = Buffer::new(bytes.length(n), bytes.one_in(9), || bytes.f64());
                let mut out = Buffer::new(bytes.length(want), bytes.one_in(9), || 0f32);
                let status = fmrt_field_velocity(
                    f,
                    x.ptr(),
                    x.len,
                    n,
                    t.ptr(),
                    t.len,
                    e,
                    out.mut_ptr(),
                    out.len,
                );
                check(status);
            }
            13 => {
                let sampler = pick(bytes, &h.samplers);
                let e = pick(bytes, &h.extras);
                let size = h.sampler_state_size(sampler);
                let n = bytes.count();
                let times = Buffer::new(bytes.below(4), false, || bytes.f64());
                let want = n.saturating_mul(size);
                let mut out_x = Buffer::new(bytes.length(want), bytes.one_in(9), || 0f32);
                let mut trajectory = Buffer::new(
                    bytes.length(want.saturating_mul(times.len)),
                    bytes.one_in(9),
                    || 0f32,
                );
                let mut stats = MaybeUninit::uninit();
                let status = fmrt_sampler_sample(
                    sampler,
                    n,
                    u64::from(bytes.u8()),
                    times.ptr(),
                    times.len,
                    e,
                    out_x.mut_ptr(),
                    out_x.len,
                    trajectory.mut_ptr(),
                    trajectory.len,
                    stats.as_mut_ptr(),
                );
                check(status);
            }
            14 => {
                let sampler = pick(bytes, &h.samplers);
                let size = h.sampler_state_size(sampler);
                let n = bytes.count();
                let want = n.saturating_mul(size);
                let x0 = Buffer::new(bytes.length(want), false, || bytes.f64() as f32);
                let times = Buffer::new(bytes.below(3), false, || bytes.f64());
                let mut out_x = Buffer::new(bytes.length(want), false, || 0f32);
                let mut trajectory =
                    Buffer::new(bytes.length(want.saturating_mul(times.len)), false, || 0f32);
                let status = if bytes.one_in(2) {
                    fmrt_sampler_integrate(
                        sampler,
                        x0.ptr(),
                        x0.len,
                        n,
                        bytes.f64(),
                        bytes.f64(),
                        times.ptr(),
                        times.len,
                        null(),
                        out_x.mut_ptr(),
                        out_x.len,
                        trajectory.mut_ptr(),
                        trajectory.len,
                        null_mut(),
                    )
                } else {
                    let starts = Buffer::new(n, false, || bytes.f64());
                    let ends = Buffer::new(n, false, || bytes.f64());
                    fmrt_sampler_integrate_per_sample(
                        sampler,
                        x0.ptr(),
                        x0.len,
                        n,
                        starts.ptr(),
                        ends.ptr(),
                        times.ptr(),
                        times.len,
                        null(),
                        out_x.mut_ptr(),
                        out_x.len,
                        trajectory.mut_ptr(),
                        trajectory.len,
                        null_mut(),
                    )
                };
                check(status);
            }
            15 | 16 => {
                let f = pick(bytes, &h.fields);
                let size = if f.is_null() { 0 } else { state_size(f) };
                let mut options = MaybeUninit::uninit();
                check(fmrt_likelihood_options_default(options.as_mut_ptr()));
                let mut options = options.assume_init();
                let divergence = bytes.string(DIVERGENCES);
                let distribution = bytes.string(DISTRIBUTIONS);
                options.divergence = divergence.as_ptr();
                options.distribution = distribution.as_ptr();
                options.probes = bytes.count();
                options.epsilon = bytes.f64();
                // Always a fuzzed solver: the default adaptive one may take
                // 10^5 steps on a fuzzed schedule.
                options.solver = pick(bytes, &h.solvers);
                if options.solver.is_null() {
                    return;
                }
                let n = bytes.count();
                let want = n.saturating_mul(size);
                let x = Buffer::new(bytes.length(want), bytes.one_in(9), || bytes.f64() as f32);
                let mut log_p = Buffer::new(bytes.length(n), bytes.one_in(9), || 0f64);
                let status = if !bytes.one_in(4) {
                    let t = Buffer::new(bytes.length(n), false, || bytes.f64());
                    let mut x0 = Buffer::new(bytes.length(want), bytes.one_in(2), || 0f32);
                    let mut bpd = Buffer::new(bytes.length(n), bytes.one_in(2), || 0f64);
                    let mut stats = MaybeUninit::uninit();
                    fmrt_log_likelihood(
                        f,
                        &options,
                        x.ptr(),
                        x.len,
                        n,
                        t.ptr(),
                        t.len,
                        null(),
                        log_p.mut_ptr(),
                        log_p.len,
                        x0.mut_ptr(),
                        x0.len,
                        bpd.mut_ptr(),
                        bpd.len,
                        stats.as_mut_ptr(),
                    )
                } else {
                    let mut out_t = Buffer::new(bytes.length(n), false, || 0f64);
                    fmrt_most_probable_time(
                        f,
                        &options,
                        x.ptr(),
                        x.len,
                        n,
                        bytes.f64(),
                        bytes.f64(),
                        bytes.f64().max(1e-3),
                        null(),
                        out_t.mut_ptr(),
                        out_t.len,
                        log_p.mut_ptr(),
                        log_p.len,
                    )
                };
                check(status);
            }
            17 => match bytes.u8() % 5 {
                0 => fmrt_scheduler_free(take(bytes, &mut h.schedulers)),
                1 => fmrt_field_free(take(bytes, &mut h.fields)),
                2 => fmrt_solver_free(take(bytes, &mut h.solvers)),
                3 => fmrt_sampler_free(take(bytes, &mut h.samplers)),
                _ => fmrt_extras_free(take(bytes, &mut h.extras)),
            },
            18 => {
                let e = pick(bytes, &h.extras);
                if e.is_null() {
                    let mut out = null_mut();
                    let status = fmrt_extras_new(&mut out);
                    keep(status, out, &mut h.extras);
                    return;
                }
                let name = bytes.string(&["label", "cond", "x"]);
                if bytes.one_in(2) {
                    let labels = Buffer::new(bytes.count(), false, || i64::from(bytes.u8()));
                    check(fmrt_extras_set_labels(
                        e,
                        name.as_ptr(),
                        labels.ptr(),
                        labels.len,
                    ));
                } else {
                    let shape = Buffer::new(bytes.below(4), false, || bytes.count());
                    let data = Buffer::new(bytes.count(), false, || bytes.f64() as f32);
                    check(fmrt_extras_set_float32(
                        e,
                        name.as_ptr(),
                        data.ptr(),
                        data.len,
                        shape.ptr(),
                        shape.len,
                    ));
                }
            }
            19 => {
                let f = pick(bytes, &h.fields);
                let mut shape = Buffer::new(bytes.below(4), bytes.one_in(3), || 0usize);
                let mut rank = 0;
                check(fmrt_field_state_shape(
                    f,
                    shape.mut_ptr(),
                    shape.len,
                    &mut rank,
                ));
                let mut size = 0;
                check(fmrt_field_state_size(f, &mut size));
            }
            20 => {
                let sampler = pick(bytes, &h.samplers);
                let n = bytes.count();
                let want = n.saturating_mul(h.sampler_state_size(sampler));
                let mut out = Buffer::new(bytes.length(want), false, || 0f32);
                check(fmrt_sampler_draw_noise(
                    sampler,
                    n,
                    7,
                    out.mut_ptr(),
                    out.len,
                ));
                let mut noise = Buffer::new(bytes.count(), bytes.one_in(3), || 0f32);
                check(fmrt_random_normal(1, noise.mut_ptr(), noise.len));
                let mut uniform = Buffer::new(bytes.count(), bytes.one_in(3), || 0f64);
                check(fmrt_random_uniform(2, uniform.mut_ptr(), uniform.len));
            }
            22 => {
                // A tensor extra of any type (6 and up: unknown), rank 0..3.
                let e = pick(bytes, &h.extras);
                let name = bytes.string(&["x", "mask", "label", "img_ids"]);
                let dtype = u32::from(bytes.u8() % 7);
                let item = match dtype {
                    1 => 2,
                    2 => 8,
                    4 => 1,
                    _ => 4,
                };
                let rank = bytes.below(4);
                let shape = Buffer::new(rank, bytes.one_in(9), || bytes.count());
                let want = shape.data.iter().fold(1usize, |a, &d| a.saturating_mul(d));
                let n = bytes.length(want);
                let bytes_len = n.saturating_mul(item);
                let data = Buffer::new(bytes_len, bytes.one_in(6), || bytes.u8());
                let data_ptr = data.ptr().cast::<std::ffi::c_void>();
                let status = if bytes.one_in(2) {
                    fmrt_extras_set_tensor(
                        e,
                        name.as_ptr(),
                        dtype,
                        data_ptr,
                        n,
                        shape.ptr(),
                        shape.len,
                    )
                } else {
                    fmrt_extras_set_shared_tensor(
                        e,
                        name.as_ptr(),
                        dtype,
                        data_ptr,
                        n,
                        shape.ptr(),
                        shape.len,
                    )
                };
                check(status);
            }
            23 => {
                // Sampling with the state shape given per call.
                let sampler = pick(bytes, &h.samplers);
                let e = if bytes.one_in(2) {
                    pick(bytes, &h.extras)
                } else {
                    null_mut()
                };
                let rank = bytes.below(3) + usize::from(bytes.one_in(8));
                let shape = Buffer::new(rank, bytes.one_in(9), || bytes.count());
                let per = shape.data.iter().fold(1usize, |a, &d| a.saturating_mul(d));
                let n = bytes.count();
                let want = n.saturating_mul(per);
                let mut out = Buffer::new(bytes.length(want), false, || 0f32);
                let mut stats = MaybeUninit::<fmrt_stats>::uninit();
                let stats_ptr = if bytes.one_in(2) {
                    stats.as_mut_ptr()
                } else {
                    null_mut()
                };
                match bytes.u8() % 5 {
                    0 => check(fmrt_sampler_sample_shaped(
                        sampler,
                        shape.ptr(),
                        shape.len,
                        n,
                        3,
                        e,
                        out.mut_ptr(),
                        out.len,
                        stats_ptr,
                    )),
                    1 => check(fmrt_sampler_sample_rows_shaped(
                        sampler,
                        shape.ptr(),
                        shape.len,
                        bytes.count() as u64,
                        n,
                        3,
                        e,
                        out.mut_ptr(),
                        out.len,
                        stats_ptr,
                    )),
                    2 => check(fmrt_sampler_draw_noise_shaped(
                        sampler,
                        shape.ptr(),
                        shape.len,
                        bytes.count() as u64,
                        n,
                        3,
                        out.mut_ptr(),
                        out.len,
                    )),
                    3 => {
                        let field = pick(bytes, &h.fields);
                        let x =
                            Buffer::new(bytes.length(want), bytes.one_in(5), || bytes.f64() as f32);
                        let t = Buffer::new(bytes.length(n), bytes.one_in(7), || bytes.f64());
                        check(fmrt_field_velocity_shaped(
                            field,
                            shape.ptr(),
                            shape.len,
                            x.ptr(),
                            x.len,
                            n,
                            t.ptr(),
                            t.len,
                            e,
                            out.mut_ptr(),
                            out.len,
                        ));
                    }
                    _ => {
                        let z =
                            Buffer::new(bytes.length(want), bytes.one_in(5), || bytes.f64() as f32);
                        check(fmrt_sampler_integrate_shaped(
                            sampler,
                            shape.ptr(),
                            shape.len,
                            n,
                            z.ptr(),
                            z.len,
                            e,
                            out.mut_ptr(),
                            out.len,
                            stats_ptr,
                        ));
                    }
                }
            }
            24 => {
                // A noise-scaled copy of a sampler; model options' null
                // conditions and clock (no model is opened).
                let sampler = pick(bytes, &h.samplers);
                let mut out = null_mut();
                let status = fmrt_sampler_with_noise_scale(sampler, bytes.f64(), &mut out);
                if status == fmrt_status::Ok {
                    let size = h.sampler_state_size(sampler);
                    h.sampler_sizes.insert(out as usize, size);
                }
                keep(status, out, &mut h.samplers);
                let mut options = null_mut();
                check(fmrt_model_options_new(&mut options));
                let input = bytes.string(&["mu", "text", "mask"]);
                let input_ptr = if bytes.one_in(7) {
                    null()
                } else {
                    input.as_ptr()
                };
                match bytes.u8() % 5 {
                    0 => check(fmrt_model_options_set_null_zeros(options, input_ptr)),
                    1 => check(fmrt_model_options_set_null_fill(
                        options,
                        input_ptr,
                        bytes.f64(),
                    )),
                    2 => {
                        let dtype = u32::from(bytes.u8() % 7);
                        let rank = bytes.below(3);
                        let shape = Buffer::new(rank, bytes.one_in(9), || bytes.count());
                        let want = shape.data.iter().fold(1usize, |a, &d| a.saturating_mul(d));
                        let n = bytes.length(want);
                        let data = Buffer::new(n.saturating_mul(8), bytes.one_in(6), || bytes.u8());
                        check(fmrt_model_options_set_null_tensor(
                            options,
                            input_ptr,
                            dtype,
                            data.ptr().cast::<std::ffi::c_void>(),
                            n,
                            shape.ptr(),
                            shape.len,
                        ));
                    }
                    3 => {
                        let d = bytes.string(&["forward", "reversed", "sideways"]);
                        check(fmrt_model_options_set_time_direction(options, d.as_ptr()));
                    }
                    _ => check(fmrt_model_options_set_time_scale(
                        options,
                        bytes.f64() * 2000.0,
                    )),
                }
                fmrt_model_options_free(options);
            }
            25 => {
                // Partial results, state precisions and per-sample
                // statistics: a partial or f32 sampler's status shard, a likelihood result handle with its
                // accessors, and a work-precision table on small budgets (a
                // budget is the caller's request for work, so the target keeps
                // it small; its lengths and pointers are fuzzed as elsewhere).
                let sampler = pick(bytes, &h.samplers);
                match bytes.u8() % 3 {
                    0 => {
                        // A partial sampler, or one with a state precision
                        // (2: no precision), which every sampling branch
                        // then draws from the pool.
                        let mut out = null_mut();
                        let status = if bytes.one_in(2) {
                            fmrt_sampler_with_state_precision(
                                sampler,
                                u32::from(bytes.u8() % 3),
                                &mut out,
                            )
                        } else {
                            fmrt_sampler_with_partial(sampler, i32::from(bytes.u8() % 2), &mut out)
                        };
                        if status == fmrt_status::Ok {
                            let size = h.sampler_state_size(sampler);
                            h.sampler_sizes.insert(out as usize, size);
                        }
                        keep(status, out, &mut h.samplers);
                        let target = pick(bytes, &h.samplers);
                        let n = bytes.count();
                        let want = n.saturating_mul(h.sampler_state_size(target));
                        let mut x = Buffer::new(bytes.length(want), bytes.one_in(9), || 0f32);
                        let mut status_out = Buffer::new(bytes.length(n), bytes.one_in(5), || {
                            fmrt_sample_status::Done
                        });
                        let mut accepted = Buffer::new(bytes.length(n), bytes.one_in(5), || 0u64);
                        let mut rejected = Buffer::new(bytes.length(n), bytes.one_in(5), || 0u64);
                        let mut stats = MaybeUninit::uninit();
                        check(fmrt_sampler_sample_rows_status(
                            target,
                            u64::from(bytes.u8()),
                            n,
                            3,
                            pick(bytes, &h.extras),
                            x.mut_ptr(),
                            x.len,
                            status_out.mut_ptr(),
                            status_out.len,
                            accepted.mut_ptr(),
                            accepted.len,
                            rejected.mut_ptr(),
                            rejected.len,
                            if bytes.one_in(6) {
                                null_mut()
                            } else {
                                stats.as_mut_ptr()
                            },
                        ));
                    }
                    1 => {
                        let f = pick(bytes, &h.fields);
                        let size = if f.is_null() { 0 } else { state_size(f) };
                        let mut config = null_mut();
                        check(fmrt_likelihood_config_new(&mut config));
                        let solver = pick(bytes, &h.solvers);
                        if solver.is_null() {
                            fmrt_likelihood_config_free(config);
                            return;
                        }
                        check(fmrt_likelihood_config_set_solver(config, solver));
                        let divergence = bytes.string(DIVERGENCES);
                        check(fmrt_likelihood_config_set_divergence(
                            config,
                            divergence.as_ptr(),
                        ));
                        check(fmrt_likelihood_config_set_probes(config, bytes.count()));
                        check(fmrt_likelihood_config_set_partial(
                            config,
                            i32::from(bytes.u8() % 2),
                        ));
                        let n = bytes.count();
                        let want = n.saturating_mul(size);
                        let x =
                            Buffer::new(bytes.length(want), bytes.one_in(9), || bytes.f64() as f32);
                        let t = Buffer::new(bytes.length(n), bytes.one_in(4), || bytes.f64());
                        let mut result = null_mut();
                        let status = fmrt_log_likelihood_result(
                            f,
                            config,
                            x.ptr(),
                            x.len,
                            n,
                            t.ptr(),
                            t.len,
                            null(),
                            &mut result,
                        );
                        check(status);
                        fmrt_likelihood_config_free(config);
                        if status != fmrt_status::Ok {
                            return;
                        }
                        let mut len = 0;
                        check(fmrt_likelihood_result_len(result, &mut len));
                        let mut log_p = Buffer::new(bytes.length(len), bytes.one_in(6), || 0f64);
                        check(fmrt_likelihood_result_log_p(
                            result,
                            log_p.mut_ptr(),
                            log_p.len,
                        ));
                        let mut se = Buffer::new(bytes.length(len), bytes.one_in(6), || 0f64);
                        check(fmrt_likelihood_result_std_error(
                            result,
                            se.mut_ptr(),
                            se.len,
                        ));
                        let mut st = Buffer::new(bytes.length(len), bytes.one_in(6), || {
                            fmrt_sample_status::Done
                        });
                        check(fmrt_likelihood_result_sample_status(
                            result,
                            st.mut_ptr(),
                            st.len,
                        ));
                        let mut a = Buffer::new(bytes.length(len), bytes.one_in(6), || 0u64);
                        let mut r = Buffer::new(bytes.length(len), bytes.one_in(6), || 0u64);
                        check(fmrt_likelihood_result_sample_steps(
                            result,
                            a.mut_ptr(),
                            a.len,
                            r.mut_ptr(),
                            r.len,
                        ));
                        fmrt_likelihood_result_free(result);
                    }
                    _ => {
                        let budgets =
                            Buffer::new(bytes.below(3), bytes.one_in(7), || 1 + bytes.below(6));
                        let mut table = null_mut();
                        let status = fmrt_tune(
                            sampler,
                            budgets.ptr(),
                            budgets.len,
                            bytes.below(5),
                            u64::from(bytes.u8()),
                            bytes.f64() * 1e-3,
                            pick(bytes, &h.extras),
                            pick(bytes, &h.schedulers),
                            &mut table,
                        );
                        check(status);
                        if status != fmrt_status::Ok {
                            return;
                        }
                        let mut len = 0;
                        check(fmrt_tune_table_len(table, &mut len));
                        let mut row = MaybeUninit::uninit();
                        check(fmrt_tune_table_row(
                            table,
                            bytes.below(len + 2),
                            row.as_mut_ptr(),
                        ));
                        check(fmrt_tune_table_best(
                            table,
                            bytes.below(8),
                            row.as_mut_ptr(),
                        ));
                        let mut skipped_len = 0;
                        check(fmrt_tune_table_skipped_len(table, &mut skipped_len));
                        let mut skipped = MaybeUninit::uninit();
                        check(fmrt_tune_table_skipped(
                            table,
                            bytes.below(skipped_len + 2),
                            skipped.as_mut_ptr(),
                        ));
                        fmrt_tune_table_free(table);
                    }
                }
            }
            _ => {
                let s = pick(bytes, &h.schedulers);
                let n = bytes.count();
                let want = n.saturating_mul(bytes.count());
                let len = bytes.length(want);
                let x1 = Buffer::new(len, false, || bytes.f64() as f32);
                let x0 = Buffer::new(len, bytes.one_in(5), || bytes.f64() as f32);
                let t = Buffer::new(bytes.length(n), false, || bytes.f64());
                let mut xt = Buffer::new(bytes.length(want), false, || 0f32);
                let mut target = Buffer::new(bytes.length(want), false, || 0f32);
                check(fmrt_path_training_batch(
                    s,
                    x1.ptr(),
                    x0.ptr(),
                    len,
                    n,
                    t.ptr(),
                    t.len,
                    xt.mut_ptr(),
                    xt.len,
                    target.mut_ptr(),
                    target.len,
                ));
                let name = fmrt_status_name(u32::from(bytes.u8()) * 7);
                assert!(!name.is_null());
                let mut buf = Buffer::new(bytes.below(32), bytes.one_in(3), || 0 as c_char);
                let mut need = 0;
                let _ = fmrt_last_error_copy(buf.mut_ptr(), buf.len, &mut need);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut bytes = Bytes(data);
    let mut handles = Handles::default();
    for _ in 0..MAX_CALLS {
        if bytes.is_empty() {
            break;
        }
        step(&mut bytes, &mut handles);
    }
    // Free what is left in an order the bytes choose: every handle keeps its
    // own references, so any order is fine.
    let Handles {
        schedulers,
        fields,
        solvers,
        samplers,
        extras,
        ..
    } = handles;
    let mut left: Vec<Box<dyn FnOnce()>> = Vec::new();
    // SAFETY (each closure): the handle is live and freed once.
    left.extend(
        schedulers
            .into_iter()
            .map(|p| -> Box<dyn FnOnce()> { Box::new(move || unsafe { fmrt_scheduler_free(p) }) }),
    );
    left.extend(
        fields
            .into_iter()
            .map(|p| -> Box<dyn FnOnce()> { Box::new(move || unsafe { fmrt_field_free(p) }) }),
    );
    left.extend(
        solvers
            .into_iter()
            .map(|p| -> Box<dyn FnOnce()> { Box::new(move || unsafe { fmrt_solver_free(p) }) }),
    );
    left.extend(
        samplers
            .into_iter()
            .map(|p| -> Box<dyn FnOnce()> { Box::new(move || unsafe { fmrt_sampler_free(p) }) }),
    );
    left.extend(
        extras
            .into_iter()
            .map(|p| -> Box<dyn FnOnce()> { Box::new(move || unsafe { fmrt_extras_free(p) }) }),
    );
    while !left.is_empty() {
        let i = bytes.below(left.len());
        (left.swap_remove(i))();
    }
});
