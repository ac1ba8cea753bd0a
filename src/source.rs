//! Source distributions p0 (standard normal by default).
