//! Sampling: source → solver(field) → samples.
