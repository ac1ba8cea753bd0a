//! The affine probability path x_t = α(t)·x1 + σ(t)·x0.
