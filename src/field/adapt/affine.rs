//! [`Affine`]: the one adapter behind prediction conversion
//! ([`Predicted`](super::Predicted)), schedule change
//! ([`ScheduleChange`](super::ScheduleChange)) and the network's clock
//! ([`Clock`](super::Clock)).
//!
//! Each reads its inner field m at a mapped state and time and returns an
//! affine function of the output, per sample:
//!
//! ū(x, r) = a(r)·x + b(r)·m(x / s(r), t(r)).
//!
//! Its Jacobian is J̄ = a·I + (b/s)·J_m(x/s, t), so a JVP is
//! a·v + (b/s)·J_m·v, a stacked call maps the velocity and every product
//! that way, and the divergence over D state elements is D·a + (b/s)·div m.
//! The three adapters differ only in how (t, s, a, b) follow from r, which
//! they give as [`AffineMaps`]; everything else — checking the call, mapping
//! each run of equal times once, the derivatives — is written here once.

use std::sync::Arc;

use ndarray::{ArrayViewD, ArrayViewMutD, CowArray, IxDyn, Zip};

use super::{check_call, check_divergence_call, check_stacked_call};
use crate::field::{Derivatives, Extras, VelocityField};
use crate::Result;

/// The map at one time r: ū(x, r) = a·x + b·m(x/s, t).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AffineMap {
    /// The inner field's time.
    pub t: f64,
    /// The state scale: the inner field is read at x/s.
    pub s: f64,
    /// The coefficient of the state.
    pub a: f64,
    /// The coefficient of the inner field's output.
    pub b: f64,
}

impl AffineMap {
    /// The inner field's output at `t`, unchanged (s = 1, a = 0, b = 1).
    pub fn at_time(t: f64) -> Self {
        AffineMap {
            t,
            s: 1.0,
            a: 0.0,
            b: 1.0,
        }
    }
}

/// How an [`Affine`] adapter maps each time (see the module documentation).
pub trait AffineMaps: Send + Sync {
    /// The map at time `r`; an error when the adapter is singular there.
    fn map_at(&self, r: f64) -> Result<AffineMap>;

    /// Whether every map is the identity (t = r, s = 1, a = 0, b = 1), so
    /// calls pass straight through to the inner field (default: `false`).
    fn is_identity(&self) -> bool {
        false
    }
}

/// A field read through an affine map of its time, state and output (see the
/// module documentation); [`Predicted`](super::Predicted),
/// [`ScheduleChange`](super::ScheduleChange) and [`Clock`](super::Clock) are
/// its three kinds.
pub struct Affine<M> {
    inner: Arc<dyn VelocityField>,
    maps: M,
}

impl<M: AffineMaps> Affine<M> {
    /// `inner` read through `maps`.
    pub fn from_maps(inner: Arc<dyn VelocityField>, maps: M) -> Self {
        Self { inner, maps }
    }

    /// How this adapter maps each time.
    pub fn maps(&self) -> &M {
        &self.maps
    }

    /// The field it adapts.
    pub fn inner(&self) -> &Arc<dyn VelocityField> {
        &self.inner
    }

    /// The map of each time in `r`, computed once per run of equal times
    /// (solvers pass one time per sample, usually all equal).
    fn maps_for(&self, r: &[f64]) -> Result<Vec<AffineMap>> {
        let mut maps: Vec<AffineMap> = Vec::with_capacity(r.len());
        for (i, &ri) in r.iter().enumerate() {
            let map = match maps.last() {
                Some(&previous) if i > 0 && r[i - 1].to_bits() == ri.to_bits() => previous,
                _ => self.maps.map_at(ri)?,
            };
            maps.push(map);
        }
        Ok(maps)
    }
}

/// The map of sample `i` (`maps` holds one for all samples or one each).
fn map_of(maps: &[AffineMap], i: usize) -> &AffineMap {
    &maps[if maps.len() == 1 { 0 } else { i }]
}

/// Where the inner field is read: x/s per sample (`x` itself when every
/// s is 1) and the inner times.
fn inner_point<'a>(
    x: &'a ArrayViewD<'_, f32>,
    maps: &[AffineMap],
) -> (CowArray<'a, f32, IxDyn>, Vec<f64>) {
    let times = maps.iter().map(|m| m.t).collect();
    if maps.iter().all(|m| m.s == 1.0) {
        return (CowArray::from(x.view()), times);
    }
    let mut scaled = x.to_owned();
    for (i, mut row) in scaled.outer_iter_mut().enumerate() {
        let s = map_of(maps, i).s;
        row.mapv_inplace(|v| (f64::from(v) / s) as f32);
    }
    (CowArray::from(scaled), times)
}

/// out ← a·p + b·out per sample, with (a, b) = `coefficients` of the sample's
/// map; `out` holds the inner field's output. A zero `a` leaves `p` out
/// entirely (so a non-finite state cannot leak into a pure output map), and
/// `b` = 1 with `a` = 0 leaves `out` as it is.
fn apply(
    p: &ArrayViewD<'_, f32>,
    out: &mut ArrayViewMutD<'_, f32>,
    maps: &[AffineMap],
    coefficients: impl Fn(&AffineMap) -> (f64, f64),
) {
    for (i, (p_i, mut o_i)) in p.outer_iter().zip(out.outer_iter_mut()).enumerate() {
        let (a, b) = coefficients(map_of(maps, i));
        if a == 0.0 {
            if b != 1.0 {
                o_i.mapv_inplace(|o| (b * f64::from(o)) as f32);
            }
        } else {
            Zip::from(&mut o_i)
                .and(&p_i)
                .for_each(|o, &pv| *o = (a * f64::from(pv) + b * f64::from(*o)) as f32);
        }
    }
}

/// (a, b) of the velocity: ū = a·x + b·m.
fn of_velocity(m: &AffineMap) -> (f64, f64) {
    (m.a, m.b)
}

/// (a, b/s) of a product: J̄·v = a·v + (b/s)·J_m·v.
fn of_product(m: &AffineMap) -> (f64, f64) {
    (m.a, m.b / m.s)
}

impl<M: AffineMaps> VelocityField for Affine<M> {
    fn state_shape(&self) -> Option<&[usize]> {
        self.inner.state_shape()
    }

    fn derivatives(&self) -> Derivatives {
        self.inner.derivatives()
    }

    fn velocity(
        &self,
        x: ArrayViewD<'_, f32>,
        r: &[f64],
        extras: &Extras,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        check_call(&x, r, &out)?;
        if self.maps.is_identity() {
            return self.inner.velocity(x, r, extras, out);
        }
        let maps = self.maps_for(r)?;
        let (y, t) = inner_point(&x, &maps);
        self.inner.velocity(y.view(), &t, extras, out.view_mut())?;
        apply(&x, &mut out, &maps, of_velocity);
        Ok(())
    }

    fn jvp(
        &self,
        x: ArrayViewD<'_, f32>,
        r: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        mut out: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        check_call(&x, r, &out)?;
        if self.maps.is_identity() {
            return self.inner.jvp(x, r, extras, v, out);
        }
        if v.shape() != x.shape() {
            return Err(crate::Error::Shape {
                tensor: "v".to_string(),
                expected: format!("{:?} (the shape of x)", x.shape()),
                actual: v.shape().to_vec(),
            });
        }
        let maps = self.maps_for(r)?;
        let (y, t) = inner_point(&x, &maps);
        self.inner
            .jvp(y.view(), &t, extras, v.view(), out.view_mut())?;
        apply(&v, &mut out, &maps, of_product);
        Ok(())
    }

    fn velocity_and_jvps(
        &self,
        x: ArrayViewD<'_, f32>,
        r: &[f64],
        extras: &Extras,
        v: ArrayViewD<'_, f32>,
        mut velocity: ArrayViewMutD<'_, f32>,
        mut products: ArrayViewMutD<'_, f32>,
    ) -> Result<()> {
        check_stacked_call(&x, r, &v, &velocity, &products)?;
        if self.maps.is_identity() {
            return self
                .inner
                .velocity_and_jvps(x, r, extras, v, velocity, products);
        }
        let maps = self.maps_for(r)?;
        let (y, t) = inner_point(&x, &maps);
        self.inner.velocity_and_jvps(
            y.view(),
            &t,
            extras,
            v.view(),
            velocity.view_mut(),
            products.view_mut(),
        )?;
        apply(&x, &mut velocity, &maps, of_velocity);
        for (v_p, mut products_p) in v.outer_iter().zip(products.outer_iter_mut()) {
            apply(&v_p, &mut products_p, &maps, of_product);
        }
        Ok(())
    }

    fn divergence(
        &self,
        x: ArrayViewD<'_, f32>,
        r: &[f64],
        extras: &Extras,
        out: &mut [f64],
    ) -> Result<()> {
        let dim = check_divergence_call(&x, r, out)?;
        if self.maps.is_identity() {
            return self.inner.divergence(x, r, extras, out);
        }
        let maps = self.maps_for(r)?;
        let (y, t) = inner_point(&x, &maps);
        self.inner.divergence(y.view(), &t, extras, out)?;
        for (i, d) in out.iter_mut().enumerate() {
            let (a, b) = of_product(map_of(&maps, i));
            *d = dim as f64 * a + b * *d;
        }
        Ok(())
    }
}
