//! A sharded benchmark as Slurm jobs: an sbatch job array (one task per part, requeueable,
//! warned before its time limit so that it stops between runs and requeues itself to
//! continue) and a merge job that runs after the array (`afterany`). The scripts are plain,
//! commented sbatch files written to `OUT/slurm/`, to read and edit before submitting;
//! [`submit`] hands them to `sbatch`.
//!
//! Nothing cluster-specific is assumed: partition, account, GPUs, CPUs and time limit are
//! written only when given.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The folder of `OUT` that holds the scripts and the task logs.
pub const SLURM_DIR: &str = "slurm";
/// The array script's name.
pub const ARRAY_SCRIPT: &str = "bench-array.sbatch";
/// The merge script's name.
pub const MERGE_SCRIPT: &str = "bench-merge.sbatch";
/// The exit status of a benchmark stopped on request with runs left (`EX_TEMPFAIL`): the
/// array script requeues its task on it.
pub const EXIT_STOPPED: i32 = 75;

/// A setting of the jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlurmSetting {
    /// Array tasks.
    Tasks,
    /// Partition.
    Partition,
    /// Account.
    Account,
    /// Time limit per task.
    Time,
    /// Tasks running at once.
    MaxParallel,
    /// Job name.
    JobName,
}

/// Settings Slurm would not accept, or sbatch failing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SlurmError {
    /// A setting's value.
    #[error("'{value}' {why}")]
    Invalid {
        /// Which.
        setting: SlurmSetting,
        /// The value given.
        value: String,
        /// What is wrong and what is accepted.
        why: String,
    },
    /// No `sbatch` on this machine.
    #[error(
        "sbatch was not found on PATH ({why}): submit from a Slurm login node, or submit the scripts in {dir} there yourself"
    )]
    NoSbatch {
        /// The scripts' folder.
        dir: PathBuf,
        /// The spawn error.
        why: String,
    },
    /// sbatch refused a script.
    #[error("sbatch refused {script} (exit status {status}): {message}")]
    Refused {
        /// The script.
        script: PathBuf,
        /// sbatch's exit status.
        status: String,
        /// Its message, whole, on one line.
        message: String,
    },
}

/// The jobs of a sharded benchmark.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmJobs {
    /// Array tasks (parts).
    pub tasks: usize,
    /// `--job-name` of the array (the merge job's gets `-merge`).
    pub job_name: String,
    /// Partition.
    pub partition: Option<String>,
    /// Account.
    pub account: Option<String>,
    /// GPUs per task.
    pub gpus_per_task: Option<u32>,
    /// CPUs per task.
    pub cpus_per_task: Option<u32>,
    /// Time limit per task, as Slurm writes it.
    pub time: Option<String>,
    /// Tasks running at once.
    pub max_parallel: Option<usize>,
    /// The folder the jobs run in (relative paths of the command resolve from it).
    pub workdir: PathBuf,
    /// The benchmark's folder (absolute).
    pub out: PathBuf,
    /// A task's command (it reads its part from the array task's variables).
    pub task_command: Vec<String>,
    /// The merge job's command.
    pub merge_command: Vec<String>,
    /// When and by which command line the scripts were written.
    pub written_by: String,
}

/// Where the scripts were written.
#[derive(Debug, Clone, PartialEq)]
pub struct Scripts {
    /// The array script.
    pub array: PathBuf,
    /// The merge script.
    pub merge: PathBuf,
    /// The task logs' folder.
    pub logs: PathBuf,
}

/// The submitted jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The array's job id.
    pub array_id: String,
    /// The merge job's id.
    pub merge_id: String,
}

fn invalid(setting: SlurmSetting, value: &str, why: &str) -> SlurmError {
    SlurmError::Invalid {
        setting,
        value: value.to_string(),
        why: why.to_string(),
    }
}

/// A Slurm time limit in seconds: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M` or `D-H:M:S`
/// (`None`: `UNLIMITED` / `INFINITE`).
pub fn time_limit_s(t: &str) -> Result<Option<u64>, SlurmError> {
    let bad = || {
        invalid(
            SlurmSetting::Time,
            t,
            "is not a Slurm time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (e.g. 04:00:00)",
        )
    };
    let s = t.trim();
    if s.eq_ignore_ascii_case("unlimited") || s.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let num = |x: &str| -> Result<u64, SlurmError> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) || x.len() > 6 {
            return Err(bad());
        }
        x.parse().map_err(|_| bad())
    };
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, s),
    };
    let f: Vec<u64> = rest.split(':').map(num).collect::<Result<_, _>>()?;
    let secs = match (days, f.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) | (Some(_), [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(_), [h]) => h * 3600,
        (Some(_), [h, m]) => h * 3600 + m * 60,
        _ => return Err(bad()),
    } + days.unwrap_or(0) * 86_400;
    if secs == 0 {
        return Err(invalid(SlurmSetting::Time, t, "is no time at all"));
    }
    Ok(Some(secs))
}

/// A name that goes on an `#SBATCH` line: letters, digits, `_ . - ,` (a partition list).
fn check_name(setting: SlurmSetting, v: &str) -> Result<(), SlurmError> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ','))
    {
        return Err(invalid(
            setting,
            v,
            "has characters Slurm names do not have (letters, digits, _ . - and , only)",
        ));
    }
    Ok(())
}

/// Quote an argument for bash when it needs it.
pub fn shell_quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,+@%".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

fn command_line(args: &[String]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

impl SlurmJobs {
    /// Check what goes into the scripts.
    pub fn validate(&self) -> Result<(), SlurmError> {
        if self.tasks == 0 {
            return Err(invalid(SlurmSetting::Tasks, "0", "tasks: give at least 1"));
        }
        check_name(SlurmSetting::JobName, &self.job_name)?;
        if let Some(p) = &self.partition {
            check_name(SlurmSetting::Partition, p)?;
        }
        if let Some(a) = &self.account {
            check_name(SlurmSetting::Account, a)?;
        }
        if let Some(t) = &self.time {
            time_limit_s(t)?;
        }
        if self.max_parallel == Some(0) {
            return Err(invalid(
                SlurmSetting::MaxParallel,
                "0",
                "tasks at once: give at least 1",
            ));
        }
        Ok(())
    }

    /// Seconds before the time limit at which a task is told to stop between runs: a tenth
    /// of the limit, between 1 and 10 minutes (5 minutes when the partition decides).
    pub fn warning_s(&self) -> u64 {
        match self
            .time
            .as_deref()
            .and_then(|t| time_limit_s(t).ok().flatten())
        {
            Some(limit) => (limit / 10).clamp(60, 600).min(limit / 2).max(1),
            None => 300,
        }
    }

    fn logs(&self) -> PathBuf {
        self.out.join(SLURM_DIR).join("logs")
    }

    fn common_lines(&self, o: &mut String) {
        if let Some(p) = &self.partition {
            let _ = writeln!(o, "#SBATCH --partition={p}");
        }
        if let Some(a) = &self.account {
            let _ = writeln!(o, "#SBATCH --account={a}");
        }
        let _ = writeln!(
            o,
            "#SBATCH --chdir={}",
            shell_quote(&self.workdir.display().to_string())
        );
    }

    /// The array script: one task per part.
    pub fn array_script(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "#!/bin/bash");
        let _ = writeln!(
            o,
            "# adiff bench over a Slurm job array: task K of {n} runs part K of the plan into\n\
             # {out}/shards/K-of-{n}/, resuming what an earlier try of the task recorded.\n\
             # After the array, {merge} merges the parts.\n\
             # Written by {by}. Edit freely before submitting:\n\
             #   sbatch {array}",
            n = self.tasks,
            out = self.out.display(),
            merge = MERGE_SCRIPT,
            by = self.written_by,
            array = self.out.join(SLURM_DIR).join(ARRAY_SCRIPT).display(),
        );
        let _ = writeln!(o, "#SBATCH --job-name={}", self.job_name);
        let _ = writeln!(
            o,
            "#SBATCH --array=1-{}{}",
            self.tasks,
            self.max_parallel
                .map(|m| format!("%{m}"))
                .unwrap_or_default()
        );
        let _ = writeln!(o, "#SBATCH --ntasks=1");
        if let Some(c) = self.cpus_per_task {
            let _ = writeln!(o, "#SBATCH --cpus-per-task={c}");
        }
        if let Some(g) = self.gpus_per_task {
            let _ = writeln!(o, "#SBATCH --gpus-per-task={g}");
        }
        if let Some(t) = &self.time {
            let _ = writeln!(o, "#SBATCH --time={t}");
        }
        self.common_lines(&mut o);
        let _ = writeln!(
            o,
            "#SBATCH --output={}",
            shell_quote(&self.logs().join("task-%A_%a.out").display().to_string())
        );
        let _ = writeln!(o, "#SBATCH --open-mode=append");
        let _ = writeln!(o, "#SBATCH --requeue");
        let _ = writeln!(
            o,
            "# {}s before the time limit, USR1 to this script: adiff finishes the run it is on,\n\
             # records it and exits with {EXIT_STOPPED}; the task then requeues itself.",
            self.warning_s()
        );
        let _ = writeln!(o, "#SBATCH --signal=B:USR1@{}", self.warning_s());
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "echo \"task ${{SLURM_ARRAY_TASK_ID}} of ${{SLURM_ARRAY_TASK_COUNT}} (job ${{SLURM_JOB_ID}}, try $((${{SLURM_RESTART_COUNT:-0}} + 1))) on $(hostname) at $(date -u +%FT%TZ)\""
        );
        let _ = writeln!(o, "{} &", command_line(&self.task_command));
        let _ = writeln!(o, "pid=$!");
        let _ = writeln!(o, "trap 'kill -USR1 \"$pid\" 2>/dev/null' USR1");
        let _ = writeln!(o, "wait \"$pid\"");
        let _ = writeln!(o, "rc=$?");
        let _ = writeln!(
            o,
            "# a trapped signal ends the first wait early: wait for adiff itself"
        );
        let _ = writeln!(o, "if [ \"$rc\" -gt 128 ]; then wait \"$pid\"; rc=$?; fi");
        let _ = writeln!(o, "if [ \"$rc\" -eq {EXIT_STOPPED} ]; then");
        let _ = writeln!(
            o,
            "    echo \"stopped before the time limit; requeueing to continue\""
        );
        let _ = writeln!(
            o,
            "    scontrol requeue \"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\""
        );
        let _ = writeln!(o, "fi");
        let _ = writeln!(o, "exit \"$rc\"");
        o
    }

    /// The merge script (submitted to run after the array, whatever its tasks' ends).
    pub fn merge_script(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "#!/bin/bash");
        let _ = writeln!(
            o,
            "# Merges the parts in {out}/shards/ into {out}: runs.csv, summary.json, report.md,\n\
             # plots. When runs are missing it writes nothing and lists them, with the commands\n\
             # that run them again. Submit after the array (JOBID: the array's job id):\n\
             #   sbatch --dependency=afterany:JOBID {merge}",
            out = self.out.display(),
            merge = self.out.join(SLURM_DIR).join(MERGE_SCRIPT).display(),
        );
        let _ = writeln!(o, "#SBATCH --job-name={}-merge", self.job_name);
        let _ = writeln!(o, "#SBATCH --ntasks=1");
        self.common_lines(&mut o);
        let _ = writeln!(
            o,
            "#SBATCH --output={}",
            shell_quote(&self.logs().join("merge-%j.out").display().to_string())
        );
        let _ = writeln!(o);
        let _ = writeln!(o, "exec {}", command_line(&self.merge_command));
        o
    }

    /// Write both scripts to `OUT/slurm/` (atomically) and create the log folder.
    pub fn write(&self) -> Result<Scripts> {
        self.validate()?;
        let dir = self.out.join(SLURM_DIR);
        let logs = self.logs();
        std::fs::create_dir_all(&logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
        let scripts = Scripts {
            array: dir.join(ARRAY_SCRIPT),
            merge: dir.join(MERGE_SCRIPT),
            logs,
        };
        crate::output::write_atomic(&scripts.array, self.array_script().as_bytes())?;
        crate::output::write_atomic(&scripts.merge, self.merge_script().as_bytes())?;
        Ok(scripts)
    }
}

/// Submit the array, then the merge job after it (`afterany`), with `sbatch`.
pub fn submit(scripts: &Scripts) -> Result<Submitted> {
    let array_id = sbatch(&scripts.array, &[])?;
    let merge_id = sbatch(
        &scripts.merge,
        &[format!("--dependency=afterany:{array_id}")],
    )
    .with_context(|| format!("the array is submitted as job {array_id}, the merge job is not"))?;
    Ok(Submitted { array_id, merge_id })
}

/// `sbatch --parsable [extra] SCRIPT`: the job id.
fn sbatch(script: &Path, extra: &[String]) -> Result<String> {
    let out = std::process::Command::new("sbatch")
        .arg("--parsable")
        .args(extra)
        .arg(script)
        .output()
        .map_err(|e| SlurmError::NoSbatch {
            dir: script.parent().map(Path::to_path_buf).unwrap_or_default(),
            why: e.to_string(),
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stdout.trim().split(';').next().unwrap_or("").trim();
    if !out.status.success() || id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        let message: Vec<&str> = stderr
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        return Err(SlurmError::Refused {
            script: script.to_path_buf(),
            status: out
                .status
                .code()
                .map_or_else(|| "none".into(), |c| c.to_string()),
            message: if message.is_empty() {
                "no message".into()
            } else {
                message.join(" / ")
            },
        }
        .into());
    }
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs() -> SlurmJobs {
        SlurmJobs {
            tasks: 4,
            job_name: "adiff-bench".into(),
            partition: Some("gpu".into()),
            account: None,
            gpus_per_task: Some(1),
            cpus_per_task: None,
            time: Some("04:00:00".into()),
            max_parallel: Some(2),
            workdir: "/home/me/sweep".into(),
            out: "/scratch/me/coco run".into(),
            task_command: vec![
                "/opt/adiff".into(),
                "bench".into(),
                "--prompts".into(),
                "it's.txt".into(),
            ],
            merge_command: vec!["/opt/adiff".into(), "bench".into(), "merge".into()],
            written_by: "test".into(),
        }
    }

    #[test]
    fn time_limits_read_as_slurm_writes_them() {
        for (t, s) in [
            ("30", 1800),
            ("30:15", 1815),
            ("04:00:00", 14_400),
            ("1-00", 86_400),
            ("1-02:30", 95_400),
            ("2-00:00:10", 172_810),
        ] {
            assert_eq!(time_limit_s(t), Ok(Some(s)), "{t}");
        }
        assert_eq!(time_limit_s("UNLIMITED"), Ok(None));
        for bad in ["", "4h", "1:2:3:4", "-1", "0", "1-", "a:b"] {
            let e = time_limit_s(bad).unwrap_err();
            assert!(
                e.to_string().contains("HH:MM:SS") || e.to_string().contains("no time"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn the_array_script_is_a_plain_requeueable_sbatch_array() {
        let j = jobs();
        j.validate().unwrap();
        let s = j.array_script();
        for line in [
            "#!/bin/bash",
            "#SBATCH --array=1-4%2",
            "#SBATCH --partition=gpu",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --time=04:00:00",
            "#SBATCH --requeue",
            "#SBATCH --signal=B:USR1@600",
            "#SBATCH --chdir=/home/me/sweep",
            "#SBATCH --output='/scratch/me/coco run/slurm/logs/task-%A_%a.out'",
            "/opt/adiff bench --prompts 'it'\\''s.txt' &",
            "    scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"",
        ] {
            assert!(s.lines().any(|l| l == line), "no line {line} in\n{s}");
        }
        assert!(!s.contains("--account"), "{s}");
        let m = j.merge_script();
        assert!(m.lines().any(|l| l == "exec /opt/adiff bench merge"), "{m}");
        assert!(!m.contains("--gpus"), "{m}");
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let mut j = jobs();
        j.partition = Some("gpu; rm -rf".into());
        assert!(matches!(
            j.validate(),
            Err(SlurmError::Invalid {
                setting: SlurmSetting::Partition,
                ..
            })
        ));
        let mut j = jobs();
        j.tasks = 0;
        assert!(j.validate().is_err());
        let mut j = jobs();
        j.time = Some("2 days".into());
        assert!(matches!(
            j.validate(),
            Err(SlurmError::Invalid {
                setting: SlurmSetting::Time,
                ..
            })
        ));
        // the warning comes before a short limit, not after it
        j.time = Some("2".into());
        assert_eq!(j.warning_s(), 60);
        j.time = Some("1".into());
        assert_eq!(j.warning_s(), 30);
    }
}
