//! The model-agnostic sampler core.
//!
//! Nothing here knows about Stable Diffusion: the loop only sees a [`Denoiser`] that turns a
//! latent into a noise prediction, a [`Scheduler`] that turns a prediction into the next
//! latent, and a [`Method`] that decides whether the next step calls the denoiser at all.

pub mod change;
pub mod ddim;
pub mod denoise;
pub mod dpm;
pub mod early_stop;
pub mod euler;
pub mod method;
pub mod methods;
pub mod noise;
pub mod noise_motion;
pub mod run;
pub mod schedule;
pub mod scheduler;
pub mod trace;

pub use denoise::{CallPlan, Denoiser, RawPrediction};
pub use early_stop::EarlyStop;
pub use method::{Method, MethodError, MethodKind};
pub use methods::deepcache::{DeepCachePlan, UNetPart};
pub use methods::tgate::{AttentionGate, TGatePlan};
pub use methods::ucache::UCacheSettings;
pub use methods::{METHODS, MethodDef};
pub use run::{Cancelled, NonFinite, RunOutput, RunSettings, StepEvent, run};
pub use schedule::{PredictionType, SchedulerConfig};
pub use scheduler::{Scheduler, SchedulerKind, StepOutput, build_scheduler};
pub use trace::{Decision, Estimate, RunTrace, StepRecord};
