//! Atomic output files: write to a temporary file beside the target, then rename, so a
//! failed or interrupted run never leaves a half-written output behind.

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Check that `path` can be created (its folder exists and is writable) before any work is
/// done, so a long run does not fail at the very end.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() {
        bail!("output path is empty");
    }
    if path.is_dir() {
        bail!(
            "output path {} is a directory; give a file name",
            path.display()
        );
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        bail!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            dir.display()
        );
    }
    let probe = temp_path(path);
    std::fs::File::create(&probe)
        .with_context(|| format!("cannot write {}: folder is not writable", path.display()))?;
    std::fs::remove_file(&probe).ok();
    Ok(())
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    parent_dir(path).join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// Write `path` atomically through `fill`, which writes the whole content to the file.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", path.display()))?;
        fill(&mut f)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result
}

/// Write an image as PNG, atomically.
pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::new(f);
        img.write_to(&mut w, image::ImageFormat::Png)
            .with_context(|| format!("cannot encode {}", path.display()))?;
        w.flush()
            .with_context(|| format!("cannot write {}", path.display()))
    })
}

/// Write a value as pretty-printed JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomic(path, text.as_bytes())
}

/// Write named tensors (stored as f32) to a safetensors file, atomically.
pub fn write_tensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a candle_core::Tensor)>,
) -> Result<()> {
    let map: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(k, t)| {
            let t = t
                .to_dtype(candle_core::DType::F32)?
                .to_device(&candle_core::Device::Cpu)?
                .contiguous()?;
            Ok((k.to_string(), t))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::tensor::serialize(&map, None)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_fill_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.png");
        let r = write_atomic_with(&p, |_| anyhow::bail!("encoder failed"));
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_folder_is_named() {
        let e = check_writable(Path::new("/nonexistent-dir-xyz/out.png")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
