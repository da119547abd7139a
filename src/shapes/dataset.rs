//! Training pairs and prompt sets.
//!
//! Training captions name a random subset of the attributes (so "a red circle" is a
//! valid prompt) and are dropped (empty) for classifier-free guidance. **Held-out
//! prompts**: for a fixed quarter of the (objects' colour, shape, position; background)
//! combinations, no training caption ever names all of colour, shape and position of
//! every object together with the background — so the evaluation prompts of that form
//! ([`held_out_single`], [`held_out_pairs`]) are never seen as captions in training.

use super::{Background, Color, Drawn, Mention, Position, Rng, SIZE, Scene, Shape, Size, caption};

/// FNV-1a, 64 bit.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The evaluation form of a scene's prompt: colour, shape and position of every object
/// (no size) and the background.
pub fn eval_prompt(scene: &Scene) -> String {
    caption(scene, &vec![Mention::NO_SIZE; scene.objects.len()], true)
}

/// Whether the scene's colour / shape / position / background combination is held out.
pub fn is_held_out(scene: &Scene) -> bool {
    fnv1a(&eval_prompt(scene)).is_multiple_of(4)
}

/// Settings of the training stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamConfig {
    /// Probability of an empty caption (classifier-free guidance).
    pub p_uncond: f64,
    /// Probability that a caption names every attribute.
    pub p_full: f64,
    /// Otherwise, probability that each attribute is left out.
    pub p_drop_attribute: f64,
    /// Probability of 1, 2, 3 objects.
    pub p_objects: [f64; 3],
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            p_uncond: 0.1,
            p_full: 0.5,
            p_drop_attribute: 0.3,
            p_objects: [0.5, 0.3, 0.2],
        }
    }
}

/// One training caption for a scene (may be empty), honouring the held-out rule.
pub fn training_caption(rng: &mut Rng, scene: &Scene, cfg: &StreamConfig) -> String {
    caption_naming(rng, scene, cfg, true)
}

/// A training caption; `positions` false never names a position (the objects are not at
/// their nominal places).
fn caption_naming(rng: &mut Rng, scene: &Scene, cfg: &StreamConfig, positions: bool) -> String {
    if rng.chance(cfg.p_uncond) {
        return String::new();
    }
    let n = scene.objects.len();
    let (mut mentions, mut background) = if rng.chance(cfg.p_full) {
        (vec![Mention::ALL; n], true)
    } else {
        let p = cfg.p_drop_attribute;
        let m = (0..n)
            .map(|_| Mention {
                size: !rng.chance(p),
                color: !rng.chance(p),
                shape: !rng.chance(p),
                position: !rng.chance(p),
            })
            .collect::<Vec<_>>();
        (m, !rng.chance(p))
    };
    if !positions {
        mentions.iter_mut().for_each(|m| m.position = false);
    }
    let names_all =
        |m: &[Mention], bg: bool| bg && m.iter().all(|m| m.color && m.shape && m.position);
    if names_all(&mentions, background) && is_held_out(scene) {
        // Leave out the background or one attribute of one object, at random.
        match rng.below(4) {
            0 => background = false,
            1 => mentions[rng.below(n)].color = false,
            2 => mentions[rng.below(n)].shape = false,
            _ => mentions[rng.below(n)].position = false,
        }
    }
    caption(scene, &mentions, background)
}

/// A random training scene with 1–3 objects.
pub fn training_scene(rng: &mut Rng, cfg: &StreamConfig) -> Scene {
    let u = rng.unit();
    let n = if u < cfg.p_objects[0] {
        1
    } else if u < cfg.p_objects[0] + cfg.p_objects[1] {
        2
    } else {
        3
    };
    Scene::random(rng, n)
}

/// One training pair.
pub fn training_pair(rng: &mut Rng, cfg: &StreamConfig) -> (Scene, String) {
    let scene = training_scene(rng, cfg);
    let text = training_caption(rng, &scene, cfg);
    (scene, text)
}

/// A training pair whose objects are drawn anywhere in the picture (a continuous centre,
/// wholly inside, not overlapping another object when 50 draws allow), its caption naming
/// no position: the places between the five nominal ones, where a clip's frames put a
/// moving object. Returns the objects as drawn, the background and the caption.
pub fn free_pair(rng: &mut Rng, cfg: &StreamConfig) -> (Vec<Drawn>, Background, String) {
    let scene = training_scene(rng, cfg);
    let text = caption_naming(rng, &scene, cfg, false);
    let mut drawn: Vec<Drawn> = Vec::with_capacity(scene.objects.len());
    for o in &scene.objects {
        let size = o.size.pixels();
        let span = SIZE as f64 - size;
        let mut place = || {
            (
                size / 2.0 + rng.unit() * span,
                size / 2.0 + rng.unit() * span,
            )
        };
        let apart = |c: (f64, f64), d: &Drawn| {
            let gap = (size + d.size) / 2.0 + 1.0;
            (c.0 - d.center.0).abs() > gap || (c.1 - d.center.1).abs() > gap
        };
        let mut center = place();
        for _ in 0..50 {
            if drawn.iter().all(|d| apart(center, d)) {
                break;
            }
            center = place();
        }
        drawn.push(Drawn {
            shape: o.shape,
            rgb: o.color.rgb(),
            center,
            size,
        });
    }
    (drawn, scene.background, text)
}

/// Every held-out single-object combination (colour, shape, position, background), as
/// scenes with a large object and no jitter, in a fixed order.
pub fn held_out_single() -> Vec<Scene> {
    let mut out = vec![];
    for &background in Background::ALL {
        for &position in Position::ALL {
            for &color in Color::ALL {
                for &shape in Shape::ALL {
                    let scene = Scene::single(shape, color, Size::Large, position, background);
                    if is_held_out(&scene) {
                        out.push(scene);
                    }
                }
            }
        }
    }
    out
}

/// `n` held-out two-object scenes (random, seeded).
pub fn held_out_pairs(n: usize, seed: u64) -> Vec<Scene> {
    let mut rng = Rng::new(seed);
    let mut out = vec![];
    while out.len() < n {
        let mut s = Scene::random(&mut rng, 2);
        for o in &mut s.objects {
            o.jitter = (0, 0);
        }
        if is_held_out(&s) && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// A graded prompt: complexity level 1 (one object, few attributes) … 5 (three objects,
/// every attribute).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradedPrompt {
    /// 1–5.
    pub level: u8,
    /// The prompt.
    pub prompt: String,
    /// The scene it was written from.
    pub scene: Scene,
}

/// `n` graded prompts, cycling through the levels 1–5 (seeded).
pub fn graded_prompts(n: usize, seed: u64) -> Vec<GradedPrompt> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let level = (i % 5) as u8 + 1;
            let (objects, mention, bg) = match level {
                1 => (
                    1,
                    Mention {
                        size: false,
                        color: true,
                        shape: true,
                        position: false,
                    },
                    false,
                ),
                2 => (1, Mention::ALL, true),
                3 => (2, Mention::NO_SIZE, false),
                4 => (2, Mention::ALL, true),
                _ => (3, Mention::ALL, true),
            };
            let scene = Scene::random(&mut rng, objects);
            let prompt = caption(&scene, &vec![mention; objects], bg);
            GradedPrompt {
                level,
                prompt,
                scene,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_scenes_follow_the_object_mix() {
        let count = |mix: [f64; 3]| {
            let cfg = StreamConfig {
                p_objects: mix,
                ..StreamConfig::default()
            };
            let mut rng = Rng::new(5);
            let mut n = [0usize; 3];
            for _ in 0..10_000 {
                n[training_scene(&mut rng, &cfg).objects.len() - 1] += 1;
            }
            n
        };
        assert_eq!(count([0.0, 1.0, 0.0]), [0, 10_000, 0]);
        let n = count([0.3, 0.45, 0.25]);
        for (got, want) in n.iter().zip([3000, 4500, 2500]) {
            assert!(got.abs_diff(want) < 200, "{n:?}");
        }
    }

    #[test]
    fn free_pairs_put_objects_anywhere_inside_and_never_name_a_place() {
        let cfg = StreamConfig::default();
        let mut rng = Rng::new(9);
        let (mut xs, mut off_grid) = (vec![], 0);
        for _ in 0..2000 {
            let (drawn, _, text) = free_pair(&mut rng, &cfg);
            for word in ["left", "right", "top", "bottom", "center"] {
                assert!(!text.split(' ').any(|w| w == word), "{text}");
            }
            for d in &drawn {
                let r = d.size / 2.0;
                let (x, y) = d.center;
                assert!(x >= r && x <= SIZE as f64 - r && y >= r && y <= SIZE as f64 - r);
                let nominal = Position::ALL.iter().any(|p| {
                    let (px, py) = p.center();
                    (px - x).abs() <= 1.0 && (py - y).abs() <= 1.0
                });
                off_grid += usize::from(!nominal);
                xs.push(x);
            }
        }
        // Most objects are away from the five places, and the centres spread over the picture.
        assert!(off_grid * 10 > xs.len() * 9, "{off_grid} of {}", xs.len());
        let bins = xs.iter().fold([0usize; 4], |mut b, &x| {
            b[((x / 8.0) as usize).min(3)] += 1;
            b
        });
        assert!(bins.iter().all(|&n| n * 8 > xs.len()), "{bins:?}");
    }

    #[test]
    fn held_out_prompts_never_appear_in_training() {
        let held: std::collections::HashSet<String> = held_out_single()
            .iter()
            .chain(held_out_pairs(50, 1).iter())
            .map(eval_prompt)
            .collect();
        assert!(
            (25..=50).contains(&held_out_single().len()),
            "{}",
            held_out_single().len()
        );
        let cfg = StreamConfig::default();
        let mut rng = Rng::new(3);
        for _ in 0..50_000 {
            let (_, text) = training_pair(&mut rng, &cfg);
            assert!(!held.contains(&text), "{text}");
            // Also not with the size added.
            let stripped = text.replace("small ", "").replace("large ", "");
            assert!(!held.contains(&stripped), "{text}");
        }
    }
}
