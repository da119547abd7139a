//! The checker: does an image show what a prompt asks for? Built on the renderer's own
//! colour and position definitions.
//!
//! * Background: the majority class of the 1-pixel border ring (objects never reach it:
//!   the largest object at a corner spans pixels 1…15).
//! * Object colour at a position: in the 5×5 window around the position's nominal centre,
//!   at least [`MIN_FRACTION`] of the pixels are the named colour. (A neighbouring object
//!   can reach at most one row / column of another position's window.)
//! * Pixels are classified to the nearest palette colour (objects and backgrounds); a
//!   pixel further than [`MAX_DISTANCE`] from every palette colour counts as none.

use image::RgbImage;

use super::{Background, Color, Position, Scene};

/// Share of the window that must be the named colour.
pub const MIN_FRACTION: f64 = 0.25;
/// Largest RGB distance at which a pixel still counts as a palette colour.
pub const MAX_DISTANCE: f64 = 90.0;
/// Half-width of the object window.
const HALF: i32 = 2;

/// A pixel's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelClass {
    /// An object colour.
    Object(Color),
    /// A background colour.
    Background(Background),
    /// Nothing in the palette is close.
    None,
}

fn dist(a: [u8; 3], b: [u8; 3]) -> f64 {
    let d: i32 = (0..3).map(|k| (a[k] as i32 - b[k] as i32).pow(2)).sum();
    (d as f64).sqrt()
}

/// Classify one pixel.
pub fn classify(p: [u8; 3]) -> PixelClass {
    let mut best = (f64::INFINITY, PixelClass::None);
    for &c in Color::ALL {
        let d = dist(p, c.rgb());
        if d < best.0 {
            best = (d, PixelClass::Object(c));
        }
    }
    for &b in Background::ALL {
        let d = dist(p, b.rgb());
        if d < best.0 {
            best = (d, PixelClass::Background(b));
        }
    }
    if best.0 <= MAX_DISTANCE {
        best.1
    } else {
        PixelClass::None
    }
}

/// The background the border shows, if a majority of its pixels agree on one.
pub fn background_of(img: &RgbImage) -> Option<Background> {
    let (w, h) = (img.width(), img.height());
    let mut counts = [0usize; 2];
    let mut total = 0;
    for y in 0..h {
        for x in 0..w {
            if x == 0 || y == 0 || x == w - 1 || y == h - 1 {
                total += 1;
                if let PixelClass::Background(b) = classify(img.get_pixel(x, y).0) {
                    counts[b as usize] += 1;
                }
            }
        }
    }
    Background::ALL
        .iter()
        .copied()
        .find(|&b| counts[b as usize] * 2 > total)
}

/// The share of the window at `position` classified as `color`.
pub fn color_fraction(img: &RgbImage, color: Color, position: Position) -> f64 {
    window_fraction(img, position, |c| c == PixelClass::Object(color))
}

/// The share of the window at `position` whose pixels' class satisfies `keep`.
fn window_fraction(img: &RgbImage, position: Position, keep: impl Fn(PixelClass) -> bool) -> f64 {
    let (cx, cy) = position.center();
    let (cx, cy) = (cx as i32, cy as i32);
    let mut hit = 0;
    let mut total = 0;
    for y in cy - HALF..=cy + HALF {
        for x in cx - HALF..=cx + HALF {
            if x < 0 || y < 0 || x >= img.width() as i32 || y >= img.height() as i32 {
                continue;
            }
            total += 1;
            if keep(classify(img.get_pixel(x as u32, y as u32).0)) {
                hit += 1;
            }
        }
    }
    hit as f64 / total.max(1) as f64
}

/// Whether an object of `color` sits at `position`.
pub fn has_object(img: &RgbImage, color: Color, position: Position) -> bool {
    color_fraction(img, color, position) >= MIN_FRACTION
}

/// The verdict on one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The background is the named one.
    pub background: bool,
    /// Per object (scene order): the named colour is at the named position.
    pub objects: Vec<bool>,
    /// Positions the prompt does not name whose window shows an object anyway (any object
    /// colour). Not part of [`Verdict::all`] — the goal's criterion — but reported, so a
    /// model cannot look good by drawing objects everywhere.
    pub extra_objects: usize,
}

impl Verdict {
    /// Everything right.
    pub fn all(&self) -> bool {
        self.background && self.objects.iter().all(|&o| o)
    }
}

/// Check an image against the scene a prompt describes (colour, position of each object
/// and the background; size and shape are not judged).
pub fn check(img: &RgbImage, scene: &Scene) -> Verdict {
    Verdict {
        background: background_of(img) == Some(scene.background),
        objects: scene
            .objects
            .iter()
            .map(|o| has_object(img, o.color, o.position))
            .collect(),
        extra_objects: Position::ALL
            .iter()
            .filter(|&&p| !scene.objects.iter().any(|o| o.position == p))
            .filter(|&&p| {
                window_fraction(img, p, |c| matches!(c, PixelClass::Object(_))) >= MIN_FRACTION
            })
            .count(),
    }
}
