//! Sharding a benchmark: the K-th of N disjoint parts of its planned runs, each part whole
//! prompt × seed × scheduler groups (so each baseline is computed once, in the part that
//! uses it), split deterministically from the plan and balanced by planned work.
//!
//! A part runs into `OUT/shards/K-of-N/` like any benchmark (and resumes like one); its
//! `bench.json` carries a [`ShardRecord`] that [`super::merge`] checks the parts against.

use serde::{Deserialize, Serialize};

/// The folder of `OUT` that holds the parts.
pub const SHARDS_DIR: &str = "shards";

/// Part `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// 1 ..= count.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

/// A part as asked for: given, or read from the Slurm array task's environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSpec {
    /// `K/N`.
    Part(Shard),
    /// From `SLURM_ARRAY_TASK_ID` and the array's bounds.
    Auto,
}

/// Why a part cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not `K/N` or `auto`.
    #[error("'{0}' is not K/N (the K-th of N parts, e.g. 2/8) or auto")]
    Syntax(String),
    /// N is 0.
    #[error("'{0}' has no parts: N must be at least 1")]
    NoParts(String),
    /// K outside 1..=N.
    #[error(
        "part {index} of {count} does not exist: K counts from 1 to N (1/{count} … {count}/{count})"
    )]
    OutOfRange {
        /// K.
        index: usize,
        /// N.
        count: usize,
    },
    /// `auto` outside a Slurm array task.
    #[error(
        "auto reads the part from a Slurm array task, but SLURM_ARRAY_TASK_ID is not set: give K/N, or run inside a job array (sbatch --array=1-N)"
    )]
    NotInArray,
    /// A Slurm variable that is not a number.
    #[error("{name}='{value}' is not a whole number")]
    BadEnv {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
    },
    /// An array whose task ids are not contiguous.
    #[error(
        "array task {id} is not one of {count} contiguous tasks from {min}: submit the array as a range (sbatch --array={min}-{max_expected})"
    )]
    NotContiguous {
        /// SLURM_ARRAY_TASK_ID.
        id: usize,
        /// SLURM_ARRAY_TASK_MIN.
        min: usize,
        /// SLURM_ARRAY_TASK_COUNT.
        count: usize,
        /// The last id a contiguous array of `count` tasks has.
        max_expected: usize,
    },
}

impl Shard {
    /// Part `index` of `count`, checked.
    pub fn new(index: usize, count: usize) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::NoParts(format!("{index}/{count}")));
        }
        if index == 0 || index > count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// The part's folder name under `OUT/shards/`: `K-of-N`.
    pub fn dir_name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }

    /// The part a folder name stands for, if it is one.
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let (k, n) = name.split_once("-of-")?;
        Self::new(k.parse().ok()?, n.parse().ok()?).ok()
    }

    /// `K/N`.
    pub fn spec(&self) -> String {
        format!("{}/{}", self.index, self.count)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.dir_name())
    }
}

impl std::str::FromStr for ShardSpec {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, ShardError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let syntax = || ShardError::Syntax(s.to_string());
        let (k, n) = t.split_once('/').ok_or_else(syntax)?;
        let k: usize = k.trim().parse().map_err(|_| syntax())?;
        let n: usize = n.trim().parse().map_err(|_| syntax())?;
        if n == 0 {
            return Err(ShardError::NoParts(s.to_string()));
        }
        Shard::new(k, n).map(Self::Part)
    }
}

impl ShardSpec {
    /// The part: as given, or from a Slurm array task's variables (`var` looks one up):
    /// `SLURM_ARRAY_TASK_ID` counted from `SLURM_ARRAY_TASK_MIN`, of
    /// `SLURM_ARRAY_TASK_COUNT` tasks (or `_MAX − _MIN + 1`).
    pub fn resolve(self, var: impl Fn(&str) -> Option<String>) -> Result<Shard, ShardError> {
        if let Self::Part(s) = self {
            return Ok(s);
        }
        let num = |name: &'static str| -> Result<Option<usize>, ShardError> {
            match var(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| ShardError::BadEnv { name, value: v }),
            }
        };
        let id = num("SLURM_ARRAY_TASK_ID")?.ok_or(ShardError::NotInArray)?;
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0).min(id);
        let count = match (num("SLURM_ARRAY_TASK_COUNT")?, num("SLURM_ARRAY_TASK_MAX")?) {
            (Some(c), _) => c,
            (None, Some(max)) => max.saturating_sub(min) + 1,
            (None, None) => return Err(ShardError::NotInArray),
        };
        let index = id - min + 1;
        if count == 0 || index > count {
            return Err(ShardError::NotContiguous {
                id,
                min,
                count,
                max_expected: min + count.max(1) - 1,
            });
        }
        Shard::new(index, count)
    }
}

/// The part (0-based) each group goes to: whole groups, balanced by `costs` (each group's
/// planned work): the costliest group first to the least loaded part (ties: the earlier
/// group, the lower part), so the split depends on the plan alone.
pub fn assign(costs: &[u64], count: usize) -> Vec<usize> {
    let count = count.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0u64; count];
    let mut part = vec![0; costs.len()];
    for g in order {
        let least = (0..count).min_by_key(|&p| (load[p], p)).unwrap_or(0);
        part[g] = least;
        load[least] += costs[g];
    }
    part
}

/// A part's record in its `bench.json`: which part of which plan it ran, and how to run it
/// again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// K.
    pub index: usize,
    /// N.
    pub count: usize,
    /// A digest of the whole plan (every run id and the part it belongs to).
    pub plan_digest: String,
    /// Runs of the whole plan.
    pub plan_runs: usize,
    /// The setting labels, in run order.
    pub settings: Vec<String>,
    /// This part's groups (`p{prompt}-s{seed}-{scheduler}`), in run order.
    pub groups: Vec<String>,
    /// The command line that ran it, as arguments.
    pub args: Vec<String>,
    /// The folder it ran in (its command's relative paths start there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<std::path::PathBuf>,
    /// The host of each start and resume.
    pub hosts: Vec<String>,
}

impl ShardRecord {
    /// The part.
    pub fn shard(&self) -> Shard {
        Shard {
            index: self.index,
            count: self.count,
        }
    }

    /// The run ids of this part, in run order.
    pub fn run_ids(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| self.settings.iter().map(move |s| format!("{g}-{s}")))
            .collect()
    }
}

/// The key of a prompt × seed × scheduler group (a run id without its setting).
pub fn group_key(prompt_index: usize, seed: u64, scheduler: &str) -> String {
    format!("p{prompt_index}-s{seed}-{scheduler}")
}

/// FNV-1a, 64 bits, of `parts` (each followed by a newline), as 16 hex digits.
pub fn digest<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([b'\n']) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn parts_parse_and_bad_ones_say_why() {
        assert_eq!(
            "2/4".parse::<ShardSpec>(),
            Ok(ShardSpec::Part(Shard { index: 2, count: 4 }))
        );
        assert_eq!(" AUTO ".parse::<ShardSpec>(), Ok(ShardSpec::Auto));
        for (bad, err) in [
            ("0/4", ShardError::OutOfRange { index: 0, count: 4 }),
            ("5/4", ShardError::OutOfRange { index: 5, count: 4 }),
            ("1/0", ShardError::NoParts("1/0".into())),
            ("2", ShardError::Syntax("2".into())),
            ("a/b", ShardError::Syntax("a/b".into())),
            ("-1/4", ShardError::Syntax("-1/4".into())),
        ] {
            assert_eq!(bad.parse::<ShardSpec>(), Err(err), "{bad}");
        }
        let msg = "5/4".parse::<ShardSpec>().unwrap_err().to_string();
        assert!(msg.contains("1 to N") && msg.contains("4/4"), "{msg}");
    }

    #[test]
    fn auto_reads_the_slurm_array_task() {
        let auto = ShardSpec::Auto;
        // --array=1-4: ids 1..=4
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        assert_eq!(auto.resolve(e), Ok(Shard { index: 3, count: 4 }));
        // --array=0-7 without a COUNT
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
        ]);
        assert_eq!(auto.resolve(e), Ok(Shard { index: 1, count: 8 }));
        assert_eq!(auto.resolve(env(&[])), Err(ShardError::NotInArray));
        let e = env(&[("SLURM_ARRAY_TASK_ID", "x")]);
        assert!(matches!(auto.resolve(e), Err(ShardError::BadEnv { .. })));
        // --array=0-15:4 (ids 0, 4, 8, 12; COUNT 4)
        let e = env(&[
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_MAX", "12"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ]);
        let msg = auto.resolve(e).unwrap_err().to_string();
        assert!(msg.contains("--array=0-3"), "{msg}");
        // a given part ignores the environment
        let part = ShardSpec::Part(Shard { index: 1, count: 2 });
        assert_eq!(part.resolve(env(&[])), Ok(Shard { index: 1, count: 2 }));
    }

    #[test]
    fn the_split_is_whole_disjoint_covering_and_balanced_by_work() {
        // equal groups: round robin
        assert_eq!(assign(&[5; 6], 4), vec![0, 1, 2, 3, 0, 1]);
        // unequal work: no part exceeds the lightest by more than the costliest group
        let costs: Vec<u64> = (0..37).map(|i| 10 + (i * 7919 % 23) as u64).collect();
        for n in 1..=8 {
            let part = assign(&costs, n);
            assert_eq!(part.len(), costs.len());
            let mut load = vec![0u64; n];
            for (g, &p) in part.iter().enumerate() {
                assert!(p < n);
                load[p] += costs[g];
            }
            let (lo, hi) = (load.iter().min().unwrap(), load.iter().max().unwrap());
            assert!(hi - lo <= *costs.iter().max().unwrap(), "{n}: {load:?}");
            assert_eq!(load.iter().sum::<u64>(), costs.iter().sum::<u64>());
            // deterministic
            assert_eq!(assign(&costs, n), part);
        }
        // a heavy group is not paired with others while parts are lighter
        assert_eq!(assign(&[1, 1, 10, 1], 2), vec![1, 1, 0, 1]);
    }

    #[test]
    fn folder_names_round_trip() {
        let s = Shard::new(3, 12).unwrap();
        assert_eq!(s.dir_name(), "3-of-12");
        assert_eq!(Shard::from_dir_name("3-of-12"), Some(s));
        assert_eq!(Shard::from_dir_name("13-of-12"), None);
        assert_eq!(Shard::from_dir_name("notes"), None);
        assert_ne!(digest(["a", "b"]), digest(["ab"]));
    }
}
