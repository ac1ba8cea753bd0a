//! Solver overhead benchmark.

fn main() {}
