//! Seeded random numbers, identical on every platform for a given seed (the
//! generator of `fmrt::random::SeededRng`: ChaCha8, Marsaglia's polar method).

use crate::error::fmrt_status;
use crate::panic::guard;
use crate::slice_out;
use fmrt::random::SeededRng;

/// Fills `out[0..len]` with standard normal draws from a generator seeded with
/// `seed`. This is the noise of sample 0 of `fmrt_sampler_sample` with that
/// seed (each sample has its own stream); `fmrt_sampler_draw_noise` gives the
/// noise of a whole batch. Thread-safe.
///
/// # Safety
///
/// `out` must hold `len` writable floats (NULL allowed when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn fmrt_random_normal(seed: u64, out: *mut f32, len: usize) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { slice_out(out, len, len, "out") }?;
        SeededRng::new(seed).fill_normal_f32(out.iter_mut());
        Ok(())
    })
}

/// Fills `out[0..len]` with uniform draws in [0, 1) (53 random bits each) from a
/// generator seeded with `seed`, e.g. training times t. Thread-safe.
///
/// # Safety
///
/// `out` must hold `len` writable doubles (NULL allowed when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn fmrt_random_uniform(seed: u64, out: *mut f64, len: usize) -> fmrt_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { slice_out(out, len, len, "out") }?;
        let mut rng = SeededRng::new(seed);
        for o in out {
            *o = rng.uniform();
        }
        Ok(())
    })
}
