//! The clip checker: does a clip show the motion its prompt asks for? Each named object is
//! followed across the frames by its colour (pixels classified with [`super::check`]'s
//! palette), and its centroid, area and bounding-box fill (the shape) are measured.
//!
//! * Motion right: a move goes ≥ [`MIN_TRAVEL`] px the named way, never back more than
//!   [`MAX_BACKSTEP`] px between frames, sideways at most half of its travel; growing /
//!   shrinking changes the area ≥ [`MIN_GROWTH`]×; a turn shows the first colour in the
//!   first frame and the named one in the last; two objects moving apart end ≥
//!   `MIN_TRAVEL` px further apart, the left one still left.
//! * Objects right: the named colour (either colour of a turn) and shape in every frame.
//! * Flicker: the mean absolute change of background pixels between consecutive frames
//!   (0–255 levels) — the renders' own is 0.

use image::RgbImage;

use super::check::{PixelClass, background_of, classify};
use super::motion::{ClipScene, Motion};
use super::{Background, Color, Shape};

/// Travel a move must cover, px (the renders move 18 px, pairs 14 px apart).
pub const MIN_TRAVEL: f64 = 6.0;
/// Largest step back between consecutive frames, px.
pub const MAX_BACKSTEP: f64 = 1.5;
/// Area ratio of growing / shrinking (the renders' is ≈ 8×).
pub const MIN_GROWTH: f64 = 1.8;
/// Pixels of a colour that make an object.
pub const MIN_PIXELS: usize = 4;
/// Smallest blob whose shape is judged (smaller ones are too few pixels to tell).
pub const MIN_SHAPE_PIXELS: usize = 24;

/// One colour's pixels in a frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blob {
    /// Pixel count.
    pub area: usize,
    /// Centroid `(x, y)`, pixel centres.
    pub centroid: (f64, f64),
    /// Share of the bounding box the pixels fill.
    pub fill: f64,
    /// How far below the box's middle the centroid sits, in box heights (a triangle,
    /// apex up, ≈ 1/6; a circle or square 0).
    pub low: f64,
}

/// The pixels of `color` in `img` (any colour for `None`), if at least [`MIN_PIXELS`].
pub fn blob(img: &RgbImage, color: Option<Color>) -> Option<Blob> {
    blob_where(img, |class, _| match (class, color) {
        (PixelClass::Object(c), Some(want)) => c == want,
        (PixelClass::Object(_), None) => true,
        _ => false,
    })
}

/// The pixels at least 40 levels away from the background colour (a colour between two
/// of the palette's counts, even one the palette would call gray).
pub fn foreground(img: &RgbImage, background: Background) -> Option<Blob> {
    let bg = background.rgb();
    blob_where(img, |_, p| {
        let d: i32 = (0..3).map(|k| (p[k] as i32 - bg[k] as i32).pow(2)).sum();
        d > 40 * 40
    })
}

fn blob_where(img: &RgbImage, keep: impl Fn(PixelClass, [u8; 3]) -> bool) -> Option<Blob> {
    let (mut n, mut sx, mut sy) = (0usize, 0.0, 0.0);
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if keep(classify(p.0), p.0) {
            n += 1;
            sx += x as f64 + 0.5;
            sy += y as f64 + 0.5;
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    (n >= MIN_PIXELS).then(|| Blob {
        area: n,
        centroid: (sx / n as f64, sy / n as f64),
        fill: n as f64 / ((x1 - x0 + 1) * (y1 - y0 + 1)) as f64,
        low: (sy / n as f64 - (y0 + y1 + 1) as f64 / 2.0) / (y1 - y0 + 1) as f64,
    })
}

/// The shape a blob suggests: a square fills its box (its edge rows and columns are in or
/// out whole); a triangle (apex up) has its weight low in the box; a circle neither.
pub fn shape_of(b: &Blob) -> Shape {
    if b.fill >= 0.95 {
        Shape::Square
    } else if b.low >= 0.07 {
        Shape::Triangle
    } else {
        Shape::Circle
    }
}

/// The verdict on one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipVerdict {
    /// The motion is the named one.
    pub motion: bool,
    /// Every named object has its colour and shape in every frame.
    pub objects: bool,
    /// The background is the named one in every frame.
    pub background: bool,
    /// Mean absolute change of background pixels between consecutive frames, 0–255.
    pub flicker: f64,
}

/// Whether `color`'s blob is there in every frame with `shape` (shapes of objects under
/// [`MIN_SHAPE_PIXELS`] are not judged).
fn present(frames: &[RgbImage], color: Color, shape: Shape) -> Option<Vec<Blob>> {
    let blobs: Vec<Blob> = frames
        .iter()
        .map(|f| blob(f, Some(color)))
        .collect::<Option<_>>()?;
    blobs
        .iter()
        .all(|b| b.area < MIN_SHAPE_PIXELS || shape_of(b) == shape)
        .then_some(blobs)
}

/// A move along `dir` over the centroids: far enough, never back much, not sideways.
fn moved(centroids: &[(f64, f64)], dir: (f64, f64)) -> bool {
    let along = |c: (f64, f64)| c.0 * dir.0 + c.1 * dir.1;
    let across = |c: (f64, f64)| c.0 * dir.1 - c.1 * dir.0;
    let (first, last) = (centroids[0], centroids[centroids.len() - 1]);
    let travel = along(last) - along(first);
    let side = (across(last) - across(first)).abs();
    travel >= MIN_TRAVEL
        && side <= travel / 2.0
        && centroids
            .windows(2)
            .all(|w| along(w[1]) - along(w[0]) >= -MAX_BACKSTEP)
}

/// Judge a generated clip against the clip its prompt describes.
pub fn judge(clip: &ClipScene, frames: &[RgbImage]) -> ClipVerdict {
    let background = frames
        .iter()
        .all(|f| background_of(f) == Some(clip.background()));
    let flicker = flicker(frames);
    let (motion, objects) = match clip {
        ClipScene::Still(scene) => {
            let all = scene.objects.iter().all(|o| {
                present(frames, o.color, o.shape).is_some_and(|b| {
                    let (a, z) = (b[0].centroid, b[b.len() - 1].centroid);
                    (a.0 - z.0).hypot(a.1 - z.1) <= 2.0
                })
            });
            (all, all)
        }
        ClipScene::Apart { left, right, .. } => {
            let l = present(frames, left.color, left.shape);
            let r = present(frames, right.color, right.shape);
            let objects = l.is_some() && r.is_some();
            let motion = match (l, r) {
                (Some(l), Some(r)) => {
                    let gap = |i: usize| r[i].centroid.0 - l[i].centroid.0;
                    let n = l.len();
                    gap(0) > 0.0
                        && gap(n - 1) - gap(0) >= MIN_TRAVEL
                        && (1..n).all(|i| gap(i) - gap(i - 1) >= -MAX_BACKSTEP)
                }
                _ => false,
            };
            (motion, objects)
        }
        ClipScene::One { actor, motion, .. } => match motion {
            Motion::Turn(to) => {
                let first = frames.first().and_then(|f| blob(f, Some(actor.color)));
                let last = frames.last().and_then(|f| blob(f, Some(*to)));
                // In between, the colour is a mix of the two: something must be there.
                let there = frames
                    .iter()
                    .all(|f| foreground(f, clip.background()).is_some());
                let shaped = |b: &Option<Blob>| {
                    b.is_some_and(|b| b.area < MIN_SHAPE_PIXELS || shape_of(&b) == actor.shape)
                };
                (
                    first.is_some() && last.is_some(),
                    there && shaped(&first) && shaped(&last),
                )
            }
            m => match present(frames, actor.color, actor.shape) {
                None => (false, false),
                Some(b) => {
                    let ok = match m.direction() {
                        Some(dir) => {
                            let c: Vec<(f64, f64)> = b.iter().map(|b| b.centroid).collect();
                            moved(&c, dir)
                        }
                        None => {
                            let (a, z) = (b[0].area as f64, b[b.len() - 1].area as f64);
                            match m {
                                Motion::Grow => z >= a * MIN_GROWTH,
                                _ => a >= z * MIN_GROWTH,
                            }
                        }
                    };
                    (ok, true)
                }
            },
        },
    };
    ClipVerdict {
        motion,
        objects,
        background,
        flicker,
    }
}

/// Mean absolute change of pixels that are background, with their 8 neighbours, in both
/// of two consecutive frames (an object's anti-aliased edge is no flicker).
pub fn flicker(frames: &[RgbImage]) -> f64 {
    let masks: Vec<Vec<bool>> = frames.iter().map(background_mask).collect();
    let (mut sum, mut n) = (0.0, 0usize);
    for (i, w) in frames.windows(2).enumerate() {
        for (k, (a, b)) in w[0].pixels().zip(w[1].pixels()).enumerate() {
            if masks[i][k] && masks[i + 1][k] {
                sum += (0..3)
                    .map(|c| (a[c] as f64 - b[c] as f64).abs())
                    .sum::<f64>()
                    / 3.0;
                n += 1;
            }
        }
    }
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// Pixels that are background and whose neighbours all are.
fn background_mask(img: &RgbImage) -> Vec<bool> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let bg: Vec<bool> = img
        .pixels()
        .map(|p| matches!(classify(p.0), PixelClass::Background(_)))
        .collect();
    (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| {
            (-1..=1).all(|dy| {
                (-1..=1).all(|dx| {
                    let (nx, ny) = (x + dx, y + dy);
                    nx < 0 || ny < 0 || nx >= w || ny >= h || bg[(ny * w + nx) as usize]
                })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::motion::{Actor, one};
    use crate::shapes::{Background, Rng, Size};

    #[test]
    fn moves_the_wrong_way_or_sideways_are_wrong() {
        let clip = one(&mut Rng::new(2), Motion::Right, Background::Gray);
        let frames = clip.render(8);
        assert!(judge(&clip, &frames).motion);
        let mut backwards = frames.clone();
        backwards.reverse();
        assert!(!judge(&clip, &backwards).motion);
        // The same frames judged as a move up: sideways.
        if let ClipScene::One {
            actor, background, ..
        } = clip
        {
            let up = ClipScene::One {
                actor,
                motion: Motion::Up,
                lane: (16.0, 0.0),
                background,
            };
            assert!(!judge(&up, &frames).motion);
        }
    }

    #[test]
    fn shapes_are_told_apart_by_their_fill() {
        for &shape in Shape::ALL {
            let clip = ClipScene::One {
                actor: Actor {
                    shape,
                    color: Color::Yellow,
                    size: Size::Large,
                },
                motion: Motion::Down,
                lane: (16.0, 0.0),
                background: Background::Black,
            };
            for f in clip.render(4) {
                assert_eq!(shape_of(&blob(&f, Some(Color::Yellow)).unwrap()), shape);
            }
        }
    }

    #[test]
    fn flicker_counts_background_changes() {
        let clip = one(&mut Rng::new(4), Motion::Grow, Background::Gray);
        let mut frames = clip.render(4);
        assert_eq!(flicker(&frames), 0.0);
        for p in frames[1].pixels_mut() {
            if matches!(classify(p.0), PixelClass::Background(_)) {
                p.0[0] = p.0[0].saturating_add(30);
            }
        }
        // Frames 0→1 and 1→2 change by 10 levels (30 on one channel), 2→3 not at all.
        let f = flicker(&frames);
        assert!((f - 20.0 / 3.0).abs() < 0.5, "{f}");
    }
}
