//! Output files, written so that a failed or interrupted command never leaves a
//! half-written or wrong file behind, and never destroys what a path points at:
//!
//! * a regular file (or a new one) is written to a temporary file beside it, then renamed;
//! * a symlink is followed: its target is written (atomically, in the target's folder) and
//!   the link stays a link;
//! * a character device or a FIFO (`/dev/stdout`, `/dev/null`, a named pipe) is written
//!   directly; a directory, a block device or a socket is refused;
//! * every error names the path.
//!
//! [`Outputs`] writes the several outputs of one command together: it refuses one path
//! given for two outputs before any work starts, stages every file, and makes them appear
//! together or not at all.

mod batch;
pub mod clip;

pub use batch::Outputs;

use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Where the bytes for an output path really go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A regular file, existing or new (the symlinks on the way followed): written through
    /// a temporary file in its folder and a rename.
    File(PathBuf),
    /// A character device or a FIFO: written directly.
    Special(PathBuf),
}

impl Target {
    /// The path the bytes go to.
    pub fn path(&self) -> &Path {
        match self {
            Target::File(p) | Target::Special(p) => p,
        }
    }
}

/// Follow `path` through its symlinks to the file it names (which may not exist yet).
fn follow_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p)
                    .with_context(|| format!("cannot read the link {}", p.display()))?;
                p = if link.is_absolute() {
                    link
                } else {
                    parent_dir(&p).join(link)
                };
            }
            _ => return Ok(p),
        }
    }
    bail!(
        "cannot write {}: too many levels of symbolic links",
        path.display()
    )
}

/// Where `path`'s bytes go, or why it cannot be written (nothing is created).
pub fn target(path: &Path) -> Result<Target> {
    if path.as_os_str().is_empty() {
        bail!("output path is empty");
    }
    let real = follow_links(path)?;
    let shown = if real == path {
        path.display().to_string()
    } else {
        format!("{} (a link to {})", path.display(), real.display())
    };
    match std::fs::metadata(&real) {
        Ok(m) => {
            let t = m.file_type();
            if t.is_dir() {
                bail!("output path {shown} is a directory; give a file name");
            }
            if t.is_char_device() || t.is_fifo() {
                return Ok(Target::Special(real));
            }
            if t.is_block_device() || t.is_socket() {
                bail!(
                    "cannot write {shown}: it is a {}, not a file; give a file name",
                    if t.is_socket() {
                        "socket"
                    } else {
                        "block device"
                    }
                );
            }
            Ok(Target::File(real))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = parent_dir(&real);
            if !dir.is_dir() {
                bail!(
                    "cannot write {shown}: folder {} does not exist",
                    dir.display()
                );
            }
            Ok(Target::File(real))
        }
        Err(e) => Err(e).with_context(|| format!("cannot write {shown}")),
    }
}

/// Check that `path` can be written (its folder exists and is writable, it is no
/// directory) before any work is done, so a long run does not fail at the very end.
pub fn check_writable(path: &Path) -> Result<()> {
    match target(path)? {
        Target::Special(p) => {
            // Opening a FIFO would wait for its reader: ask for the permission instead.
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            // SAFETY: a valid NUL-terminated path; access(2) only reads it.
            if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("cannot write {}", path.display()));
            }
            Ok(())
        }
        Target::File(real) => {
            let probe = temp_path(&real);
            std::fs::File::create(&probe).with_context(|| {
                format!("cannot write {}: folder is not writable", path.display())
            })?;
            std::fs::remove_file(&probe).ok();
            Ok(())
        }
    }
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

/// The image format an output path's extension names: `.png` (or no extension, or a
/// device / FIFO), `.jpg` / `.jpeg`, `.webp`; any other extension is refused rather than
/// given PNG bytes under a name that says otherwise.
pub fn image_format(path: &Path) -> Result<image::ImageFormat> {
    let Some(ext) = path.extension() else {
        return Ok(image::ImageFormat::Png);
    };
    Ok(match ext.to_string_lossy().to_ascii_lowercase().as_str() {
        "png" => image::ImageFormat::Png,
        "jpg" | "jpeg" => image::ImageFormat::Jpeg,
        "webp" => image::ImageFormat::WebP,
        other => bail!(
            "{}: adiff cannot write .{} images; name the file .png, .jpg or .webp",
            path.display(),
            crate::field::cut(other, 20)
        ),
    })
}

/// `img` encoded in the format `path` names ([`image_format`]): JPEG at quality 95, WebP
/// lossless.
pub fn image_bytes(path: &Path, img: &image::RgbImage) -> Result<Vec<u8>> {
    let format = image_format(path)?;
    if format == image::ImageFormat::Png {
        return png_bytes(img);
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    let encoded = if format == image::ImageFormat::Jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(img)
    } else {
        img.write_to(&mut bytes, format)
    };
    encoded.with_context(|| format!("cannot encode {}", path.display()))?;
    Ok(bytes.into_inner())
}

/// Write `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes).map_err(Into::into))
}

/// Write `path` through `fill`, which writes the whole content: atomically for a file
/// (a symlink's target), directly for a device or a FIFO. Errors name `path`.
pub fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    let named = |r: Result<()>| r.with_context(|| format!("cannot write {}", path.display()));
    match target(path)? {
        Target::Special(p) => named((|| {
            let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
            fill(&mut f)?;
            f.flush()?;
            Ok(())
        })()),
        Target::File(real) => {
            let tmp = temp_path(&real);
            let result = named((|| {
                let mut f = std::fs::File::create(&tmp)?;
                fill(&mut f)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &real)?;
                Ok(())
            })());
            if result.is_err() {
                std::fs::remove_file(&tmp).ok();
            }
            result
        }
    }
}

/// An image as PNG bytes.
pub fn png_bytes(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .context("cannot encode the PNG")?;
    Ok(bytes.into_inner())
}

/// A value as pretty-printed JSON bytes.
pub fn json_bytes<T: serde::Serialize>(value: &T) -> Result<Vec<u8>> {
    Ok(serde_json::to_string_pretty(value)?.into_bytes())
}

/// Named tensors (stored as f32, on the CPU) as safetensors bytes.
pub fn tensor_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a str, &'a candle_core::Tensor)>,
) -> Result<Vec<u8>> {
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
    Ok(safetensors::tensor::serialize(&map, None)?)
}

/// Write an image as PNG, atomically.
pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    write_atomic(path, &png_bytes(img)?)
}

/// Write a value as pretty-printed JSON, atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, &json_bytes(value)?)
}

/// Write named tensors (stored as f32) to a safetensors file, atomically.
pub fn write_tensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a candle_core::Tensor)>,
) -> Result<()> {
    write_atomic(path, &tensor_bytes(tensors)?)
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
    fn a_symlink_stays_a_link_and_its_target_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("sub/real.json");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("sub/real.json", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A dangling link creates its target.
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink("sub/new.json", &dangling).unwrap();
        write_atomic(&dangling, b"x").unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("sub/new.json")).unwrap(),
            b"x"
        );
    }

    #[test]
    fn a_fifo_is_written_directly_and_stays_a_fifo() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(&fifo).unwrap())
        };
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        let t = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(t.is_fifo());
    }

    #[test]
    fn directories_and_devices_full_of_nothing_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_writable(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        if Path::new("/dev/full").exists() {
            let e = write_atomic(Path::new("/dev/full"), b"x").unwrap_err();
            assert!(format!("{e:#}").contains("/dev/full"), "{e:#}");
            assert!(Path::new("/dev/full").exists());
        }
    }

    #[test]
    fn missing_folder_is_named() {
        let e = check_writable(Path::new("/nonexistent-dir-xyz/out.png")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
