//! Generation with a shapes model through the shared pipeline code, and the checker's
//! accuracy on held-out prompts.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device};
use serde::Serialize;

use super::probe::color_centre;
use crate::model::StableDiffusion;
use crate::sampler::{self, RunSettings, SchedulerKind};
use crate::shapes::check;
use crate::shapes::dataset::{eval_prompt, held_out_pairs, held_out_single};
use crate::shapes::{SIZE, Scene};

/// A loaded model (its schedule is `sd.schedule()`).
pub struct Generator {
    /// The pipeline.
    pub sd: StableDiffusion,
}

impl Generator {
    /// Load a diffusers-style folder on the CPU in f32.
    pub fn load(dir: &Path) -> Result<Self> {
        let sd = StableDiffusion::load_dir(dir, &Device::Cpu, DType::F32)?;
        Ok(Self { sd })
    }

    /// One image: the baseline, `steps` steps of `scheduler`, guidance `guidance`.
    pub fn generate(
        &self,
        prompt: &str,
        seed: u64,
        scheduler: SchedulerKind,
        steps: usize,
        guidance: f64,
    ) -> Result<image::RgbImage> {
        let s = self.sd.latent_shape(SIZE, SIZE)?;
        let noise = sampler::noise::gaussian(seed, &[s.0, s.1, s.2, s.3], self.sd.device())?;
        self.generate_from(prompt, &noise, scheduler, steps, guidance)
    }

    /// [`Self::generate`] from the unit-variance starting noise `noise` (1, C, H, W).
    pub fn generate_from(
        &self,
        prompt: &str,
        noise: &candle_core::Tensor,
        scheduler: SchedulerKind,
        steps: usize,
        guidance: f64,
    ) -> Result<image::RgbImage> {
        let cond = self.sd.encode_prompt(prompt, None, guidance)?;
        let sigma =
            sampler::build_scheduler(scheduler, self.sd.schedule(), steps)?.init_noise_sigma();
        let init = (noise * sigma)?;
        let settings = RunSettings {
            scheduler,
            steps,
            guidance,
            method: sampler::Method::BASELINE,
            early_stop: None,
        };
        let mut den = self.sd.denoiser(&cond);
        let out = sampler::run(&mut den, self.sd.schedule(), &settings, &init, &mut |_| {
            ControlFlow::Continue(())
        })?;
        self.sd.to_rgb(&self.sd.decode(&out.latents)?)
    }
}

/// Accuracy of one prompt group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupScore {
    /// Group name.
    pub group: String,
    /// Images generated.
    pub images: usize,
    /// Images with everything right.
    pub all_right: usize,
    /// Images with the right background.
    pub background_right: usize,
    /// Objects right / objects asked for.
    pub objects_right: usize,
    /// Objects asked for.
    pub objects: usize,
    /// Objects at positions the prompts do not name (see `check::Verdict::extra_objects`).
    pub extra_objects: usize,
    /// One-object prompts at a corner: how many of the corner's two sides (left/right,
    /// top/bottom) the named colour's mass lies on, summed (see `Position::sides_right`);
    /// out of `corner_sides`. About half when the words say "a corner" but not which.
    pub corner_sides_right: usize,
    /// Sides judged (two per one-object prompt at a corner).
    pub corner_sides: usize,
    /// Mean seconds per image.
    pub seconds_per_image: f64,
}

/// The held-out scenes by group, empty groups left out: `"single"`, `n_single` one-object
/// scenes cycling through every held-out combination, and `"pair"`, `n_pairs` two-object
/// scenes drawn from `pairs_seed`.
pub(super) fn held_out_groups(
    n_single: usize,
    n_pairs: usize,
    pairs_seed: u64,
) -> Vec<(&'static str, Vec<Scene>)> {
    let singles = held_out_single();
    let single: Vec<Scene> = (0..n_single)
        .map(|i| singles[i % singles.len()].clone())
        .collect();
    let pairs = held_out_pairs(n_pairs, pairs_seed);
    [("single", single), ("pair", pairs)]
        .into_iter()
        .filter(|(_, scenes)| !scenes.is_empty())
        .collect()
}

/// Score held-out prompts: `n_single` single-object prompts (cycling through the held-out
/// set) and `n_pairs` two-object prompts, one seed each. `save` receives each image.
pub fn score_held_out(
    generator: &Generator,
    n_single: usize,
    n_pairs: usize,
    steps: usize,
    guidance: f64,
    save: &mut dyn FnMut(&str, usize, &image::RgbImage, bool),
) -> Result<Vec<GroupScore>> {
    let mut out = vec![];
    for (name, scenes) in held_out_groups(n_single, n_pairs, 11) {
        let mut g = GroupScore {
            group: name.into(),
            images: 0,
            all_right: 0,
            background_right: 0,
            objects_right: 0,
            objects: 0,
            extra_objects: 0,
            corner_sides_right: 0,
            corner_sides: 0,
            seconds_per_image: 0.0,
        };
        let t0 = Instant::now();
        for (i, scene) in scenes.iter().enumerate() {
            let prompt = eval_prompt(scene);
            let img = generator.generate(
                &prompt,
                1000 + i as u64,
                SchedulerKind::Ddim,
                steps,
                guidance,
            )?;
            let v = check::check(&img, scene);
            g.images += 1;
            g.all_right += v.all() as usize;
            g.background_right += v.background as usize;
            g.objects += v.objects.len();
            g.objects_right += v.objects.iter().filter(|&&o| o).count();
            g.extra_objects += v.extra_objects;
            if let [o] = scene.objects[..]
                && o.position.sides().is_some()
            {
                g.corner_sides += 2;
                g.corner_sides_right += color_centre(&img, o.color, scene.background)
                    .and_then(|c| o.position.sides_right(c))
                    .unwrap_or(0);
            }
            save(&prompt, i, &img, v.all());
        }
        g.seconds_per_image = t0.elapsed().as_secs_f64() / g.images as f64;
        out.push(g);
    }
    Ok(out)
}
