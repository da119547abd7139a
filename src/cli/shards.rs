//! `adiff bench` as a command with two subcommands for benchmarks that run in parts:
//! `adiff bench merge OUT` and `adiff bench slurm … --tasks N`.

use super::bench::{BenchArgs, run_bench_cmd};
use crate::bench::merge::{self, Incomplete};
use crate::bench::shard::Shard;
use crate::bench::slurm::{self, SlurmError, SlurmJobs, SlurmSetting, shell_quote};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `adiff bench [OPTIONS]`, `adiff bench merge OUT` or `adiff bench slurm [OPTIONS]`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchCommand {
    /// Merge the parts of a sharded benchmark, or run one on Slurm.
    #[command(subcommand)]
    pub sub: Option<BenchSub>,
    /// The benchmark.
    #[command(flatten)]
    pub run: BenchArgs,
}

/// What `adiff bench` does besides running a benchmark.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchSub {
    /// Merge the parts in OUT/shards/K-of-N/ (from --shard) into one benchmark in OUT:
    /// runs.csv, summary.json, report.md, plots. Refuses parts of different plans, and
    /// lists missing runs with the commands that run them.
    Merge(MergeArgs),
    /// Write an sbatch job array (one task per part, requeueable) and a merge job to
    /// OUT/slurm/, and with --submit submit them.
    Slurm(Box<SlurmArgs>),
}

/// `adiff bench merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The benchmark's folder (the --out of its parts).
    pub out: PathBuf,
}

/// A part's command line without its `--shard K/N` (or `--shard=…`): the command of the
/// whole benchmark the parts make up, for the merged report.
fn without_shard(command: &str) -> String {
    let mut out: Vec<&str> = vec![];
    let mut words = command.split(' ');
    while let Some(w) = words.next() {
        if w == "--shard" {
            words.next();
        } else if !w.starts_with("--shard=") {
            out.push(w);
        }
    }
    out.join(" ")
}

/// `adiff bench slurm`.
#[derive(Debug, Clone, Args)]
// Each task picks its own part: --shard is refused here, so its help is not shown.
#[command(mut_arg("shard", |a| a.hide(true)))]
pub struct SlurmArgs {
    /// The benchmark, as for `adiff bench` (without --shard: each task picks its part).
    #[command(flatten)]
    pub bench: BenchArgs,
    /// Array tasks: the parts the plan is split into.
    #[arg(long)]
    pub tasks: usize,
    /// Partition (sbatch --partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// GPUs per task (sbatch --gpus-per-task).
    #[arg(long)]
    pub gpus_per_task: Option<u32>,
    /// CPUs per task (sbatch --cpus-per-task).
    #[arg(long)]
    pub cpus_per_task: Option<u32>,
    /// Time limit per task, as sbatch takes it (e.g. 04:00:00, 1-00:00:00); a task is
    /// told to stop between runs before it, and requeues itself to continue.
    #[arg(long)]
    pub time: Option<String>,
    /// Account to charge (sbatch --account).
    #[arg(long)]
    pub account: Option<String>,
    /// Tasks running at once (sbatch --array=1-N%M).
    #[arg(long)]
    pub max_parallel: Option<usize>,
    /// Job name of the array (the merge job's gets -merge).
    #[arg(long, default_value = "adiff-bench")]
    pub job_name: String,
    /// Print the scripts on stdout too.
    #[arg(long)]
    pub print: bool,
    /// Submit them with sbatch (the merge job after the array: afterany).
    #[arg(long)]
    pub submit: bool,
}

/// The flags of `slurm` that are not `bench`'s: (name, takes a value).
const SLURM_FLAGS: [(&str, bool); 10] = [
    ("--tasks", true),
    ("--partition", true),
    ("--gpus-per-task", true),
    ("--cpus-per-task", true),
    ("--time", true),
    ("--account", true),
    ("--max-parallel", true),
    ("--job-name", true),
    ("--print", false),
    ("--submit", false),
];

/// Run `adiff bench …`.
pub fn run(c: &BenchCommand) -> Result<()> {
    match &c.sub {
        Some(BenchSub::Merge(m)) => merge_cmd(m),
        Some(BenchSub::Slurm(s)) => slurm_cmd(s),
        None => run_bench_cmd(&c.run),
    }
}

/// `adiff bench merge OUT`.
fn merge_cmd(m: &MergeArgs) -> Result<()> {
    let merged = match merge::merge(&m.out, &without_shard) {
        Ok(x) => x,
        Err(e) => {
            if let Some(inc) = e.downcast_ref::<Incomplete>() {
                eprintln!("{}", rerun_lines(inc));
            }
            return Err(e);
        }
    };
    let s = &merged.summary;
    let hosts = s
        .meta
        .merged
        .as_ref()
        .map(|r| r.hosts.join(", "))
        .unwrap_or_default();
    eprintln!(
        "merged {} parts (run on {hosts}) into {}: {} runs{}; wrote runs.csv, summary.json, report.md and plots",
        merged.parts,
        m.out.display(),
        s.runs_done,
        if merged.duplicates > 0 {
            format!(
                ", {} found twice (a requeued part) counted once",
                merged.duplicates
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The commands that run the parts with missing runs again, one per line.
fn rerun_lines(inc: &Incomplete) -> String {
    let mut lines = vec!["to run the missing parts (each resumes where it stopped):".to_string()];
    for p in &inc.parts {
        let cd = p
            .workdir
            .as_ref()
            .map(|d| format!("cd {} && ", shell_quote(&d.display().to_string())))
            .unwrap_or_default();
        lines.push(format!("  {cd}{}", rerun_command(&p.args, p.shard)));
    }
    lines.join("\n")
}

/// A part's command line with `--shard K/N` and `--resume`.
pub fn rerun_command(args: &[String], shard: Shard) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = args.iter();
    let mut has_shard = false;
    while let Some(a) = it.next() {
        if a == "--shard" {
            it.next();
            out.push("--shard".into());
            out.push(shard.spec());
            has_shard = true;
        } else if a.starts_with("--shard=") {
            out.push(format!("--shard={}", shard.spec()));
            has_shard = true;
        } else {
            out.push(a.clone());
        }
    }
    if !has_shard {
        out.extend(["--shard".into(), shard.spec()]);
    }
    if !out.iter().any(|a| a == "--resume") {
        out.push("--resume".into());
    }
    out.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The arguments of `bench` among `slurm`'s (everything but the Slurm flags).
fn bench_args_of(slurm_args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = slurm_args.iter();
    while let Some(a) = it.next() {
        let name = a.split('=').next().unwrap_or(a);
        match SLURM_FLAGS.iter().find(|(f, _)| *f == name) {
            Some((_, true)) if !a.contains('=') => {
                it.next();
            }
            Some(_) => {}
            None => out.push(a.clone()),
        }
    }
    out
}

/// The Slurm settings' flags.
fn flag(s: SlurmSetting) -> &'static str {
    match s {
        SlurmSetting::Tasks => "--tasks",
        SlurmSetting::Partition => "--partition",
        SlurmSetting::Account => "--account",
        SlurmSetting::Time => "--time",
        SlurmSetting::MaxParallel => "--max-parallel",
        SlurmSetting::JobName => "--job-name",
    }
}

/// `adiff bench slurm`.
fn slurm_cmd(a: &SlurmArgs) -> Result<()> {
    if a.bench.shard.is_some() {
        bail!(
            "--shard: each task of the array picks its own part (--shard auto); leave --shard out of adiff bench slurm"
        );
    }
    let opts = a.bench.to_options()?;
    let groups = opts.prompts.len() * opts.seeds.len() * opts.schedulers.len();
    if a.tasks > groups {
        bail!(
            "--tasks {}: the plan has {groups} prompt × seed × scheduler groups, and each task needs one; use --tasks {groups} or fewer",
            a.tasks
        );
    }
    let argv: Vec<String> = std::env::args().collect();
    let at = argv
        .iter()
        .position(|x| x == "slurm")
        .context("the command line has no 'slurm'")?;
    let exe = std::env::current_exe().context("cannot find the adiff executable")?;
    let exe = exe.display().to_string();
    let mut task_command = vec![exe.clone(), "bench".to_string()];
    task_command.extend(bench_args_of(&argv[at + 1..]));
    task_command.extend(["--shard".into(), "auto".into()]);
    if !task_command.iter().any(|x| x == "--resume") {
        task_command.push("--resume".into());
    }
    let out_arg = a.bench.out_dir()?;
    let out =
        std::path::absolute(out_arg).with_context(|| format!("--out {}", out_arg.display()))?;
    let jobs = SlurmJobs {
        tasks: a.tasks,
        job_name: a.job_name.clone(),
        partition: a.partition.clone(),
        account: a.account.clone(),
        gpus_per_task: a.gpus_per_task,
        cpus_per_task: a.cpus_per_task,
        time: a.time.clone(),
        max_parallel: a.max_parallel,
        workdir: std::env::current_dir().context("cannot read the current folder")?,
        out: out.clone(),
        task_command,
        merge_command: vec![
            exe,
            "bench".into(),
            "merge".into(),
            out.display().to_string(),
        ],
        written_by: format!(
            "adiff {} on {}: {}",
            env!("CARGO_PKG_VERSION"),
            crate::bench::utc_now(),
            crate::bench::command_line()
        ),
    };
    if let Err(e) = jobs.validate() {
        return Err(match &e {
            SlurmError::Invalid { setting, .. } => anyhow::anyhow!("{} {e}", flag(*setting)),
            _ => e.into(),
        });
    }
    let scripts = jobs.write()?;
    if a.print {
        println!("{}", jobs.array_script());
        println!("{}", jobs.merge_script());
    }
    eprintln!(
        "wrote {} (an array of {} tasks) and {}; task logs go to {}",
        scripts.array.display(),
        a.tasks,
        scripts.merge.display(),
        scripts.logs.display()
    );
    if !a.submit {
        eprintln!(
            "submit with:\n  jobid=$(sbatch --parsable {})\n  sbatch --dependency=afterany:$jobid {}\n(or run this command again with --submit)",
            shell_quote(&scripts.array.display().to_string()),
            shell_quote(&scripts.merge.display().to_string())
        );
        return Ok(());
    }
    let sub = slurm::submit(&scripts)?;
    println!("array job {}", sub.array_id);
    println!("merge job {}", sub.merge_id);
    eprintln!(
        "submitted: array job {} ({} tasks), merge job {} after it\nwatch:   squeue -j {},{}\nlogs:    {}/task-{}_*.out\nreport:  {}/report.md once job {} has run (its log: {}/merge-{}.out)",
        sub.array_id,
        a.tasks,
        sub.merge_id,
        sub.array_id,
        sub.merge_id,
        scripts.logs.display(),
        sub.array_id,
        out.display(),
        sub.merge_id,
        scripts.logs.display(),
        sub.merge_id
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_merged_command_is_the_parts_without_their_shard() {
        assert_eq!(
            without_shard("adiff bench --prompts p.txt --shard auto --out o --resume"),
            "adiff bench --prompts p.txt --out o --resume"
        );
        assert_eq!(
            without_shard("adiff bench --shard=2/3 --out 'my dir'"),
            "adiff bench --out 'my dir'"
        );
    }

    #[test]
    fn slurm_help_leaves_out_shard_which_is_still_parsed_to_be_refused() {
        use clap::{Args, FromArgMatches};
        let mut cmd = SlurmArgs::augment_args(clap::Command::new("slurm"));
        let help = cmd.render_long_help().to_string();
        assert!(
            help.contains("--tasks") && !help.contains("--shard"),
            "{help}"
        );
        let m = cmd
            .try_get_matches_from([
                "slurm",
                "--prompts",
                "p",
                "--out",
                "o",
                "--tasks",
                "2",
                "--shard",
                "1/2",
            ])
            .unwrap();
        let a = SlurmArgs::from_arg_matches(&m).unwrap();
        assert!(a.bench.shard.is_some());
    }

    #[test]
    fn the_task_command_is_the_bench_command_without_the_slurm_flags() {
        let got = bench_args_of(&v(
            "--prompts p.txt --tasks 4 --partition=gpu --time 1:00:00 --print --steps 20 --submit --out o",
        ));
        assert_eq!(got, v("--prompts p.txt --steps 20 --out o"));
    }

    #[test]
    fn a_rerun_names_its_part_and_resumes() {
        let shard = Shard::new(2, 4).unwrap();
        assert_eq!(
            rerun_command(
                &v("/x/adiff bench --prompts p.txt --shard auto --out o"),
                shard
            ),
            "/x/adiff bench --prompts p.txt --shard 2/4 --out o --resume"
        );
        let args: Vec<String> = [
            "adiff",
            "bench",
            "--shard=1/4",
            "--resume",
            "--out",
            "my out",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            rerun_command(&args, shard),
            "adiff bench --shard=2/4 --resume --out 'my out'"
        );
    }

    #[test]
    fn merge_and_slurm_parse_without_the_bench_flags() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["adiff", "bench", "merge", "out"]).unwrap();
        let Some(crate::cli::Command::Bench(b)) = cli.command else {
            panic!("not bench")
        };
        assert!(matches!(b.sub, Some(BenchSub::Merge(_))) && b.run.out.is_none());
        let cli = crate::cli::Cli::try_parse_from([
            "adiff",
            "bench",
            "slurm",
            "--prompts",
            "p",
            "--out",
            "o",
            "--tasks",
            "3",
        ])
        .unwrap();
        let Some(crate::cli::Command::Bench(b)) = cli.command else {
            panic!("not bench")
        };
        assert!(matches!(b.sub, Some(BenchSub::Slurm(ref s)) if s.tasks == 3));
        let cli =
            crate::cli::Cli::try_parse_from(["adiff", "bench", "--prompts", "p", "--out", "o"])
                .unwrap();
        let Some(crate::cli::Command::Bench(b)) = cli.command else {
            panic!("not bench")
        };
        assert!(b.sub.is_none() && b.run.out.is_some());
        // a plain bench still needs its flags
        assert!(crate::cli::Cli::try_parse_from(["adiff", "bench", "--out", "o"]).is_err());
        assert!(
            crate::cli::Cli::try_parse_from(["adiff", "bench", "--shard", "0/4"])
                .unwrap_err()
                .to_string()
                .contains("1 to N")
        );
    }
}
