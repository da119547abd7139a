//! What a benchmark runs: its options (a template [`Job`] and the lists it is crossed with),
//! its settings, and the [`Pass`] each setting runs for a prompt.

use super::BenchSettings;
use super::prompts::BenchPrompt;
use super::shard::{Shard, ShardRecord, assign, digest, group_key};
use crate::complexity::{BudgetMap, BudgetMode, Complexity, ComplexityBudget, Scoring};
use crate::job::{Job, Pass};
use crate::metrics::ClipSource;
use crate::sampler::{Method, SchedulerKind};
use std::path::PathBuf;

/// The label of the full-step baseline setting, the reference of every other.
pub const BASELINE: &str = "baseline";

/// A validated benchmark request.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// What every run shares: model, device, negative prompt, baseline steps, guidance,
    /// size, early stop of the non-baseline runs, truncation. Prompt, seed, scheduler and
    /// method vary per run.
    pub job: Job,
    /// The prompts.
    pub prompts: Vec<BenchPrompt>,
    /// The prompt file (for the report).
    pub prompts_file: PathBuf,
    /// Schedulers.
    pub schedulers: Vec<SchedulerKind>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// δ values (one AdaptiveDiffusion setting each).
    pub deltas: Vec<f64>,
    /// Further methods, one setting each (`--method`, sweeps expanded).
    pub methods: Vec<Method>,
    /// Add a `steps:n=match` control after every setting that skips: as many full steps as
    /// that setting's run of the same prompt, seed and scheduler called the noise predictor.
    pub match_steps: bool,
    /// C_max.
    pub max_skips: usize,
    /// Fixed or complexity budget.
    pub budget: BudgetMode,
    /// Scorer and mapping (the complexity is recorded for every prompt).
    pub scoring: Scoring,
    /// CLIP model (`None`: not measured).
    pub clip: Option<ClipSource>,
    /// Save every image, not only the baselines.
    pub save_images: bool,
    /// Continue an interrupted benchmark.
    pub resume: bool,
    /// Output folder.
    pub out: PathBuf,
    /// The command line, for the report.
    pub command: String,
    /// The command line as arguments (a part's record keeps them to run it again).
    pub args: Vec<String>,
    /// Run only this part of the plan (`out` is then the part's own folder).
    pub shard: Option<Shard>,
}

/// One prompt × seed × scheduler of the plan: the runs that share prepared inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlannedGroup {
    /// The prompt's index.
    pub pi: usize,
    /// The seed.
    pub seed: u64,
    /// The scheduler.
    pub scheduler: SchedulerKind,
}

impl PlannedGroup {
    /// `p{prompt}-s{seed}-{scheduler}`.
    pub fn key(&self) -> String {
        group_key(self.pi, self.seed, self.scheduler.name())
    }
}

/// One setting, run for every prompt × seed × scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// `baseline`, `budget` or `delta=…`.
    pub label: String,
    /// The method.
    pub method: Method,
    /// The steps come from the prompt's complexity (`--budget auto`).
    pub budgeted: bool,
    /// `steps:n=match`: the index of the setting whose calls give the step count.
    pub matched: Option<usize>,
}

impl Setting {
    /// Whether its runs save work (what a `steps:n=match` control is matched to).
    pub fn skips(&self) -> bool {
        self.matched.is_none() && self.method.saves_work()
    }

    /// Whether it runs with `scheduler`: a method that names the schedulers its authors'
    /// code supports runs on those only, and a `steps:n=match` control follows the setting
    /// it matches (`all`: every setting of the plan).
    pub fn runs_on(&self, scheduler: SchedulerKind, all: &[Setting]) -> bool {
        let method = match self.matched {
            Some(i) => all.get(i).map_or(self.method, |s| s.method),
            None => self.method,
        };
        method.refuses(scheduler).is_none()
    }

    /// The full-step baseline, the reference of the other settings.
    pub fn is_reference(&self) -> bool {
        self.method == Method::BASELINE && !self.budgeted
    }

    /// The run of this setting in `job` (a prompt's job), for a prompt of `complexity`:
    /// the pass, and the budget decision when the steps come from it.
    /// `matched_calls`: the work of the setting a `steps:n=match` control follows, in the
    /// same group, in full steps (calls, or for partial calls their MACs in full calls).
    pub fn pass(
        &self,
        job: &Job,
        map: &BudgetMap,
        complexity: &Complexity,
        matched_calls: Option<usize>,
    ) -> (Pass, Option<ComplexityBudget>) {
        if self.is_reference() {
            return (job.baseline_pass(), None);
        }
        if self.matched.is_some() {
            let n = matched_calls.unwrap_or(job.steps).max(1);
            let pass = Pass {
                method: Method::steps(n),
                steps: n,
                early_stop: None,
            };
            return (pass, None);
        }
        if !self.budgeted {
            let pass = Pass {
                method: self.method,
                steps: self.method.own_steps().unwrap_or(job.steps),
                early_stop: job.early_stop,
            };
            return (pass, None);
        }
        let budget = map.decide(complexity.score, job.steps, self.method);
        let decision = ComplexityBudget {
            complexity: complexity.clone(),
            budget,
        };
        let pass = Pass {
            method: decision.budget.method(self.method),
            steps: decision.budget.steps,
            early_stop: job.early_stop,
        };
        (pass, Some(decision))
    }
}

impl BenchOptions {
    /// The settings: baseline, (budget), one per δ.
    pub fn settings(&self) -> Vec<Setting> {
        let auto = self.budget == BudgetMode::Auto;
        let setting = |label: String, method: Method, budgeted: bool| Setting {
            label,
            method,
            budgeted,
            matched: None,
        };
        let mut v = vec![setting(BASELINE.into(), Method::BASELINE, false)];
        if auto {
            v.push(setting("budget".into(), Method::BASELINE, true));
        }
        for &delta in &self.deltas {
            let method = Method::adaptive(delta, self.max_skips);
            v.push(setting(format!("delta={delta}"), method, auto));
        }
        for m in &self.methods {
            let budgeted = auto && m.adaptive_rule().is_some();
            v.push(setting(crate::job::method_spec::format(m), *m, budgeted));
        }
        if self.match_steps {
            let skippers: Vec<(usize, String)> = v
                .iter()
                .enumerate()
                .filter(|(_, s)| s.skips())
                .map(|(i, s)| (i, s.label.clone()))
                .collect();
            for (i, label) in skippers {
                v.push(Setting {
                    label: format!("steps:n=match({label})"),
                    method: Method::steps(1),
                    budgeted: false,
                    matched: Some(i),
                });
            }
        }
        v
    }

    /// The job of one prompt, seed and scheduler.
    pub fn job_for(&self, prompt: &BenchPrompt, seed: u64, scheduler: SchedulerKind) -> Job {
        Job {
            prompt: prompt.text.clone(),
            seed,
            scheduler,
            ..self.job.clone()
        }
    }

    /// The settings recorded in `bench.json`.
    pub fn bench_settings(&self) -> BenchSettings {
        let j = &self.job;
        BenchSettings {
            prompts_file: self.prompts_file.clone(),
            prompt_count: self.prompts.len(),
            model: j.model.to_string(),
            vae: j.vae.as_ref().map(|v| v.display().to_string()),
            loras: j.loras.iter().map(|l| l.to_string()).collect(),
            prediction: j.prediction.map(|p| format!("{p:?}")),
            schedulers: self
                .schedulers
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            seeds: self.seeds.clone(),
            steps: j.steps,
            guidance: j.guidance,
            negative: j.negative.clone(),
            width: j.width,
            height: j.height,
            frames: j.frames,
            deltas: self.deltas.clone(),
            methods: self
                .methods
                .iter()
                .map(crate::job::method_spec::format)
                .chain(self.match_steps.then(|| "steps:n=match".to_string()))
                .collect(),
            max_skips: self.max_skips,
            budget: match self.budget {
                BudgetMode::Fixed => "fixed".into(),
                BudgetMode::Auto => "auto".into(),
            },
            scorer: self.scoring.scorer.name().into(),
            scale_policy: self.scoring.scale_policy,
            early_stop: j.early_stop,
            clip: self.clip.as_ref().map(ToString::to_string),
        }
    }

    /// The groups, in the order they run.
    pub fn groups(&self) -> Vec<PlannedGroup> {
        let mut v = Vec::new();
        for pi in 0..self.prompts.len() {
            for &seed in &self.seeds {
                for &scheduler in &self.schedulers {
                    v.push(PlannedGroup {
                        pi,
                        seed,
                        scheduler,
                    });
                }
            }
        }
        v
    }

    /// A group's planned work, in noise-predictor steps: each setting's own steps, a
    /// complexity budget's when the prompt's `complexity` is given (the steps a skipping
    /// run saves are not known before it runs). What the parts are balanced by.
    pub fn group_cost(
        &self,
        settings: &[Setting],
        scheduler: SchedulerKind,
        map: &BudgetMap,
        complexity: Option<&Complexity>,
    ) -> u64 {
        let steps = self.job.steps;
        let total: usize = settings
            .iter()
            .filter(|s| s.runs_on(scheduler, settings))
            .map(|s| match (s.budgeted, complexity) {
                (true, Some(c)) => map.decide(c.score, steps, s.method).steps,
                _ if s.matched.is_some() => steps,
                _ => s.method.own_steps().unwrap_or(steps),
            })
            .sum();
        (total * self.job.frames.unwrap_or(1).max(1)) as u64
    }

    /// Which groups this benchmark runs (all of them, or its part's, split by `costs`, one
    /// per group) and, for a part, its record (with a digest of the plan that parts of one
    /// plan share).
    pub fn part(&self, costs: &[u64]) -> (Vec<bool>, Option<ShardRecord>) {
        let groups = self.groups();
        let Some(shard) = self.shard else {
            return (vec![true; groups.len()], None);
        };
        let parts = assign(costs, shard.count);
        let labels: Vec<String> = self.settings().into_iter().map(|s| s.label).collect();
        let keyed: Vec<String> = groups
            .iter()
            .zip(&parts)
            .map(|(g, p)| format!("{}\t{p}", g.key()))
            .collect();
        // The split, the settings and the prompts' text (a prompt file edited between
        // parts keeps its name and count).
        let plan_digest = digest(
            [format!("{}", shard.count)]
                .iter()
                .chain(&labels)
                .chain(&keyed)
                .map(String::as_str)
                .chain(self.prompts.iter().map(|p| p.text.as_str())),
        );
        let in_part: Vec<bool> = parts.iter().map(|&p| p + 1 == shard.index).collect();
        let record = ShardRecord {
            index: shard.index,
            count: shard.count,
            plan_digest,
            plan_runs: groups.len() * labels.len(),
            groups: groups
                .iter()
                .zip(&in_part)
                .filter(|(_, i)| **i)
                .map(|(g, _)| g.key())
                .collect(),
            settings: labels,
            args: self.args.clone(),
            workdir: None,
            hosts: Vec::new(),
        };
        (in_part, Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelSource;

    fn options(prompts: &[&str], shard: Option<Shard>) -> BenchOptions {
        let mut job = Job::new(ModelSource::Local(PathBuf::from("m")), "x");
        job.steps = 20;
        BenchOptions {
            job,
            prompts: prompts
                .iter()
                .map(|t| BenchPrompt {
                    text: t.to_string(),
                    grade: None,
                    origin: String::new(),
                })
                .collect(),
            prompts_file: "p.txt".into(),
            schedulers: vec![SchedulerKind::Ddim, SchedulerKind::Euler],
            seeds: vec![1, 2],
            deltas: vec![0.01],
            methods: vec![Method::steps(10)],
            match_steps: false,
            max_skips: 4,
            budget: BudgetMode::Fixed,
            scoring: Scoring::default(),
            clip: None,
            save_images: false,
            resume: false,
            out: "o".into(),
            command: String::new(),
            args: Vec::new(),
            shard,
        }
    }

    #[test]
    fn the_parts_of_a_plan_are_disjoint_whole_groups_that_cover_it() {
        let prompts = ["a", "b", "c"];
        let whole = options(&prompts, None);
        let settings = whole.settings();
        let map = whole.scoring.mapping().unwrap();
        // baseline 20 + δ 20 + steps:n=10 10
        let ddim = SchedulerKind::Ddim;
        assert_eq!(whole.group_cost(&settings, ddim, &map, None), 50);
        // A method its authors' code runs on Euler and DPM++ only costs nothing on DDIM,
        // and neither does its matched control.
        let mut sada = options(&prompts, None);
        sada.methods.push(Method::named("sada").unwrap());
        sada.match_steps = true;
        let s = sada.settings();
        let on = |k| s.iter().filter(|x| x.runs_on(k, &s)).count();
        assert_eq!((on(ddim), on(SchedulerKind::Euler)), (s.len() - 2, s.len()));
        assert_eq!(sada.group_cost(&s, ddim, &map, None), 50 + 20);
        let groups = whole.groups();
        assert_eq!(groups.len(), 12);
        let costs = vec![50; groups.len()];
        assert_eq!(whole.part(&costs), (vec![true; 12], None));
        let mut seen: Vec<String> = Vec::new();
        let mut digests = Vec::new();
        for k in 1..=5 {
            let opts = options(&prompts, Some(Shard::new(k, 5).unwrap()));
            let (in_part, rec) = opts.part(&costs);
            let rec = rec.unwrap();
            assert_eq!(in_part.iter().filter(|i| **i).count(), rec.groups.len());
            assert!((2..=3).contains(&rec.groups.len()), "{k}: {:?}", rec.groups);
            assert_eq!(rec.plan_runs, 36);
            seen.extend(rec.run_ids());
            digests.push(rec.plan_digest);
        }
        assert_eq!(seen.len(), 36);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 36, "each run in one part");
        assert!(digests.iter().all(|d| *d == digests[0]));
        // another split, or other prompts of the same count, is another plan
        let (_, other) = options(&prompts, Some(Shard::new(1, 4).unwrap())).part(&costs);
        assert_ne!(other.unwrap().plan_digest, digests[0]);
        let (_, edited) = options(&["a", "b", "z"], Some(Shard::new(1, 5).unwrap())).part(&costs);
        assert_ne!(edited.unwrap().plan_digest, digests[0]);
    }
}
