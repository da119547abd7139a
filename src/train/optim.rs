//! AdamW (own implementation, so that its moments are checkpointed) and the EMA of the
//! weights: one step that the shapes, CLIP and motion-module trainers share.

use super::*;

use anyhow::{Result, bail};
use candle_core::{Tensor, Var};

use crate::shapes::Rng;

/// One AdamW update (β 0.9 / 0.999, ε 1e-8, decoupled weight decay) of weight `w` with
/// gradient `g` and moments `(m, v)` at step `step` (0-based): `(new w, new m, new v)`.
/// All inputs must be detached so that no graph is kept alive.
pub(crate) fn adamw(
    w: &Tensor,
    g: &Tensor,
    (m, v): (&Tensor, &Tensor),
    step: usize,
    lr: f64,
    weight_decay: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let t = (step + 1) as i32;
    let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
    let m = ((m * b1)? + (g * (1.0 - b1))?)?;
    let v = ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
    let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + eps)?)?;
    let new = ((w * (1.0 - lr * weight_decay))? - (update * lr)?)?;
    Ok((new, m, v))
}

/// A run's per-parameter optimiser state: the AdamW moments and the EMA of the weights.
pub(crate) struct Moments<'a> {
    /// First moments.
    pub m: &'a mut [Tensor],
    /// Second moments.
    pub v: &'a mut [Tensor],
    /// EMA of the weights.
    pub ema: &'a mut [Tensor],
}

/// Back-propagate `loss` (refused when not finite) and give every parameter with a gradient
/// one AdamW update at step `step` (0-based) with learning rate `lr` and weight decay
/// `wd_ema.0`, then move its EMA toward it with decay `min(wd_ema.1, (1 + step) / (10 +
/// step))`. Returns the loss.
pub(crate) fn adamw_ema_step(
    loss: &Tensor,
    params: &[(String, Var)],
    state: Moments,
    step: usize,
    lr: f64,
    wd_ema: (f64, f64),
) -> Result<f64> {
    adamw_ema_step_groups(loss, params, state, step, lr, wd_ema, &|_| Group::default())
}

/// How one parameter is optimised within a step: its learning rate as a share of the
/// step's, and the step at which its training began (its moments' bias correction and EMA
/// warm-up count from there, so a parameter group that joins a resumed run starts as a
/// fresh run would).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group {
    /// Share of the step's learning rate.
    pub lr_scale: f64,
    /// The step this parameter's training began at.
    pub since: usize,
}

impl Default for Group {
    fn default() -> Self {
        Self {
            lr_scale: 1.0,
            since: 0,
        }
    }
}

/// [`adamw_ema_step`] with each parameter's [`Group`] given by `group(index)`.
pub(crate) fn adamw_ema_step_groups(
    loss: &Tensor,
    params: &[(String, Var)],
    state: Moments,
    step: usize,
    lr: f64,
    (weight_decay, ema_decay): (f64, f64),
    group: &dyn Fn(usize) -> Group,
) -> Result<f64> {
    let value = loss.to_scalar::<f32>()? as f64;
    if !value.is_finite() {
        bail!("the loss is {value} at step {step}");
    }
    let grads = loss.backward()?;
    for (i, (_, var)) in params.iter().enumerate() {
        let Some(g) = grads.get(var.as_tensor()) else {
            continue;
        };
        let Group { lr_scale, since } = group(i);
        let own_step = step.saturating_sub(since);
        let decay = ema_decay.min((1.0 + own_step as f64) / (10.0 + own_step as f64));
        // Plain values from here on: nothing may keep this step's graph alive.
        let (new, m, v) = adamw(
            &var.as_tensor().detach(),
            &g.detach(),
            (&state.m[i], &state.v[i]),
            own_step,
            lr * lr_scale,
            weight_decay,
        )?;
        var.set(&new)?;
        state.ema[i] = ((&state.ema[i] * decay)? + (&new * (1.0 - decay))?)?;
        state.m[i] = m;
        state.v[i] = v;
    }
    Ok(value)
}

/// Redraw every randomly initialised parameter from `seed` (normal, with the standard
/// deviation measured on candle's draw); constant ones (norm weights) stay. candle's CPU
/// initialisers cannot be seeded. The values come from `seed`, but the standard deviation
/// is estimated from candle's unseeded draw, so two fresh runs agree only approximately.
/// (The tiny-CLIP trainer draws exactly from its seed with [`seeded_init`]; this trainer
/// keeps `reseed` so that fresh runs stay what the committed model's run was.)
pub(crate) fn reseed(params: &[(String, Var)], seed: u64) -> Result<()> {
    let mut init_rng = Rng::new(seed);
    for (_, var) in params {
        let t = var.as_tensor();
        let flat = t.flatten_all()?.to_vec1::<f32>()?;
        let var_ = variance(&flat);
        if var_ > 0.0 {
            let std = var_.sqrt();
            let data: Vec<f32> = (0..flat.len())
                .map(|_| (init_rng.normal() * std) as f32)
                .collect();
            var.set(&Tensor::from_vec(data, t.shape(), t.device())?)?;
        }
    }
    Ok(())
}
