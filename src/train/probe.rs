//! Does the model read the position words? A two-second probe, much cheaper than the
//! checker's 50-step generations.
//!
//! For each seed and each of the five positions, the prompt "a large red circle at the
//! top left on a black background" (colour and shape cycle with the seed) is run once
//! through the guided UNet at a noisy timestep, from the seed's noise over a plain
//! background, and the predicted clean image's mass of the named colour is located. A
//! model that places objects by the caption moves that mass to the named position; one
//! that ignores the words puts it at the same place for all five prompts.

use anyhow::{Result, ensure};
use candle_core::Tensor;
use serde::Serialize;

use super::alphas_cumprod;
use super::eval::Generator;
use crate::sampler;
use crate::shapes::{
    Background, Color, Mention, Position, SIZE, Scene, Shape, Size, caption, full_caption, render,
    to_model_pixels,
};

/// The probe's result at one timestep.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeRow {
    /// The timestep (0…999).
    pub timestep: usize,
    /// Mean distance (px) from the colour mass's centre to the named position's centre.
    pub distance: f64,
    /// What `distance` would be if the mass sat at the same place whatever the prompt
    /// said: per seed, the mean distance from the five centres' mean point to the five
    /// named positions.
    pub distance_if_ignored: f64,
    /// Mean distance (px) of each prompt's colour centre from the seed's mean centre over
    /// the five prompts: how far the position words move the object (0 = not at all).
    pub spread: f64,
    /// Prompts whose colour mass lies nearer the named position than any other.
    pub nearest_right: usize,
    /// The other way round: x_t made from a render of the scene (the object's faint trace
    /// at √ᾱ_t) and the seed's noise, the prompt without its position words. How often
    /// the colour mass lies nearest the rendered position — how much the model reads the
    /// layout from x_t itself (about 1 in 5 if it cannot).
    pub trace_right: usize,
    /// For the corner prompts, how many of the two sides (left/right, top/bottom) of the
    /// named corner the colour mass lies on, summed; out of `sides`. A model that knows
    /// "a corner" from the words but not which one scores about half.
    pub sides_right: usize,
    /// Sides judged (two per corner prompt).
    pub sides: usize,
    /// Prompts probed.
    pub prompts: usize,
}

/// The centre `(x, y)` of the image's mass of `color` (pixels weighted by closeness to
/// the colour relative to its distance from `background`), or `None` if there is none.
pub fn color_centre(
    img: &image::RgbImage,
    color: Color,
    background: Background,
) -> Option<(f64, f64)> {
    let c = color.rgb().map(f64::from);
    let b = background.rgb().map(f64::from);
    let d = |p: [f64; 3], q: [f64; 3]| (0..3).map(|k| (p[k] - q[k]).powi(2)).sum::<f64>().sqrt();
    let scale = d(c, b).max(1.0);
    let (mut sx, mut sy, mut sw) = (0.0, 0.0, 0.0);
    for (x, y, p) in img.enumerate_pixels() {
        let w = (1.0 - d(p.0.map(f64::from), c) / scale).max(0.0);
        sx += w * x as f64;
        sy += w * y as f64;
        sw += w;
    }
    (sw > 1e-6).then(|| (sx / sw, sy / sw))
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// The named position nearest to `p`.
fn nearest(p: (f64, f64)) -> Position {
    *Position::ALL
        .iter()
        .min_by(|a, b| dist(p, a.center()).total_cmp(&dist(p, b.center())))
        .expect("five positions")
}

/// Where the guided clean-image prediction from `x` at `t` (with ᾱ_t = `a`) puts the colour
/// of `scene`'s object on its background (the image centre if it has none of it).
fn predicted_centre(
    g: &Generator,
    prompt: &str,
    x: &Tensor,
    (t, a): (usize, f64),
    guidance: f64,
    scene: &Scene,
) -> Result<(f64, f64)> {
    let (color, background) = (scene.objects[0].color, scene.background);
    let cond = g.sd.encode_prompt(prompt, None, guidance)?;
    let eps = g.sd.predict(&cond, x, t as f64)?.guided(guidance)?;
    let x0 = ((x - (eps * (1.0 - a).sqrt())?)? / a.sqrt())?.clamp(-1.0, 1.0)?;
    let img = g.sd.to_rgb(&x0)?;
    Ok(color_centre(&img, color, background).unwrap_or((SIZE as f64 / 2.0, SIZE as f64 / 2.0)))
}

/// The probe over `seeds` seeds at each of `timesteps`, guidance `guidance`.
pub fn probe(
    g: &Generator,
    seeds: u64,
    timesteps: &[usize],
    guidance: f64,
) -> Result<Vec<ProbeRow>> {
    ensure!(seeds > 0, "the probe needs at least one seed");
    let alphas = alphas_cumprod();
    let mut rows = vec![];
    for &t in timesteps {
        ensure!(
            t < alphas.len(),
            "timestep {t} is out of range: give 0..=999"
        );
        let a = alphas[t];
        let (mut distance, mut ignored, mut spread, mut right, mut n) = (0.0, 0.0, 0.0, 0, 0);
        let (mut trace_right, mut sides_right, mut sides) = (0, 0, 0);
        for seed in 1..=seeds {
            let i = seed as usize;
            let color = Color::ALL[i % Color::ALL.len()];
            let shape = Shape::ALL[i % Shape::ALL.len()];
            let background = Background::Black;
            let s = g.sd.latent_shape(SIZE, SIZE)?;
            let noise = sampler::noise::gaussian(seed, &[s.0, s.1, s.2, s.3], g.sd.device())?;
            // x_t from a clean image, as in training.
            let noised = |img: &image::RgbImage| -> Result<Tensor> {
                let x0 = Tensor::from_vec(to_model_pixels(img), (1, 3, SIZE, SIZE), g.sd.device())?;
                Ok(((&noise * (1.0 - a).sqrt())? + (x0 * a.sqrt())?)?)
            };
            let plain = Scene {
                objects: vec![],
                background,
            };
            let x = noised(&render(&plain))?;
            let mut centres = vec![];
            for &position in Position::ALL {
                let scene = Scene::single(shape, color, Size::Large, position, background);
                let centre =
                    predicted_centre(g, &full_caption(&scene), &x, (t, a), guidance, &scene)?;
                centres.push((position, centre));
                // The trace of a rendered object in x_t, no position in the prompt.
                let without = Mention {
                    position: false,
                    ..Mention::ALL
                };
                let xt = noised(&render(&scene))?;
                let prompt = caption(&scene, &[without], true);
                let c = predicted_centre(g, &prompt, &xt, (t, a), guidance, &scene)?;
                trace_right += usize::from(nearest(c) == position);
            }
            let k = centres.len() as f64;
            let mean = (
                centres.iter().map(|c| c.1.0).sum::<f64>() / k,
                centres.iter().map(|c| c.1.1).sum::<f64>() / k,
            );
            for &(position, centre) in &centres {
                distance += dist(centre, position.center());
                ignored += dist(mean, position.center());
                spread += dist(centre, mean);
                right += usize::from(nearest(centre) == position);
                if let Some(k) = position.sides_right(centre) {
                    sides_right += k;
                    sides += 2;
                }
                n += 1;
            }
        }
        let n_f = n as f64;
        rows.push(ProbeRow {
            timestep: t,
            distance: distance / n_f,
            distance_if_ignored: ignored / n_f,
            spread: spread / n_f,
            nearest_right: right,
            trace_right,
            sides_right,
            sides,
            prompts: n,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::render;

    #[test]
    fn colour_centre_finds_a_rendered_object() {
        for &position in Position::ALL {
            let scene = Scene::single(
                Shape::Square,
                Color::Blue,
                Size::Large,
                position,
                Background::Gray,
            );
            let img = render(&scene);
            let c = color_centre(&img, Color::Blue, Background::Gray).expect("a blue square");
            assert!(dist(c, position.center()) < 1.5, "{position:?}: {c:?}");
            assert_eq!(
                color_centre(&img, Color::Red, Background::Gray),
                None,
                "no red"
            );
        }
    }
}
