//! The `fmrt` command-line tool.

fn main() {}
