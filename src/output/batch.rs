//! The outputs of one command, written together: planned (and checked) before any work,
//! staged as they are produced, committed at the end — they appear together or not at all.

use super::{Target, target, temp_path};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What identifies the file behind a path: its inode when it exists, else its folder's
/// canonical path and its name.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    Inode(u64, u64),
    New(PathBuf),
}

fn identity(t: &Target) -> Result<Identity> {
    let p = t.path();
    if let Ok(m) = std::fs::metadata(p) {
        return Ok(Identity::Inode(m.dev(), m.ino()));
    }
    let dir = super::parent_dir(p)
        .canonicalize()
        .with_context(|| format!("cannot write {}", p.display()))?;
    Ok(Identity::New(dir.join(p.file_name().unwrap_or_default())))
}

/// One planned output.
struct Planned {
    /// What the caller calls it (e.g. its flag), for messages.
    label: String,
    /// The path as given.
    path: PathBuf,
    target: Target,
    /// Written so far: a temporary file beside a regular target, or the bytes for a
    /// device or FIFO (written at commit).
    staged: Option<Staged>,
}

enum Staged {
    Temp(PathBuf),
    Bytes(Vec<u8>),
}

/// The outputs of one command.
pub struct Outputs {
    planned: Vec<Planned>,
}

impl Outputs {
    /// Plan outputs `(label, path)`: each must be writable, and no two may be the same file
    /// (through links too). Nothing is created.
    pub fn plan<'a>(outputs: impl IntoIterator<Item = (&'a str, &'a Path)>) -> Result<Self> {
        let mut planned: Vec<Planned> = Vec::new();
        let mut ids: Vec<Identity> = Vec::new();
        for (label, path) in outputs {
            super::check_writable(path)?;
            let target = target(path)?;
            let id = identity(&target)?;
            if let Some(i) = ids.iter().position(|x| *x == id) {
                bail!(
                    "{} and {} name the same file {}: give each output its own path",
                    planned[i].label,
                    label,
                    path.display()
                );
            }
            ids.push(id);
            planned.push(Planned {
                label: label.to_string(),
                path: path.to_path_buf(),
                target,
                staged: None,
            });
        }
        Ok(Self { planned })
    }

    /// Refuse the outputs when one would replace an input `(what, path)`: the same file
    /// (through links too), or an existing file inside an input folder (a model folder's
    /// weights). Nothing is created.
    pub fn refuse_inputs(&self, inputs: &[(String, PathBuf)]) -> Result<()> {
        for (what, input) in inputs {
            let Ok(meta) = std::fs::metadata(input) else {
                continue;
            };
            let inside = if meta.is_dir() {
                input.canonicalize().ok()
            } else {
                None
            };
            for p in &self.planned {
                let hit = match (&inside, std::fs::metadata(p.target.path())) {
                    (Some(dir), Ok(m)) if m.is_file() => p
                        .target
                        .path()
                        .canonicalize()
                        .is_ok_and(|real| real.starts_with(dir)),
                    (None, Ok(m)) => (m.dev(), m.ino()) == (meta.dev(), meta.ino()),
                    _ => false,
                };
                if hit {
                    bail!(
                        "{} {} would replace {what} {}, which this command reads: an output never lands on an input; choose another path",
                        p.label,
                        p.path.display(),
                        input.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Stage the content of the planned output at `path`: a file's goes to a temporary
    /// file beside it now (so a full disk shows here, before anything is replaced).
    pub fn stage(&mut self, path: &Path, bytes: Vec<u8>) -> Result<()> {
        let Some(p) = self.planned.iter_mut().find(|p| p.path == path) else {
            bail!(
                "internal error: {} was not planned as an output",
                path.display()
            );
        };
        match &p.target {
            Target::Special(_) => p.staged = Some(Staged::Bytes(bytes)),
            Target::File(real) => {
                let tmp = temp_path(real);
                let written = (|| -> std::io::Result<()> {
                    let mut f = std::fs::File::create(&tmp)?;
                    f.write_all(&bytes)?;
                    f.sync_all()
                })();
                if let Err(e) = written {
                    std::fs::remove_file(&tmp).ok();
                    return Err(e).with_context(|| format!("cannot write {}", path.display()));
                }
                p.staged = Some(Staged::Temp(tmp));
            }
        }
        Ok(())
    }

    /// Make the staged outputs appear: devices and FIFOs are written, then the files
    /// renamed into place. On a failure the files already renamed are put back as they
    /// were: a file they replaced is restored, a new one removed.
    pub fn commit(mut self) -> Result<()> {
        for p in &mut self.planned {
            if let Some(Staged::Bytes(bytes)) = &p.staged {
                let r = (|| -> std::io::Result<()> {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(p.target.path())?;
                    f.write_all(bytes)?;
                    f.flush()
                })();
                r.with_context(|| format!("cannot write {}", p.path.display()))?;
                p.staged = None;
            }
        }
        // Each file replaced keeps a hard link to its old contents until every rename has
        // succeeded, so that a failed rename can put the earlier ones back as they were.
        let mut renamed: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
        for p in &mut self.planned {
            if let Some(Staged::Temp(tmp)) = &p.staged {
                let real = p.target.path().to_path_buf();
                let old = keep_old(&real);
                if let Err(e) = std::fs::rename(tmp, &real) {
                    if let Some(old) = old {
                        std::fs::remove_file(old).ok();
                    }
                    for (r, old) in renamed.iter().rev() {
                        match old {
                            Some(old) => std::fs::rename(old, r).ok(),
                            None => std::fs::remove_file(r).ok(),
                        };
                    }
                    return Err(e).with_context(|| format!("cannot write {}", p.path.display()));
                }
                p.staged = None;
                renamed.push((real, old));
            }
        }
        for (_, old) in renamed {
            if let Some(old) = old {
                std::fs::remove_file(old).ok();
            }
        }
        Ok(())
    }
}

/// A hard link to the file at `real` (beside it), when there is one to keep; `None` when
/// there is no old file or the file system cannot link (then a failed commit removes the
/// new file instead of restoring the old one).
fn keep_old(real: &Path) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(real).ok()?;
    if !meta.is_file() {
        return None;
    }
    let name = real.file_name()?.to_string_lossy();
    let old = real.with_file_name(format!(".{name}.adiff-old-{}", std::process::id()));
    std::fs::remove_file(&old).ok();
    std::fs::hard_link(real, &old).ok()?;
    Some(old)
}

impl Drop for Outputs {
    fn drop(&mut self) {
        for p in &self.planned {
            if let Some(Staged::Temp(tmp)) = &p.staged {
                std::fs::remove_file(tmp).ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn outputs_appear_together_at_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.json"));
        let mut out = Outputs::plan([("--out", a.as_path()), ("--trace", b.as_path())]).unwrap();
        out.stage(&a, b"png".to_vec()).unwrap();
        out.stage(&b, b"{}".to_vec()).unwrap();
        assert!(
            !a.exists() && !b.exists(),
            "nothing appears before the commit"
        );
        out.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"png");
        assert_eq!(names(dir.path()), ["a.png", "b.json"]);
    }

    #[test]
    fn a_rename_that_fails_puts_the_earlier_outputs_back() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a.png"),
            dir.path().join("b.json"),
            dir.path().join("c.json"),
        );
        std::fs::write(&a, b"old a").unwrap();
        let mut out = Outputs::plan([
            ("--out", a.as_path()),
            ("--trace", b.as_path()),
            ("--latents-out", c.as_path()),
        ])
        .unwrap();
        out.stage(&a, b"new a".to_vec()).unwrap();
        out.stage(&b, b"new b".to_vec()).unwrap();
        out.stage(&c, b"new c".to_vec()).unwrap();
        // The third rename fails: its staged file is gone.
        let Some(Staged::Temp(tmp)) = &out.planned[2].staged else {
            panic!("c is staged in a temporary file");
        };
        std::fs::remove_file(tmp).unwrap();
        let e = out.commit().unwrap_err();
        assert!(format!("{e:#}").contains("c.json"), "{e:#}");
        assert_eq!(
            std::fs::read(&a).unwrap(),
            b"old a",
            "the replaced file is back"
        );
        assert_eq!(names(dir.path()), ["a.png"], "nothing else is left");
        // A commit that succeeds leaves no kept copies.
        let mut out = Outputs::plan([("--out", a.as_path())]).unwrap();
        out.stage(&a, b"newer".to_vec()).unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"newer");
        assert_eq!(names(dir.path()), ["a.png"]);
    }

    #[test]
    fn a_failed_command_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.png"), dir.path().join("b.json"));
        std::fs::write(&a, b"old").unwrap();
        let mut out = Outputs::plan([("--out", a.as_path()), ("--trace", b.as_path())]).unwrap();
        out.stage(&a, b"new".to_vec()).unwrap();
        drop(out); // the command failed before its trace
        assert_eq!(std::fs::read(&a).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["a.png"]);
    }

    #[test]
    fn one_file_for_two_outputs_is_refused_through_links_too() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let e = Outputs::plan([("--out", a.as_path()), ("--trace", a.as_path())])
            .err()
            .unwrap();
        assert!(
            e.to_string()
                .contains("--out and --trace name the same file"),
            "{e}"
        );
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(Outputs::plan([("--out", a.as_path()), ("--trace", link.as_path())]).is_err());
        assert_eq!(names(dir.path()), ["link.json"]);
    }

    #[test]
    fn a_full_device_fails_the_commit_and_the_files_do_not_appear() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            eprintln!("skipped: this machine has no /dev/full");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let mut out = Outputs::plan([("--out", a.as_path()), ("--trace", full)]).unwrap();
        out.stage(&a, b"png".to_vec()).unwrap();
        out.stage(full, b"{}".to_vec()).unwrap();
        let e = out.commit().unwrap_err();
        assert!(format!("{e:#}").contains("/dev/full"), "{e:#}");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
}
