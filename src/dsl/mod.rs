//! The `.fm` scheduler language.
