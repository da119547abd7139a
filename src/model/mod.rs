//! Noise predictors and weight resolution.
