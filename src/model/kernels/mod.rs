//! The CPU kernels and the layers built on them: fused f32 attention, GroupNorm, GEGLU and
//! linear layers ([`cpu_kernels`]), convolutions ([`cpu_conv`]), the layers the networks share
//! (`layers`), bf16 matrix products with kernels chosen at run time ([`bf16`]) and the
//! per-operation profiler ([`profile`]).

pub mod bf16;
pub mod cpu_conv;
pub mod cpu_kernels;
pub(crate) mod layers;
pub mod profile;
