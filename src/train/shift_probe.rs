//! Does the image model follow its noise when the noise moves?
//!
//! Warped noise (Go-with-the-Flow) makes a clip move by sliding each frame's starting noise
//! along the motion; it works only if the image model, given the same noise shifted by k
//! pixels, draws the same picture shifted by k pixels. This probe measures that directly:
//! for each seed one larger noise canvas is drawn, and the image model generates "a large
//! red circle on a black background" (colour and shape cycle with the seed; no position
//! words) from windows of it shifted right by each of the given shifts. Where the object
//! lands is compared with where it landed from the unshifted window plus the shift.

use anyhow::{Result, ensure};
use candle_core::Tensor;
use serde::Serialize;

use super::eval::Generator;
use super::probe::color_centre;
use crate::sampler::SchedulerKind;
use crate::sampler::noise::{SplitMix64, add_pyramid};
use crate::sampler::noise_motion::NoiseMotion;
use crate::shapes::{Background, Color, SIZE, Shape};

/// The probe's result at one shift.
#[derive(Debug, Clone, Serialize)]
pub struct ShiftRow {
    /// The shift of the noise, px (to the right).
    pub shift: usize,
    /// Seeds whose object moved with the noise: its centre within [`FOLLOW_PX`] of the
    /// unshifted image's centre moved by the shift.
    pub followed: usize,
    /// Mean distance (px) from where the object would be had it followed the noise.
    pub error: f64,
    /// Mean distance (px) the object moved from the unshifted image's place (0: it stayed).
    pub moved: f64,
    /// Seeds probed (those whose images all show the object's colour).
    pub seeds: usize,
}

/// How near (px) the object must land to where the shifted noise puts it to count as
/// following.
pub const FOLLOW_PX: f64 = 2.0;

/// What to probe.
#[derive(Debug, Clone)]
pub struct ShiftProbeSettings {
    /// Seeds 1..=N.
    pub seeds: u64,
    /// Shifts (px, > 0; at most 32).
    pub shifts: Vec<usize>,
    /// DDIM steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Pyramid discount of the noise (0: plain Gaussian noise, as an image starts from).
    pub pyramid: f64,
}

/// Run the probe; one row per shift.
pub fn shift_probe(g: &Generator, s: &ShiftProbeSettings) -> Result<Vec<ShiftRow>> {
    ensure!(s.seeds > 0, "the shift probe needs at least one seed");
    ensure!(
        !s.shifts.is_empty() && s.shifts.iter().all(|&k| (1..=SIZE).contains(&k)),
        "give shifts in 1..={SIZE} px (e.g. 2,4,8)"
    );
    ensure!(
        (0.0..1.0).contains(&s.pyramid),
        "the pyramid discount must be in 0..1 (0 = plain noise)"
    );
    let (_, c, h, w) = g.sd.latent_shape(SIZE, SIZE)?;
    let most = *s.shifts.iter().max().expect("checked non-empty");
    // Noise moving `most` cells right over a clip of `most + 1` frames: frame k is the
    // canvas moved k cells.
    let slide = NoiseMotion::Shift {
        dx: most as i64,
        dy: 0,
    };
    let (ch, cw) = slide.canvas((h, w));
    let mut rows: Vec<ShiftRow> = s
        .shifts
        .iter()
        .map(|&shift| ShiftRow {
            shift,
            followed: 0,
            error: 0.0,
            moved: 0.0,
            seeds: 0,
        })
        .collect();
    for seed in 1..=s.seeds {
        let i = seed as usize;
        let color = Color::ALL[i % Color::ALL.len()];
        let shape = Shape::ALL[i % Shape::ALL.len()];
        let background = Background::Black;
        let prompt = format!("a large {color} {shape} on a black background");
        let mut rng = SplitMix64::new(seed);
        let mut canvas = rng.normals(c * ch * cw);
        if s.pyramid > 0.0 {
            add_pyramid(&mut canvas, (c, ch, cw), s.pyramid, || {
                rng.normals(1)[0] as f64
            });
        }
        // The noise moved `k` px right.
        let centre_at = |k: usize| -> Result<Option<(f64, f64)>> {
            let noise = slide.frame(&canvas, c, (h, w), k, most + 1);
            let x = Tensor::from_vec(noise, (1, c, h, w), g.sd.device())?;
            let img = g.generate_from(&prompt, &x, SchedulerKind::Ddim, s.steps, s.guidance)?;
            Ok(color_centre(&img, color, background))
        };
        let Some(base) = centre_at(0)? else {
            continue;
        };
        let mut found = vec![];
        for &k in &s.shifts {
            match centre_at(k)? {
                Some(p) => found.push(p),
                None => break,
            }
        }
        if found.len() < s.shifts.len() {
            continue;
        }
        for (row, p) in rows.iter_mut().zip(found) {
            let want = (base.0 + row.shift as f64, base.1);
            let error = ((p.0 - want.0).powi(2) + (p.1 - want.1).powi(2)).sqrt();
            row.error += error;
            row.moved += ((p.0 - base.0).powi(2) + (p.1 - base.1).powi(2)).sqrt();
            row.followed += usize::from(error <= FOLLOW_PX);
            row.seeds += 1;
        }
    }
    for row in &mut rows {
        let n = row.seeds.max(1) as f64;
        row.error /= n;
        row.moved /= n;
    }
    Ok(rows)
}
