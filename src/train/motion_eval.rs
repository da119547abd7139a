//! The motion module's evaluator: generate held-out motion prompts as clips through the
//! shared pipeline (the same code `adiff compare --frames` runs) and judge each clip with
//! [`crate::shapes::track`].

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::job::Job;
use crate::model::motion::MotionScore;
use crate::model::source::ModelSource;
use crate::pipeline;
use crate::shapes::motion::{ClipScene, Motion, held_out};
use crate::shapes::track::{self, ClipVerdict};

/// Settings of an evaluation.
#[derive(Debug, Clone)]
pub struct MotionEvalOptions {
    /// One-object prompts.
    pub single: usize,
    /// Two-object prompts (moving apart).
    pub pairs: usize,
    /// Frames per clip.
    pub frames: usize,
    /// Sampler steps (DDIM).
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Seed of the prompt set and of clip `i`'s noise (`seed + i`).
    pub seed: u64,
}

/// One judged clip.
#[derive(Debug, Clone, Serialize)]
pub struct ClipResult {
    /// The prompt.
    pub prompt: String,
    /// The motion asked for ("moving right", "growing", "turning blue", …; "still").
    pub motion: String,
    /// The words a prompt names that motion by, a turn's colour left out ("turning").
    pub kind: String,
    /// Motion as asked.
    pub motion_right: bool,
    /// Colour and shape right in every frame.
    pub objects_right: bool,
    /// Background right in every frame.
    pub background_right: bool,
    /// Background flicker, 0–255.
    pub flicker: f64,
}

/// Counts of one group of clips.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupScore {
    /// Clips.
    pub clips: usize,
    /// Motion right.
    pub motion_right: usize,
    /// Objects right in every frame.
    pub objects_right: usize,
    /// Background right in every frame.
    pub background_right: usize,
    /// Mean background flicker, 0–255.
    pub mean_flicker: f64,
}

impl GroupScore {
    fn of(results: &[ClipResult]) -> Self {
        let n = results.len();
        Self {
            clips: n,
            motion_right: results.iter().filter(|r| r.motion_right).count(),
            objects_right: results.iter().filter(|r| r.objects_right).count(),
            background_right: results.iter().filter(|r| r.background_right).count(),
            mean_flicker: results.iter().map(|r| r.flicker).sum::<f64>() / n.max(1) as f64,
        }
    }

    /// "motion 37/40 (92 %)".
    pub fn line(&self, name: &str) -> String {
        let pct = |k: usize| 100.0 * k as f64 / self.clips.max(1) as f64;
        format!(
            "{name}: motion right {}/{} ({:.0} %), objects right in every frame {}/{} ({:.0} %), background {}/{}, flicker {:.2} levels",
            self.motion_right,
            self.clips,
            pct(self.motion_right),
            self.objects_right,
            self.clips,
            pct(self.objects_right),
            self.background_right,
            self.clips,
            self.mean_flicker
        )
    }
}

/// The evaluation's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct MotionEvalReport {
    /// Every clip.
    pub clips: Vec<ClipResult>,
    /// One-object prompts.
    pub single: GroupScore,
    /// Two-object prompts.
    pub pairs: GroupScore,
    /// Seconds per clip (load excluded).
    pub seconds_per_clip: f64,
}

/// The words prompts name a motion by, a turn's target colour left out.
fn kind_words(m: Motion) -> String {
    match m {
        Motion::Turn(_) => "turning".into(),
        m => m.words(),
    }
}

impl MotionEvalReport {
    /// Clips right per motion (by [`ClipResult::kind`], still scenes left out), sorted by
    /// the motion's words: what a module's `config.json` records as `"evaluated"`.
    pub fn scores(&self) -> Vec<MotionScore> {
        let mut by: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
        for c in self.clips.iter().filter(|c| c.kind != "still") {
            let e = by.entry(c.kind.as_str()).or_default();
            e.0 += usize::from(c.motion_right);
            e.1 += 1;
        }
        by.into_iter()
            .map(|(words, (right, clips))| MotionScore {
                words: words.to_string(),
                right,
                clips,
            })
            .collect()
    }
}

/// Write `scores` and `by` (the command and date) into the motion module's `config.json`
/// (`"evaluated"`, `"evaluated_by"`), keeping everything else it says; atomically.
pub fn record_scores(config: &Path, scores: &[MotionScore], by: &str) -> Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config.display()))?;
    let Some(map) = json.as_object_mut() else {
        anyhow::bail!("{} is not a JSON object", config.display());
    };
    map.insert("evaluated".into(), serde_json::to_value(scores)?);
    map.insert("evaluated_by".into(), serde_json::Value::String(by.into()));
    crate::output::write_json(config, &json)
}

/// Receives each generated clip: its index, prompt and frames.
pub type ClipSink<'a> = dyn FnMut(usize, &str, &[image::RgbImage]) -> Result<()> + 'a;

/// Generate and judge the held-out clips with the model folder `model` (frames make it
/// load its `motion/` module); each clip's frames go to `save(i, prompt, frames)`.
pub fn evaluate(
    model: &Path,
    opts: &MotionEvalOptions,
    save: &mut ClipSink,
    log: &mut dyn FnMut(&str),
) -> Result<MotionEvalReport> {
    let (singles, pairs) = held_out(opts.single, opts.pairs, opts.seed);
    let mut template = Job::new(ModelSource::Local(model.to_path_buf()), "");
    template.frames = Some(opts.frames);
    template.steps = opts.steps;
    template.guidance = opts.guidance;
    template.scheduler = crate::sampler::SchedulerKind::Ddim;
    template.force_cpu = true;
    // A local folder: nothing is downloaded.
    let loaded = pipeline::load_job_model(&template, &Default::default())?;
    let t0 = Instant::now();
    let mut run = |clips: &[ClipScene], offset: usize| -> Result<Vec<ClipResult>> {
        let mut out = vec![];
        for (i, clip) in clips.iter().enumerate() {
            let mut job = template.clone();
            job.prompt = clip.caption(false, true);
            job.seed = opts.seed + (offset + i) as u64;
            let prepared = pipeline::prepare(&loaded, &job)?;
            let g =
                pipeline::generate(&loaded, &job, &prepared, &job.baseline_pass(), &mut |_| {
                    ControlFlow::Continue(())
                })?;
            save(offset + i, &job.prompt, &g.frames)?;
            let v: ClipVerdict = track::judge(clip, &g.frames);
            let r = ClipResult {
                prompt: job.prompt.clone(),
                motion: clip
                    .motion()
                    .map_or_else(|| "still".to_string(), |m| m.words()),
                kind: clip
                    .motion()
                    .map_or_else(|| "still".to_string(), kind_words),
                motion_right: v.motion,
                objects_right: v.objects,
                background_right: v.background,
                flicker: v.flicker,
            };
            log(&format!(
                "{:>3} {} {} {}",
                offset + i,
                if r.motion_right {
                    "motion ✓"
                } else {
                    "motion ✗"
                },
                if r.objects_right {
                    "objects ✓"
                } else {
                    "objects ✗"
                },
                r.prompt
            ));
            out.push(r);
        }
        Ok(out)
    };
    let one = run(&singles, 0)?;
    let two = run(&pairs, singles.len())?;
    let n = one.len() + two.len();
    let seconds_per_clip = t0.elapsed().as_secs_f64() / n.max(1) as f64;
    Ok(MotionEvalReport {
        single: GroupScore::of(&one),
        pairs: GroupScore::of(&two),
        clips: one.into_iter().chain(two).collect(),
        seconds_per_clip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(kind: &str, right: bool) -> ClipResult {
        ClipResult {
            prompt: String::new(),
            motion: kind.into(),
            kind: kind.into(),
            motion_right: right,
            objects_right: false,
            background_right: true,
            flicker: 0.0,
        }
    }

    #[test]
    fn scores_count_each_motion_and_leave_still_scenes_out() {
        let clips = vec![
            clip("moving right", true),
            clip("turning", false),
            clip("moving right", false),
            clip("still", true),
            clip("turning", true),
            clip("moving right", true),
        ];
        let report = MotionEvalReport {
            single: GroupScore::of(&clips),
            pairs: GroupScore::default(),
            clips,
            seconds_per_clip: 0.0,
        };
        let got: Vec<(String, usize, usize)> = report
            .scores()
            .into_iter()
            .map(|s| (s.words, s.right, s.clips))
            .collect();
        assert_eq!(
            got,
            [("moving right".into(), 2, 3), ("turning".into(), 1, 2)]
        );
        assert_eq!(
            kind_words(Motion::Turn(crate::shapes::Color::Blue)),
            "turning"
        );
        assert_eq!(kind_words(Motion::Left), "moving left");
    }

    #[test]
    fn recording_keeps_the_rest_of_the_config_and_refuses_what_is_not_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"shared_noise": 0.85, "evaluated": [1]}"#).unwrap();
        let scores = [MotionScore {
            words: "growing".into(),
            right: 2,
            clips: 3,
        }];
        record_scores(&path, &scores, "the command, 2026-12-07").unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["shared_noise"], 0.85);
        assert_eq!(
            v["evaluated"],
            serde_json::json!([{"words": "growing", "right": 2, "clips": 3}])
        );
        assert_eq!(v["evaluated_by"], "the command, 2026-12-07");
        std::fs::write(&path, "[1, 2]").unwrap();
        let e = record_scores(&path, &scores, "x").unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[1, 2]");
    }
}
