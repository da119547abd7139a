//! Clips of the shapes world: the training data and held-out prompts of the built-in
//! model's motion module.
//!
//! A clip is one or two objects over `frames` frames (the motion spans the whole clip
//! whatever its length): moving left / right / up / down across the picture (18 px),
//! growing or shrinking (6 ↔ 15 px), turning from one colour to another, two objects
//! moving apart (7 px each), or standing still (an image scene, captioned as one).
//! Captions: "a red circle moving right", "a blue square growing on a black background",
//! "a red circle and a green triangle moving apart". A fixed fifth of the
//! (shape, colour, motion) combinations — and of the two-object combinations — is never
//! captioned in training; the evaluator's prompts come from them.

use super::dataset::training_scene;
use super::{Background, Color, Drawn, Mention, Position, Rng, Scene, Shape, Size};
use image::RgbImage;

use crate::sampler::noise_motion::{NoiseMotion, NoiseMotionRule};

/// Frames per training clip.
pub const TRAIN_FRAMES: usize = 8;

/// What happens in a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Motion {
    /// Moving left.
    Left,
    /// Moving right.
    Right,
    /// Moving up.
    Up,
    /// Moving down.
    Down,
    /// Growing from 6 to 15 px.
    Grow,
    /// Shrinking from 15 to 6 px.
    Shrink,
    /// Changing to this colour.
    Turn(Color),
    /// Two objects moving apart (left and right).
    Apart,
}

impl Motion {
    /// The motions of one object (every `Turn` target).
    pub fn single() -> Vec<Motion> {
        let mut v = vec![
            Motion::Left,
            Motion::Right,
            Motion::Up,
            Motion::Down,
            Motion::Grow,
            Motion::Shrink,
        ];
        v.extend(Color::ALL.iter().map(|&c| Motion::Turn(c)));
        v
    }

    /// The caption words ("moving right", "growing", "turning blue").
    pub fn words(self) -> String {
        match self {
            Motion::Left => "moving left".into(),
            Motion::Right => "moving right".into(),
            Motion::Up => "moving up".into(),
            Motion::Down => "moving down".into(),
            Motion::Grow => "growing".into(),
            Motion::Shrink => "shrinking".into(),
            Motion::Turn(c) => format!("turning {}", c.word()),
            Motion::Apart => "moving apart".into(),
        }
    }

    /// The words clips add to the image model's vocabulary.
    pub const VOCABULARY: &'static str = "moving up down growing shrinking turning apart";

    /// How the shared noise of a clip with this motion moves (warped noise): a move's
    /// whole span, the halves of two objects moving apart by each one's travel; `None` for
    /// the motions that do not travel.
    pub fn noise_motion(self) -> Option<NoiseMotion> {
        let span = (MOVE_SPAN.1 - MOVE_SPAN.0).round() as i64;
        let apart = (APART_SPAN.1 - APART_SPAN.0).round() as i64;
        match self {
            Motion::Left => Some(NoiseMotion::Shift { dx: -span, dy: 0 }),
            Motion::Right => Some(NoiseMotion::Shift { dx: span, dy: 0 }),
            Motion::Up => Some(NoiseMotion::Shift { dx: 0, dy: -span }),
            Motion::Down => Some(NoiseMotion::Shift { dx: 0, dy: span }),
            Motion::Apart => Some(NoiseMotion::Apart { d: apart }),
            _ => None,
        }
    }

    /// The rules a module trained with warped noise carries: the words of every motion
    /// that moves its noise.
    pub fn noise_rules() -> Vec<NoiseMotionRule> {
        [
            Motion::Left,
            Motion::Right,
            Motion::Up,
            Motion::Down,
            Motion::Apart,
        ]
        .into_iter()
        .filter_map(|m| {
            m.noise_motion().map(|motion| NoiseMotionRule {
                words: m.words(),
                motion,
            })
        })
        .collect()
    }

    /// Unit direction of a move, `None` for the others.
    pub fn direction(self) -> Option<(f64, f64)> {
        match self {
            Motion::Left => Some((-1.0, 0.0)),
            Motion::Right => Some((1.0, 0.0)),
            Motion::Up => Some((0.0, -1.0)),
            Motion::Down => Some((0.0, 1.0)),
            _ => None,
        }
    }
}

/// One object of a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Actor {
    /// Shape.
    pub shape: Shape,
    /// Colour (the first frame's, for `Turn`).
    pub color: Color,
    /// Size (moves and turns; growing, shrinking and apart set their own).
    pub size: Size,
}

/// A clip: what moves how, on which background.
#[derive(Debug, Clone, PartialEq)]
pub enum ClipScene {
    /// One object doing `motion` (not `Apart`); `lane` is the fixed coordinate of a move
    /// (y of a horizontal one, x of a vertical one) or the centre's both coordinates.
    One {
        /// The object.
        actor: Actor,
        /// What it does.
        motion: Motion,
        /// Fixed coordinate(s), pixels.
        lane: (f64, f64),
        /// Background.
        background: Background,
    },
    /// Two objects moving apart along the middle row.
    Apart {
        /// The left one.
        left: Actor,
        /// The right one.
        right: Actor,
        /// Background.
        background: Background,
    },
    /// An image scene held still.
    Still(Scene),
}

/// Start and end of a move along its axis, pixels.
const MOVE_SPAN: (f64, f64) = (7.0, 25.0);
/// Sizes of growing (start, end).
const GROW_SPAN: (f64, f64) = (6.0, 15.0);
/// Centres of two objects moving apart: start and end distance from the middle.
const APART_SPAN: (f64, f64) = (3.5, 10.5);
/// Size of objects moving apart.
const APART_SIZE: f64 = 6.0;

fn lerp(a: f64, b: f64, u: f64) -> f64 {
    a + (b - a) * u
}

impl ClipScene {
    /// The background.
    pub fn background(&self) -> Background {
        match self {
            ClipScene::One { background, .. } | ClipScene::Apart { background, .. } => *background,
            ClipScene::Still(s) => s.background,
        }
    }

    /// The motion, `None` for a still scene.
    pub fn motion(&self) -> Option<Motion> {
        match self {
            ClipScene::One { motion, .. } => Some(*motion),
            ClipScene::Apart { .. } => Some(Motion::Apart),
            ClipScene::Still(_) => None,
        }
    }

    /// The objects as drawn in frame `i` of `frames`.
    pub fn drawn(&self, i: usize, frames: usize) -> Vec<Drawn> {
        let u = if frames > 1 {
            i as f64 / (frames - 1) as f64
        } else {
            0.0
        };
        match self {
            ClipScene::Still(scene) => scene.objects.iter().map(Drawn::of).collect(),
            ClipScene::Apart { left, right, .. } => {
                let d = lerp(APART_SPAN.0, APART_SPAN.1, u);
                let mid = super::SIZE as f64 / 2.0;
                [(left, mid - d), (right, mid + d)]
                    .into_iter()
                    .map(|(a, x)| Drawn {
                        shape: a.shape,
                        rgb: a.color.rgb(),
                        center: (x, mid),
                        size: APART_SIZE,
                    })
                    .collect()
            }
            ClipScene::One {
                actor,
                motion,
                lane,
                ..
            } => {
                let (mut center, mut size, mut rgb) =
                    (*lane, actor.size.pixels(), actor.color.rgb());
                let along = lerp(MOVE_SPAN.0, MOVE_SPAN.1, u);
                match motion {
                    Motion::Right => center.0 = along,
                    Motion::Left => center.0 = MOVE_SPAN.0 + MOVE_SPAN.1 - along,
                    Motion::Down => center.1 = along,
                    Motion::Up => center.1 = MOVE_SPAN.0 + MOVE_SPAN.1 - along,
                    Motion::Grow => size = lerp(GROW_SPAN.0, GROW_SPAN.1, u),
                    Motion::Shrink => size = lerp(GROW_SPAN.1, GROW_SPAN.0, u),
                    Motion::Turn(to) => {
                        let (a, b) = (actor.color.rgb(), to.rgb());
                        for k in 0..3 {
                            rgb[k] = lerp(a[k] as f64, b[k] as f64, u).round() as u8;
                        }
                    }
                    Motion::Apart => {}
                }
                vec![Drawn {
                    shape: actor.shape,
                    rgb,
                    center,
                    size,
                }]
            }
        }
    }

    /// The clip's frames.
    pub fn render(&self, frames: usize) -> Vec<RgbImage> {
        let bg = self.background().rgb();
        (0..frames)
            .map(|i| super::render_drawn(bg, &self.drawn(i, frames)))
            .collect()
    }

    /// The caption; `size` names the size of a moving or turning object, `background`
    /// the background.
    pub fn caption(&self, size: bool, background: bool) -> String {
        let object = |a: &Actor, with_size: bool| {
            let mut w = vec!["a"];
            if with_size {
                w.push(a.size.word());
            }
            w.push(a.color.word());
            w.push(a.shape.word());
            w.join(" ")
        };
        let mut s = match self {
            ClipScene::Still(scene) => {
                let m = Mention {
                    size,
                    ..Mention::ALL
                };
                return super::caption(scene, &vec![m; scene.objects.len()], background);
            }
            ClipScene::Apart { left, right, .. } => format!(
                "{} and {} moving apart",
                object(left, false),
                object(right, false)
            ),
            ClipScene::One { actor, motion, .. } => {
                let sized = size && !matches!(motion, Motion::Grow | Motion::Shrink);
                format!("{} {}", object(actor, sized), motion.words())
            }
        };
        if background {
            s.push_str(&format!(" on a {} background", self.background().word()));
        }
        s
    }

    /// Whether a caption of this clip is held out of training.
    pub fn is_held_out(&self) -> bool {
        match self {
            ClipScene::One { actor, motion, .. } => held_out_one(actor.shape, actor.color, *motion),
            ClipScene::Apart { left, right, .. } => held_out_pair(left, right),
            ClipScene::Still(_) => false,
        }
    }
}

/// A stable hash of a few small numbers (FNV-1a).
fn hash(parts: &[u64]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &p in parts {
        h ^= p;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn motion_code(m: Motion) -> u64 {
    match m {
        Motion::Left => 1,
        Motion::Right => 2,
        Motion::Up => 3,
        Motion::Down => 4,
        Motion::Grow => 5,
        Motion::Shrink => 6,
        Motion::Turn(c) => 10 + c as u64,
        Motion::Apart => 20,
    }
}

/// One object's (shape, colour, motion) held out of training: for each motion and shape,
/// one of the five colours (a fifth, the same share for every motion).
pub fn held_out_one(shape: Shape, color: Color, motion: Motion) -> bool {
    (color as u64 + 2 * shape as u64 + motion_code(motion)).is_multiple_of(5)
}

/// A pair moving apart held out of training: a fixed fifth of (left, right) combinations.
pub fn held_out_pair(left: &Actor, right: &Actor) -> bool {
    hash(&[
        99,
        left.shape as u64,
        left.color as u64,
        right.shape as u64,
        right.color as u64,
    ])
    .is_multiple_of(5)
}

/// A random lane: the fixed coordinate of a move is one of the three rows / columns the
/// image model knows (8, 16, 24) ± 1 px.
fn lane(rng: &mut Rng) -> f64 {
    [8.0, 16.0, 24.0][rng.below(3)] + rng.below(3) as f64 - 1.0
}

fn actor(rng: &mut Rng) -> Actor {
    Actor {
        shape: rng.pick(Shape::ALL),
        color: rng.pick(Color::ALL),
        size: rng.pick(Size::ALL),
    }
}

/// A random clip of one object doing `motion` (a `Turn` never to its own colour).
pub fn one(rng: &mut Rng, motion: Motion, background: Background) -> ClipScene {
    let mut a = actor(rng);
    if let Motion::Turn(to) = motion {
        while a.color == to {
            a.color = rng.pick(Color::ALL);
        }
    }
    let lane = match motion {
        Motion::Left | Motion::Right => (0.0, lane(rng)),
        Motion::Up | Motion::Down => (lane(rng), 0.0),
        _ => {
            let p = rng.pick(Position::ALL).center();
            (p.0, p.1)
        }
    };
    ClipScene::One {
        actor: a,
        motion,
        lane,
        background,
    }
}

/// A random pair moving apart (different colours).
pub fn apart(rng: &mut Rng, background: Background) -> ClipScene {
    let left = actor(rng);
    let mut right = actor(rng);
    while right.color == left.color {
        right.color = rng.pick(Color::ALL);
    }
    ClipScene::Apart {
        left,
        right,
        background,
    }
}

/// A training clip and its caption: 70 % one object (moves twice as often as each other
/// kind), 15 % two apart, 15 % still image scenes; captions of held-out combinations are
/// drawn again; size named half the time, background 70 %, 10 % empty captions.
pub fn training_clip(rng: &mut Rng) -> (ClipScene, String) {
    loop {
        let background = rng.pick(Background::ALL);
        let r = rng.unit();
        let clip = if r < 0.15 {
            let stream = super::dataset::StreamConfig::default();
            ClipScene::Still(training_scene(rng, &stream))
        } else if r < 0.30 {
            apart(rng, background)
        } else {
            let kinds = [
                Motion::Left,
                Motion::Right,
                Motion::Up,
                Motion::Down,
                Motion::Left,
                Motion::Right,
                Motion::Up,
                Motion::Down,
                Motion::Grow,
                Motion::Shrink,
                Motion::Turn(rng.pick(Color::ALL)),
            ];
            let kind = kinds[rng.below(kinds.len())];
            one(rng, kind, background)
        };
        if clip.is_held_out() {
            continue;
        }
        let caption = if rng.chance(0.1) {
            String::new()
        } else {
            let (size, bg) = (rng.chance(0.5), rng.chance(0.7));
            clip.caption(size, bg)
        };
        return (clip, caption);
    }
}

/// Held-out clips of one object (`n`, cycling through the held-out combinations) and of
/// two (`pairs`), with their backgrounds named; deterministic from `seed`.
pub fn held_out(n: usize, pairs: usize, seed: u64) -> (Vec<ClipScene>, Vec<ClipScene>) {
    // Per motion kind its held-out combinations; taken round-robin over the kinds, so
    // every kind is asked about about as often.
    let mut kinds: Vec<Vec<(Shape, Color, Motion)>> = vec![];
    for m in Motion::single() {
        let mut of_kind = vec![];
        for &s in Shape::ALL {
            for &c in Color::ALL {
                if held_out_one(s, c, m) && Motion::Turn(c) != m {
                    of_kind.push((s, c, m));
                }
            }
        }
        // The four turns count as one kind.
        match (kinds.last_mut(), m) {
            (Some(last), Motion::Turn(_)) if matches!(last[0].2, Motion::Turn(_)) => {
                last.extend(of_kind)
            }
            _ if !of_kind.is_empty() => kinds.push(of_kind),
            _ => {}
        }
    }
    let longest = kinds.iter().map(Vec::len).max().unwrap_or(0);
    let combos: Vec<_> = (0..longest)
        .flat_map(|j| kinds.iter().filter_map(move |k| k.get(j).copied()))
        .collect();
    let mut rng = Rng::new(seed);
    let singles = (0..n)
        .map(|i| {
            let (shape, color, motion) = combos[i % combos.len()];
            let background = rng.pick(Background::ALL);
            let mut clip = one(&mut rng, motion, background);
            if let ClipScene::One { actor, .. } = &mut clip {
                actor.shape = shape;
                actor.color = color;
            }
            clip
        })
        .collect();
    let mut two = vec![];
    while two.len() < pairs {
        let background = rng.pick(Background::ALL);
        let clip = apart(&mut rng, background);
        if clip.is_held_out() {
            two.push(clip);
        }
    }
    (singles, two)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::track;

    #[test]
    fn captions_read_as_english() {
        let clip = ClipScene::One {
            actor: Actor {
                shape: Shape::Circle,
                color: Color::Red,
                size: Size::Large,
            },
            motion: Motion::Right,
            lane: (0.0, 16.0),
            background: Background::Black,
        };
        assert_eq!(
            clip.caption(true, true),
            "a large red circle moving right on a black background"
        );
        assert_eq!(clip.caption(false, false), "a red circle moving right");
        let pair = ClipScene::Apart {
            left: Actor {
                shape: Shape::Circle,
                color: Color::Red,
                size: Size::Small,
            },
            right: Actor {
                shape: Shape::Square,
                color: Color::Blue,
                size: Size::Large,
            },
            background: Background::Gray,
        };
        assert_eq!(
            pair.caption(true, true),
            "a red circle and a blue square moving apart on a gray background"
        );
    }

    #[test]
    fn every_training_caption_is_in_the_motion_vocabulary_and_none_is_held_out() {
        let tok = crate::shapes::vocab::build_video_tokenizer().unwrap();
        let unk = tok.token_to_id(crate::shapes::vocab::UNK).unwrap();
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let (clip, caption) = training_clip(&mut rng);
            assert!(!clip.is_held_out(), "{caption}");
            let ids = tok.encode(caption.as_str(), false).unwrap();
            assert!(!ids.get_ids().contains(&unk), "{caption}");
        }
    }

    #[test]
    fn held_out_clips_are_a_fifth_and_never_trained_on() {
        let (one, two) = held_out(40, 10, 1);
        assert!(one.iter().chain(&two).all(ClipScene::is_held_out));
        // Every motion kind is among the held-out single clips.
        for m in [
            Motion::Left,
            Motion::Right,
            Motion::Up,
            Motion::Down,
            Motion::Grow,
            Motion::Shrink,
        ] {
            assert!(one.iter().any(|c| c.motion() == Some(m)), "{m:?}");
        }
        let total = Motion::single().len() * Shape::ALL.len() * Color::ALL.len();
        let held = Motion::single()
            .into_iter()
            .flat_map(|m| {
                Shape::ALL
                    .iter()
                    .flat_map(move |&s| Color::ALL.iter().map(move |&c| (s, c, m)))
            })
            .filter(|&(s, c, m)| held_out_one(s, c, m))
            .count();
        let share = held as f64 / total as f64;
        assert!((0.1..0.3).contains(&share), "{share}");
    }

    #[test]
    fn the_tracker_judges_every_rendered_training_clip_right() {
        // The renders are the ground truth: the checker must call each of them right.
        let mut rng = Rng::new(11);
        let mut n = 0;
        while n < 60 {
            let (clip, _) = training_clip(&mut rng);
            if matches!(clip, ClipScene::Still(_)) {
                continue;
            }
            let frames = clip.render(TRAIN_FRAMES);
            let v = track::judge(&clip, &frames);
            assert!(v.motion && v.objects, "{clip:?}: {v:?}");
            assert!(v.flicker < 1.0, "{v:?}");
            n += 1;
        }
        // And a still clip is no move.
        let clip = one(&mut Rng::new(5), Motion::Right, Background::Black);
        let first = clip.render(TRAIN_FRAMES)[0].clone();
        let still = vec![first; TRAIN_FRAMES];
        assert!(!track::judge(&clip, &still).motion);
    }
}
