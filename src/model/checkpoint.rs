//! Safetensors files: header validation before anything is memory-mapped, and the
//! `VarBuilder` over them.
//!
//! candle memory-maps weights files; a truncated download would otherwise surface as a
//! confusing error deep inside a layer constructor (or, for some layouts, as a fault). Every
//! file is therefore checked first: the header must parse, every tensor's byte range must fit
//! its dtype and shape, and the data section must end exactly where the file ends.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::error::ModelError;

/// The largest header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor entry of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The stored dtype name (`F32`, `F16`, `BF16`, `I64`, ...).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
}

/// A validated safetensors file: its path and what it holds.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    /// The file.
    pub path: PathBuf,
    /// Tensor name → dtype and shape.
    pub tensors: BTreeMap<String, TensorInfo>,
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Read and validate a safetensors header against the file's length.
pub fn check_safetensors(path: &Path) -> Result<CheckedFile> {
    let corrupt = |reason: String| ModelError::CorruptWeights {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path)
        .with_context(|| format!("could not open weights file {}", path.display()))?;
    let file_len = file
        .metadata()
        .with_context(|| format!("could not read the size of {}", path.display()))?
        .len();
    if file_len < 8 {
        return Err(corrupt(format!(
            "the file is {file_len} bytes, too short for a safetensors header"
        ))
        .into());
    }
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .with_context(|| format!("could not read {}", path.display()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || header_len > file_len - 8 {
        return Err(corrupt(format!(
            "the header claims {header_len} bytes but the file holds {file_len} bytes (not a safetensors file, or cut short)"
        ))
        .into());
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .with_context(|| format!("could not read {}", path.display()))?;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| corrupt(format!("the header is not valid JSON ({e})")))?;

    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    let mut data_end = 0u64;
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| corrupt(format!("tensor '{name}': {what}"));
        let dtype = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("no dtype"))?
            .to_string();
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of sizes"))?;
        let offsets: Vec<u64> = entry
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no data_offsets"))?
            .iter()
            .map(|d| d.as_u64())
            .collect::<Option<_>>()
            .ok_or_else(|| bad("data_offsets are not byte offsets"))?;
        let [begin, end] = offsets[..] else {
            return Err(bad("data_offsets must hold two numbers").into());
        };
        let size = dtype_size(&dtype).ok_or_else(|| bad(&format!("unknown dtype {dtype}")))?;
        let numel: u64 = shape.iter().map(|&d| d as u64).product();
        if end < begin || end - begin != numel * size {
            return Err(bad(&format!(
                "byte range {begin}..{end} does not hold a {dtype} tensor of shape {shape:?}"
            ))
            .into());
        }
        if end > data_len {
            return Err(corrupt(format!(
                "tensor '{name}' ends at byte {end} of the data section but the file only holds {data_len} data bytes (the download was cut short)"
            ))
            .into());
        }
        data_end = data_end.max(end);
        tensors.insert(name, TensorInfo { dtype, shape });
    }
    if data_end != data_len {
        return Err(corrupt(format!(
            "the header describes {data_end} data bytes but the file holds {data_len}"
        ))
        .into());
    }
    Ok(CheckedFile {
        path: path.to_path_buf(),
        tensors,
    })
}

/// Validate the files, then memory-map them into a `VarBuilder` of the given dtype.
pub fn var_builder(
    files: &[CheckedFile],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    // SAFETY: the files were validated just above (header parses, offsets fit the length);
    // the mapping is read-only, and the weights files are not expected to be modified while
    // the model is loaded (the same contract as every safetensors loader).
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&paths, dtype, device) }.with_context(
        || {
            format!(
                "could not map weights {}",
                paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
    )?;
    Ok(vb)
}

/// Check every file of a (possibly sharded) checkpoint.
pub fn check_all(paths: &[PathBuf]) -> Result<Vec<CheckedFile>> {
    paths.iter().map(|p| check_safetensors(p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;
    use std::collections::HashMap;

    fn write_sample(path: &Path) {
        let mut map = HashMap::new();
        map.insert(
            "a".to_string(),
            Tensor::arange(0f32, 12., &Device::Cpu)
                .unwrap()
                .reshape((3, 4))
                .unwrap(),
        );
        map.insert(
            "b".to_string(),
            Tensor::ones(5, DType::F16, &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&map, path).unwrap();
    }

    #[test]
    fn valid_file_lists_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write_sample(&path);
        let checked = check_safetensors(&path).unwrap();
        assert_eq!(checked.tensors.len(), 2);
        assert_eq!(checked.tensors["a"].shape, vec![3, 4]);
        assert_eq!(checked.tensors["b"].dtype, "F16");
    }

    #[test]
    fn truncated_file_is_reported_not_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write_sample(&path);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let err = check_safetensors(&path).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("truncated or corrupt"), "{msg}");
        assert!(msg.contains("w.safetensors"), "{msg}");
        assert!(matches!(
            err.downcast_ref::<ModelError>(),
            Some(ModelError::CorruptWeights { .. })
        ));
        // A file cut inside the header.
        std::fs::write(&path, &bytes[..20]).unwrap();
        let msg = format!("{:#}", check_safetensors(&path).unwrap_err());
        assert!(msg.contains("truncated or corrupt"), "{msg}");
        // Not a safetensors file at all.
        std::fs::write(&path, b"hello").unwrap();
        let msg = format!("{:#}", check_safetensors(&path).unwrap_err());
        assert!(msg.contains("truncated or corrupt"), "{msg}");
    }
}
