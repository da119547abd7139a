//! Warped noise: a clip's shared noise that moves with its content across the frames — the
//! "warped noise" prior of Go-with-the-Flow (Burgert et al., CVPR 2025), for the two flows
//! a picture-wide rule can name: the whole picture translating, and its two halves moving
//! apart. Each frame is a window cut from one larger canvas of noise, the window sliding
//! against the motion, so the values every frame sees are still independent N(0, 1) draws
//! (nothing is resampled or wrapped around): what enters a frame at its edge is noise no
//! earlier frame had.

use serde::{Deserialize, Serialize};

/// How a clip's shared noise moves over the whole clip (whatever its frame count), in
/// cells of the sampled grid (pixels of a pixel-space model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoiseMotion {
    /// Everything moves by `(dx, dy)` (x right, y down) from the first frame to the last.
    Shift {
        /// Cells right (negative: left).
        dx: i64,
        /// Cells down (negative: up).
        dy: i64,
    },
    /// The left half moves `d` cells left and the right half `d` right.
    Apart {
        /// Cells each half moves.
        d: i64,
    },
}

/// Where frame `i` of `frames` is along the clip, 0..=1.
fn progress(i: usize, frames: usize) -> f64 {
    if frames > 1 {
        i as f64 / (frames - 1) as f64
    } else {
        0.0
    }
}

/// How far along `0..=span` frame `i` has moved, whole cells.
fn moved(span: i64, i: usize, frames: usize) -> usize {
    (span.unsigned_abs() as f64 * progress(i, frames)).round() as usize
}

impl NoiseMotion {
    /// No motion: every frame is the same window, the canvas itself.
    pub const STILL: NoiseMotion = NoiseMotion::Shift { dx: 0, dy: 0 };

    /// The canvas `(height, width)` the frames of `(h, w)` are cut from.
    pub fn canvas(self, (h, w): (usize, usize)) -> (usize, usize) {
        match self {
            NoiseMotion::Shift { dx, dy } => (
                h + dy.unsigned_abs() as usize,
                w + dx.unsigned_abs() as usize,
            ),
            NoiseMotion::Apart { d } => (h, w + 2 * d.unsigned_abs() as usize),
        }
    }

    /// Frame `i` of `frames`: `c` planes of `(h, w)` cut from `canvas` (`c` planes of
    /// [`Self::canvas`]), row-major.
    pub fn frame(
        self,
        canvas: &[f32],
        c: usize,
        (h, w): (usize, usize),
        i: usize,
        frames: usize,
    ) -> Vec<f32> {
        let (ch, cw) = self.canvas((h, w));
        assert_eq!(canvas.len(), c * ch * cw, "canvas of the wrong size");
        // Window origin `(y, x)` on the canvas of the columns `cols` of the frame.
        let origin = |along: i64, cells: usize| -> usize {
            // Content moving +: the window slides from `along` back to 0.
            if along >= 0 {
                along as usize - cells
            } else {
                cells
            }
        };
        let mut out = Vec::with_capacity(c * h * w);
        for plane in canvas.chunks(ch * cw) {
            for y in 0..h {
                for x in 0..w {
                    let (cy, cx) = match self {
                        NoiseMotion::Shift { dx, dy } => (
                            y + origin(dy, moved(dy, i, frames)),
                            x + origin(dx, moved(dx, i, frames)),
                        ),
                        NoiseMotion::Apart { d } => {
                            let m = moved(d, i, frames);
                            let half = w / 2;
                            if x < half {
                                // The left half's own region, `half + d` wide, sliding right
                                // (its content moving left).
                                (y, x + m)
                            } else {
                                // The right half's region starts after the left's.
                                let base = half + d.unsigned_abs() as usize;
                                (y, base + (x - half) + (d.unsigned_abs() as usize - m))
                            }
                        }
                    };
                    out.push(plane[cy * cw + cx]);
                }
            }
        }
        out
    }

    /// Every frame of a clip cut from `canvas`, frame-major: `frames × c × h × w`.
    pub fn frames(
        self,
        canvas: &[f32],
        c: usize,
        size: (usize, usize),
        frames: usize,
    ) -> Vec<Vec<f32>> {
        (0..frames)
            .map(|i| self.frame(canvas, c, size, i, frames))
            .collect()
    }
}

/// A rule of a motion module: the words that, in a prompt, make its clip's shared noise
/// move this way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoiseMotionRule {
    /// The words, as the prompt spells them ("moving right").
    pub words: String,
    /// The motion.
    pub motion: NoiseMotion,
}

/// The first rule whose words appear in `prompt` as whole words (ASCII case ignored).
pub fn rule_for<'a>(rules: &'a [NoiseMotionRule], prompt: &str) -> Option<&'a NoiseMotionRule> {
    rules.iter().find(|r| names_phrase(prompt, &r.words))
}

/// Whether `prompt` holds the words of `phrase`, in order, as whole words (ASCII case
/// ignored; punctuation separates words); an empty phrase is never named.
pub fn names_phrase(prompt: &str, phrase: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_lowercase())
            .collect()
    };
    let (prompt, want) = (words(prompt), words(phrase));
    !want.is_empty() && prompt.windows(want.len()).any(|w| w == want.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A canvas whose every value says where it sits: `plane·10⁴ + y·100 + x`.
    fn labelled(c: usize, (h, w): (usize, usize)) -> Vec<f32> {
        let mut v = vec![];
        for p in 0..c {
            for y in 0..h {
                for x in 0..w {
                    v.push((p * 10_000 + y * 100 + x) as f32);
                }
            }
        }
        v
    }

    fn at(frame: &[f32], w: usize, (y, x): (usize, usize)) -> f32 {
        frame[y * w + x]
    }

    #[test]
    fn a_shift_moves_the_content_the_named_way_by_the_named_cells() {
        let size = (6, 8);
        for (dx, dy) in [(5, 0), (-5, 0), (0, 3), (0, -3), (4, -2)] {
            let m = NoiseMotion::Shift { dx, dy };
            let canvas = labelled(2, m.canvas(size));
            let f = m.frames(&canvas, 2, size, 6);
            // Content at (y, x) in the first frame is at (y + dy, x + dx) in the last.
            for y in 0..6usize {
                for x in 0..8usize {
                    let (ty, tx) = (y as i64 + dy, x as i64 + dx);
                    if (0..6).contains(&ty) && (0..8).contains(&tx) {
                        for p in 0..2 {
                            let first = &f[0][p * 48..(p + 1) * 48];
                            let last = &f[5][p * 48..(p + 1) * 48];
                            assert_eq!(
                                at(first, 8, (y, x)),
                                at(last, 8, (ty as usize, tx as usize)),
                                "shift ({dx}, {dy}) plane {p} at ({y}, {x})"
                            );
                        }
                    }
                }
            }
            // Monotone in between: frame 3 of 6 has moved round(0.6·|d|).
            let mid = &f[3][..48];
            let cells = |d: i64| (d.unsigned_abs() as f64 * 0.6).round() as i64 * d.signum();
            let (ty, tx) = (2 + cells(dy), 3 + cells(dx));
            assert_eq!(at(&f[0], 8, (2, 3)), at(mid, 8, (ty as usize, tx as usize)));
        }
    }

    #[test]
    fn every_value_of_a_frame_is_a_different_draw() {
        let size = (5, 7);
        for m in [
            NoiseMotion::Shift { dx: -4, dy: 2 },
            NoiseMotion::Apart { d: 3 },
        ] {
            let canvas = labelled(1, m.canvas(size));
            for f in m.frames(&canvas, 1, size, 5) {
                let mut seen = f.clone();
                seen.sort_by(f32::total_cmp);
                seen.dedup();
                assert_eq!(seen.len(), f.len(), "{m:?}: a value repeated in a frame");
            }
        }
    }

    #[test]
    fn apart_moves_the_halves_away_from_each_other() {
        let size = (4, 10);
        let m = NoiseMotion::Apart { d: 3 };
        let canvas = labelled(1, m.canvas(size));
        let f = m.frames(&canvas, 1, size, 4);
        // Left half: (y, x) of the first frame is at (y, x − 3) in the last.
        assert_eq!(at(&f[0], 10, (1, 4)), at(&f[3], 10, (1, 1)));
        // Right half: (y, x) at (y, x + 3).
        assert_eq!(at(&f[0], 10, (2, 5)), at(&f[3], 10, (2, 8)));
        // The two halves never show the same canvas values.
        let left: Vec<f32> = (0..4)
            .flat_map(|y| (0..5).map(move |x| (y, x)))
            .flat_map(|p| f.iter().map(move |fr| at(fr, 10, p)))
            .collect();
        for fr in &f {
            for y in 0..4 {
                for x in 5..10 {
                    assert!(!left.contains(&at(fr, 10, (y, x))));
                }
            }
        }
    }

    #[test]
    fn a_still_clip_or_one_frame_is_the_canvas_origin() {
        let m = NoiseMotion::Shift { dx: 4, dy: 0 };
        let canvas = labelled(1, m.canvas((3, 3)));
        let one = m.frame(&canvas, 1, (3, 3), 0, 1);
        // The first frame of a rightward move starts at x = 4 on the canvas.
        assert_eq!(one[0], 4.0);
        assert_eq!(m.frames(&canvas, 1, (3, 3), 3)[2][0], 0.0);
    }

    #[test]
    fn rules_match_whole_words_in_order() {
        let rules = vec![
            NoiseMotionRule {
                words: "moving right".into(),
                motion: NoiseMotion::Shift { dx: 18, dy: 0 },
            },
            NoiseMotionRule {
                words: "moving apart".into(),
                motion: NoiseMotion::Apart { d: 7 },
            },
        ];
        let hit = |p: &str| rule_for(&rules, p).map(|r| r.words.as_str());
        assert_eq!(
            hit("a red circle Moving  Right, on black"),
            Some("moving right")
        );
        assert_eq!(hit("a and b moving apart"), Some("moving apart"));
        assert_eq!(hit("a red circle moving rightwards"), None);
        assert_eq!(hit("right moving"), None);
        assert_eq!(hit(""), None);
    }
}
