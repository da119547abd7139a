//! "shapes": the procedural world of the built-in model.
//!
//! 32×32 RGB images of 1–3 objects (circle, square, triangle; red, green, blue, yellow,
//! white; small ≈ 6 px or large ≈ 12 px; one object per position: top left, top right,
//! bottom left, bottom right, center, with ±1 px jitter) on a black or gray background,
//! and their captions in plain English.
//!
//! * [`Scene`], [`render`] — the world and its deterministic renderer.
//! * [`Mention`], [`caption`] — captions naming any subset of the attributes.
//! * [`dataset`] — unlimited training pairs (attribute dropout, caption dropout for
//!   classifier-free guidance) and graded / held-out prompt sets.
//! * [`check`] — the checker: does an image show what a prompt asks for?
//! * [`vocab`] — the word-level vocabulary of the built-in tokenizer.
//! * [`motion`] — clips: objects that move, grow, shrink, change colour or move apart.
//! * [`track`] — the clip checker: each object followed across a clip's frames.

pub mod check;
pub mod dataset;
pub mod motion;
pub mod track;
pub mod vocab;

use crate::sampler::noise::SplitMix64;
use image::{Rgb, RgbImage};

/// Image side in pixels.
pub const SIZE: usize = 32;

/// A small deterministic PRNG (the sampler's [`SplitMix64`], its seed mixed with this
/// world's constant): the same seed gives the same data everywhere.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed ^ 0x5DEE_CE66_D1CE_4E5B))
    }

    /// The internal state (to checkpoint a stream).
    pub fn state(&self) -> u64 {
        self.0.0
    }

    /// Continue a stream from [`Rng::state`].
    pub fn from_state(state: u64) -> Self {
        Self(SplitMix64(state))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Pick one element.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

macro_rules! word_enum {
    ($(#[$m:meta])* $name:ident { $($v:ident => $w:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($v),* }
        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$v),*];
            /// The caption words.
            pub fn word(self) -> &'static str {
                match self { $($name::$v => $w),* }
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

word_enum!(
    /// Object shape.
    Shape { Circle => "circle", Square => "square", Triangle => "triangle" }
);
word_enum!(
    /// Object colour.
    Color { Red => "red", Green => "green", Blue => "blue", Yellow => "yellow", White => "white" }
);
word_enum!(
    /// Object size.
    Size { Small => "small", Large => "large" }
);
word_enum!(
    /// Where the object sits.
    Position {
        TopLeft => "at the top left",
        TopRight => "at the top right",
        BottomLeft => "at the bottom left",
        BottomRight => "at the bottom right",
        Center => "in the center",
    }
);
word_enum!(
    /// The background.
    Background { Black => "black", Gray => "gray" }
);

impl Color {
    /// The rendered colour (saturated, far apart from each other and the backgrounds).
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Color::Red => [230, 25, 25],
            Color::Green => [25, 200, 40],
            Color::Blue => [30, 60, 240],
            Color::Yellow => [240, 220, 20],
            Color::White => [250, 250, 250],
        }
    }
}

impl Background {
    /// The rendered colour.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Background::Black => [0, 0, 0],
            Background::Gray => [110, 110, 110],
        }
    }
}

impl Size {
    /// Side length / diameter in pixels.
    pub fn pixels(self) -> f64 {
        match self {
            Size::Small => 6.0,
            Size::Large => 12.0,
        }
    }
}

impl Position {
    /// The nominal centre `(x, y)` in pixels (before jitter).
    pub fn center(self) -> (f64, f64) {
        match self {
            Position::TopLeft => (8.0, 8.0),
            Position::TopRight => (24.0, 8.0),
            Position::BottomLeft => (8.0, 24.0),
            Position::BottomRight => (24.0, 24.0),
            Position::Center => (16.0, 16.0),
        }
    }

    /// For a corner, `(left, top)`: which side of the vertical and of the horizontal
    /// midline it lies on; `None` for the centre.
    pub fn sides(self) -> Option<(bool, bool)> {
        match self {
            Position::TopLeft => Some((true, true)),
            Position::TopRight => Some((false, true)),
            Position::BottomLeft => Some((true, false)),
            Position::BottomRight => Some((false, false)),
            Position::Center => None,
        }
    }

    /// How many of a corner's two sides (left/right, top/bottom) a point `(x, y)` in
    /// pixels lies on; `None` for the centre. A model that knows "corner" but not which
    /// one scores about 1 of 2.
    pub fn sides_right(self, (x, y): (f64, f64)) -> Option<usize> {
        let mid = SIZE as f64 / 2.0;
        self.sides()
            .map(|(left, top)| usize::from((x < mid) == left) + usize::from((y < mid) == top))
    }
}

/// One object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Object {
    /// Shape.
    pub shape: Shape,
    /// Colour.
    pub color: Color,
    /// Size.
    pub size: Size,
    /// Position.
    pub position: Position,
    /// Jitter of the centre in pixels, each in −1..=1.
    pub jitter: (i8, i8),
}

/// A scene: 1–3 objects at distinct positions on a background.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scene {
    /// The objects, in caption order.
    pub objects: Vec<Object>,
    /// The background.
    pub background: Background,
}

impl Scene {
    /// One object at the nominal centre of `position` (no jitter) on `background`.
    pub fn single(
        shape: Shape,
        color: Color,
        size: Size,
        position: Position,
        background: Background,
    ) -> Self {
        Self {
            objects: vec![Object {
                shape,
                color,
                size,
                position,
                jitter: (0, 0),
            }],
            background,
        }
    }

    /// A random scene with `n` objects (1–5) at distinct positions.
    pub fn random(rng: &mut Rng, n: usize) -> Self {
        let n = n.clamp(1, Position::ALL.len());
        let mut positions = Position::ALL.to_vec();
        let mut objects = Vec::with_capacity(n);
        for _ in 0..n {
            let position = positions.swap_remove(rng.below(positions.len()));
            objects.push(Object {
                shape: rng.pick(Shape::ALL),
                color: rng.pick(Color::ALL),
                size: rng.pick(Size::ALL),
                position,
                jitter: (rng.below(3) as i8 - 1, rng.below(3) as i8 - 1),
            });
        }
        Self {
            objects,
            background: rng.pick(Background::ALL),
        }
    }
}

/// An object as drawn: shape, colour, centre `(x, y)` and size in pixels (any values; the
/// clips of [`motion`] move, grow and recolour objects between frames).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drawn {
    /// Shape.
    pub shape: Shape,
    /// RGB colour.
    pub rgb: [u8; 3],
    /// Centre in pixels.
    pub center: (f64, f64),
    /// Side length / diameter in pixels.
    pub size: f64,
}

impl Drawn {
    /// A scene's object as drawn.
    pub fn of(o: &Object) -> Self {
        let (cx, cy) = o.position.center();
        Self {
            shape: o.shape,
            rgb: o.color.rgb(),
            center: (cx + o.jitter.0 as f64, cy + o.jitter.1 as f64),
            size: o.size.pixels(),
        }
    }

    /// Whether pixel centre `(px, py)` lies inside the object.
    fn covers(&self, px: f64, py: f64) -> bool {
        let (cx, cy) = self.center;
        let s = self.size;
        let (dx, dy) = (px - cx, py - cy);
        match self.shape {
            Shape::Circle => dx * dx + dy * dy <= (s / 2.0) * (s / 2.0),
            Shape::Square => dx.abs() <= s / 2.0 && dy.abs() <= s / 2.0,
            Shape::Triangle => {
                // Apex up, base at the bottom: height s, base width s.
                let t = (dy + s / 2.0) / s; // 0 at the apex, 1 at the base
                (0.0..=1.0).contains(&t) && dx.abs() <= t * s / 2.0
            }
        }
    }
}

/// Render a scene (deterministic; objects later in the list are drawn on top). Each
/// pixel is the 4×4-supersampled average, so edges are slightly anti-aliased.
pub fn render(scene: &Scene) -> RgbImage {
    let objects: Vec<Drawn> = scene.objects.iter().map(Drawn::of).collect();
    render_drawn(scene.background.rgb(), &objects)
}

/// Render objects on a background colour (later objects on top), 4×4-supersampled.
pub fn render_drawn(bg: [u8; 3], objects: &[Drawn]) -> RgbImage {
    let mut img = RgbImage::new(SIZE as u32, SIZE as u32);
    const SS: usize = 4;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let mut acc = [0u32; 3];
            for sy in 0..SS {
                for sx in 0..SS {
                    let px = x as f64 + (sx as f64 + 0.5) / SS as f64;
                    let py = y as f64 + (sy as f64 + 0.5) / SS as f64;
                    let c = objects
                        .iter()
                        .rev()
                        .find(|o| o.covers(px, py))
                        .map_or(bg, |o| o.rgb);
                    for k in 0..3 {
                        acc[k] += c[k] as u32;
                    }
                }
            }
            let n = (SS * SS) as u32;
            img.put_pixel(
                x as u32,
                y as u32,
                Rgb([
                    ((acc[0] + n / 2) / n) as u8,
                    ((acc[1] + n / 2) / n) as u8,
                    ((acc[2] + n / 2) / n) as u8,
                ]),
            );
        }
    }
    img
}

/// Which attributes of one object a caption names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mention {
    /// Name the size.
    pub size: bool,
    /// Name the colour.
    pub color: bool,
    /// Name the shape (otherwise "shape").
    pub shape: bool,
    /// Name the position.
    pub position: bool,
}

impl Mention {
    /// Every attribute.
    pub const ALL: Mention = Mention {
        size: true,
        color: true,
        shape: true,
        position: true,
    };
    /// Colour, shape and position (the held-out evaluation form: no size).
    pub const NO_SIZE: Mention = Mention {
        size: false,
        color: true,
        shape: true,
        position: true,
    };
}

/// The phrase for one object: "a large red circle at the top left".
pub fn object_phrase(o: &Object, m: Mention) -> String {
    let mut words = vec!["a"];
    if m.size {
        words.push(o.size.word());
    }
    if m.color {
        words.push(o.color.word());
    }
    words.push(if m.shape { o.shape.word() } else { "shape" });
    if m.position {
        words.push(o.position.word());
    }
    words.join(" ")
}

/// The caption of a scene: the object phrases joined with "and", then "on a gray
/// background" when `background` is set. `mentions` has one entry per object.
pub fn caption(scene: &Scene, mentions: &[Mention], background: bool) -> String {
    let mut s = scene
        .objects
        .iter()
        .zip(mentions)
        .map(|(o, &m)| object_phrase(o, m))
        .collect::<Vec<_>>()
        .join(" and ");
    if background {
        s.push_str(" on a ");
        s.push_str(scene.background.word());
        s.push_str(" background");
    }
    s
}

/// The full caption (every attribute, background included).
pub fn full_caption(scene: &Scene) -> String {
    caption(scene, &vec![Mention::ALL; scene.objects.len()], true)
}

/// RGB image → `(3, H, W)` f32 values in [-1, 1] (the model's pixel space), flattened.
pub fn to_model_pixels(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            out[c * w * h + y as usize * w + x as usize] = p[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_read_as_english() {
        let scene = Scene {
            objects: vec![
                Object {
                    shape: Shape::Circle,
                    color: Color::Red,
                    size: Size::Large,
                    position: Position::TopLeft,
                    jitter: (0, 0),
                },
                Object {
                    shape: Shape::Square,
                    color: Color::Blue,
                    size: Size::Small,
                    position: Position::Center,
                    jitter: (1, -1),
                },
            ],
            background: Background::Gray,
        };
        assert_eq!(
            full_caption(&scene),
            "a large red circle at the top left and a small blue square in the center on a gray background"
        );
        let m = Mention {
            size: false,
            color: true,
            shape: false,
            position: false,
        };
        assert_eq!(
            caption(&scene, &[m, Mention::NO_SIZE], false),
            "a red shape and a blue square in the center"
        );
    }

    #[test]
    fn corner_sides_count_the_midlines_a_point_is_on() {
        use Position::*;
        for &p in Position::ALL {
            let Some((left, top)) = p.sides() else {
                assert_eq!(p, Center);
                assert_eq!(p.sides_right((3.0, 3.0)), None);
                continue;
            };
            assert_eq!(p.sides_right(p.center()), Some(2), "{p:?} at itself");
            let mirror_x = if left { 28.0 } else { 4.0 };
            let mirror_y = if top { 28.0 } else { 4.0 };
            assert_eq!(p.sides_right((mirror_x, p.center().1)), Some(1), "{p:?}");
            assert_eq!(p.sides_right((p.center().0, mirror_y)), Some(1), "{p:?}");
            assert_eq!(p.sides_right((mirror_x, mirror_y)), Some(0), "{p:?}");
        }
        assert_eq!(TopLeft.sides_right(BottomRight.center()), Some(0));
        assert_eq!(TopRight.sides_right(TopLeft.center()), Some(1));
    }

    #[test]
    fn render_is_deterministic_and_draws_colours() {
        let mut rng = Rng::new(7);
        let scene = Scene::random(&mut rng, 2);
        let a = render(&scene);
        assert_eq!(a, render(&scene));
        let o = scene.objects[0];
        let (cx, cy) = o.position.center();
        let p = a.get_pixel(
            (cx as i32 + o.jitter.0 as i32) as u32,
            (cy as i32 + o.jitter.1 as i32) as u32,
        );
        assert_eq!(p.0, o.color.rgb());
        assert_eq!(a.get_pixel(0, 31).0, scene.background.rgb());
    }
}
