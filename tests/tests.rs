//! One integration-test binary (keeps link time low); one module per area.
mod dsl;
