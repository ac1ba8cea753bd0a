//! Analytic velocity fields with closed forms, used as test oracles.
