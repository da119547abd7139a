//! The clip player's logic: one frame index for both sides (so they are always on the same
//! frame), play / pause at a frame rate, loop or stop at the end, frame-by-frame steps; and
//! the per-frame PSNR strip's layout. Plain data, no egui: the panel draws it.

/// Where playback stands. Both sides show [`Player::frame`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Player {
    frame: usize,
    playing: bool,
    /// When the current frame went on screen (seconds on the caller's clock), while playing.
    since: Option<f64>,
}

impl Player {
    /// The frame both sides show.
    pub fn frame(&self) -> usize {
        self.frame
    }

    /// Whether the clip is playing.
    pub fn is_playing(&self) -> bool {
        self.playing
    }

    /// Play or pause; playing from the last frame of a clip that does not loop starts over.
    pub fn toggle(&mut self, frames: usize, looping: bool) {
        self.playing = !self.playing && frames > 1;
        self.since = None;
        if self.playing && !looping && self.frame + 1 >= frames {
            self.frame = 0;
        }
    }

    /// Play from the frame on screen (a clip of one frame does not play).
    pub fn play(&mut self, frames: usize) {
        if !self.playing {
            self.playing = frames > 1;
            self.since = None;
        }
    }

    /// Pause.
    pub fn pause(&mut self) {
        self.playing = false;
        self.since = None;
    }

    /// Go to `frame` (kept within the clip's `frames`), restarting the frame's time.
    pub fn seek(&mut self, frame: usize, frames: usize) {
        self.frame = frame.min(frames.saturating_sub(1));
        self.since = None;
    }

    /// One frame on (`+1`) or back (`-1`), pausing: past either end it wraps when looping.
    pub fn step(&mut self, by: isize, frames: usize, looping: bool) {
        self.pause();
        if frames == 0 {
            return;
        }
        let n = frames as isize;
        let to = self.frame as isize + by;
        self.frame = if looping {
            to.rem_euclid(n) as usize
        } else {
            to.clamp(0, n - 1) as usize
        };
    }

    /// Advance to the frame due at `now` (seconds) at `fps`. At the end the clip starts over
    /// when `looping`, else it stops on its last frame. Returns the seconds until the next
    /// frame is due while playing (for the next repaint), `None` when paused.
    pub fn tick(&mut self, now: f64, frames: usize, fps: f64, looping: bool) -> Option<f64> {
        self.frame = self.frame.min(frames.saturating_sub(1));
        if !self.playing {
            return None;
        }
        if frames < 2 || !(fps.is_finite() && fps > 0.0) {
            self.pause();
            return None;
        }
        let period = 1.0 / fps;
        let since = *self.since.get_or_insert(now);
        // (A hair over, so that a frame due exactly now is not lost to rounding.)
        let due = ((now - since) / period + 1e-6).floor().max(0.0) as usize;
        if due > 0 {
            self.since = Some(since + due as f64 * period);
            let to = self.frame.saturating_add(due);
            if to < frames {
                self.frame = to;
            } else if looping {
                self.frame = to % frames;
            } else {
                self.frame = frames - 1;
                self.pause();
                return None;
            }
        }
        let next = self.since.unwrap_or(now) + period;
        Some((next - now).max(0.0))
    }
}

/// The per-frame PSNR strip: one cell per frame across `width`, each a bar as tall as its
/// frame's PSNR reads (identical frames, PSNR ∞: full height).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Strip {
    /// Frames (cells).
    pub frames: usize,
    /// Width of the strip.
    pub width: f32,
}

impl Strip {
    /// The lowest PSNR drawn above the floor, dB.
    pub const LOW_DB: f64 = 10.0;
    /// The PSNR drawn at full height, dB (and anything above, and identical frames).
    pub const HIGH_DB: f64 = 50.0;

    /// Width of one cell.
    pub fn cell_width(&self) -> f32 {
        self.width / self.frames.max(1) as f32
    }

    /// Left edge and width of frame `i`'s cell, from the strip's left edge.
    pub fn cell(&self, i: usize) -> (f32, f32) {
        let w = self.cell_width();
        (i as f32 * w, w)
    }

    /// The frame under `x` (from the strip's left edge), if any.
    pub fn frame_at(&self, x: f32) -> Option<usize> {
        if self.frames == 0 || !(0.0..self.width).contains(&x) {
            return None;
        }
        Some(((x / self.cell_width()) as usize).min(self.frames - 1))
    }

    /// A bar's height as a fraction of the strip's, for a PSNR in dB: from a sliver at
    /// [`Self::LOW_DB`] and below to full at [`Self::HIGH_DB`] and above (and for identical
    /// frames).
    pub fn bar(psnr_db: f64) -> f32 {
        if psnr_db.is_nan() {
            return 0.0;
        }
        let t = (psnr_db - Self::LOW_DB) / (Self::HIGH_DB - Self::LOW_DB);
        t.clamp(0.05, 1.0) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playing_advances_at_the_frame_rate_and_loops() {
        let mut p = Player::default();
        p.toggle(4, true);
        assert!(p.is_playing());
        // 10 fps: frame 0 until 0.1 s after the first tick.
        let left = p.tick(5.0, 4, 10.0, true).unwrap();
        assert!((left - 0.1).abs() < 1e-9, "{left}");
        assert_eq!(p.frame(), 0);
        let left = p.tick(5.05, 4, 10.0, true).unwrap();
        assert!((left - 0.05).abs() < 1e-9, "{left}");
        p.tick(5.1, 4, 10.0, true);
        assert_eq!(p.frame(), 1);
        // A slow frame skips ahead by the frames that were due: 1 + 3 = 4 → 0.
        p.tick(5.4, 4, 10.0, true);
        assert_eq!(p.frame(), 0);
        assert!(p.is_playing());
    }

    #[test]
    fn without_loop_playback_stops_on_the_last_frame_and_restarts_from_the_first() {
        let mut p = Player::default();
        p.toggle(3, false);
        p.tick(0.0, 3, 2.0, false);
        p.tick(10.0, 3, 2.0, false);
        assert_eq!((p.frame(), p.is_playing()), (2, false));
        p.toggle(3, false);
        assert_eq!((p.frame(), p.is_playing()), (0, true));
    }

    #[test]
    fn steps_pause_wrap_when_looping_and_clamp_otherwise() {
        let mut p = Player::default();
        p.toggle(5, true);
        p.step(-1, 5, true);
        assert_eq!((p.frame(), p.is_playing()), (4, false));
        p.step(1, 5, true);
        assert_eq!(p.frame(), 0);
        p.step(-1, 5, false);
        assert_eq!(p.frame(), 0);
        p.seek(3, 5);
        p.step(3, 5, false);
        assert_eq!(p.frame(), 4);
        p.seek(99, 5);
        assert_eq!(p.frame(), 4);
        // A shorter clip arriving pulls the frame back inside it.
        p.tick(0.0, 2, 8.0, true);
        assert_eq!(p.frame(), 1);
        p.step(1, 0, true);
        assert_eq!(p.frame(), 1);
    }

    #[test]
    fn an_absurd_frame_rate_never_overflows() {
        let mut p = Player::default();
        p.toggle(5, true);
        p.tick(0.0, 5, 1e300, true);
        p.tick(1.0, 5, 1e300, true);
        assert!(p.frame() < 5);
        p.tick(2.0, 5, 1e300, false);
        assert_eq!((p.frame(), p.is_playing()), (4, false));
        // A frame every 1e300 s: the wait is finite (the panel waits at most a second).
        p.toggle(5, true);
        let wait = p.tick(3.0, 5, 1e-300, true).unwrap();
        assert!(wait.is_finite() && wait > 1.0);
        assert_eq!(p.frame(), 4);
    }

    #[test]
    fn a_single_frame_or_a_bad_rate_does_not_play() {
        let mut p = Player::default();
        p.toggle(1, true);
        assert!(!p.is_playing());
        p.play(1);
        assert!(!p.is_playing());
        p.play(3);
        assert!(p.is_playing());
        p.play(3);
        assert!(p.is_playing(), "play while playing goes on playing");
        p.pause();
        p.toggle(4, true);
        assert_eq!(p.tick(0.0, 4, 0.0, true), None);
        assert!(!p.is_playing());
    }

    #[test]
    fn the_strip_maps_positions_to_frames_and_psnr_to_bars() {
        let s = Strip {
            frames: 8,
            width: 400.0,
        };
        assert_eq!(s.cell(3), (150.0, 50.0));
        assert_eq!(s.frame_at(0.0), Some(0));
        assert_eq!(s.frame_at(149.9), Some(2));
        assert_eq!(s.frame_at(150.0), Some(3));
        assert_eq!(s.frame_at(399.9), Some(7));
        assert_eq!(s.frame_at(400.0), None);
        assert_eq!(s.frame_at(-1.0), None);
        assert_eq!(
            Strip {
                frames: 0,
                width: 10.0
            }
            .frame_at(1.0),
            None
        );
        assert_eq!(Strip::bar(f64::INFINITY), 1.0);
        assert_eq!(Strip::bar(70.0), 1.0);
        assert_eq!(Strip::bar(30.0), 0.5);
        assert_eq!(Strip::bar(3.0), 0.05);
        assert_eq!(Strip::bar(f64::NAN), 0.0);
    }
}
