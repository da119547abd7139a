//! The model-agnostic sampler core.
//!
//! Nothing here knows about Stable Diffusion: the loop only sees a [`Denoiser`] that turns a
//! latent into a noise prediction, a [`Scheduler`] that turns a prediction into the next
//! latent, and a [`Method`] that decides whether the next step calls the denoiser at all.

pub mod adaptive;
pub mod ddim;
pub mod deepcache;
pub mod denoise;
pub mod dpm;
pub mod early_stop;
pub mod euler;
pub mod method;
pub mod noise;
pub mod run;
pub mod schedule;
pub mod scheduler;
pub mod tgate;
pub mod trace;
pub mod ucache;

pub use deepcache::{DeepCachePlan, UNetPart};
pub use denoise::{CallPlan, Denoiser, RawPrediction};
pub use early_stop::EarlyStop;
pub use method::{Method, MethodError, MethodKind, UCacheSettings};
pub use run::{Cancelled, NonFinite, RunOutput, RunSettings, StepEvent, run};
pub use schedule::{PredictionType, SchedulerConfig};
pub use scheduler::{Scheduler, SchedulerKind, StepOutput, build_scheduler};
pub use tgate::{AttentionGate, TGatePlan};
pub use trace::{Decision, Estimate, RunTrace, StepRecord};
