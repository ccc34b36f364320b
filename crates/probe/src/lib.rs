//! Host facts and pre-flight checks.
