//! Safetensors files: header validation before anything is read, and the `VarBuilder`
//! over them.
//!
//! A truncated download would otherwise surface as a confusing error deep inside a layer
//! constructor. Every file is therefore checked first: the header must parse, every
//! tensor's byte range must fit its dtype and shape, and the data section must end exactly
//! where the file ends.
//!
//! The weights are then read tensor by tensor with positioned reads straight into the
//! model's buffers ([`ReadBackend`]), not memory-mapped: a mapping's pages count in the
//! process's resident memory while they are copied, so loading through a mapping needs
//! twice the checkpoint's size in RAM (6.9 GB for SD 1.5's 3.4 GB UNet); reading needs the
//! weights plus one tensor.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use crate::model::error::ModelError;

/// The largest header accepted (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor entry of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The stored dtype name (`F32`, `F16`, `BF16`, `I64`, ...).
    pub dtype: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// Where the tensor's bytes start in the file.
    pub file_offset: u64,
    /// The file stores the transpose of this 2-D entry (`shape` is the entry's own, the
    /// stored one is reversed): OpenCLIP's `text_projection`.
    pub transposed: bool,
}

/// Weight name → the LoRA-family updates merged into it as it is read.
pub type Merges = HashMap<String, Vec<crate::model::lora_update::Update>>;

/// A validated safetensors file: its path and what it holds.
#[derive(Debug, Clone)]
pub struct CheckedFile {
    /// The file.
    pub path: PathBuf,
    /// Tensor name → dtype and shape.
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The header's `__metadata__` (string → string), empty when it has none.
    pub metadata: BTreeMap<String, String>,
}

impl CheckedFile {
    /// The same file under other names, nothing read or copied: `names` gives each entry
    /// its new entries (none to leave it out, several to view parts of its bytes). Two
    /// entries given one name are an error naming it (`what`: the component, for the
    /// message).
    pub fn relabel(
        &self,
        what: &str,
        mut names: impl FnMut(&str, &TensorInfo) -> Result<Vec<(String, TensorInfo)>, ModelError>,
    ) -> Result<CheckedFile, ModelError> {
        let mut tensors = BTreeMap::new();
        for (key, info) in &self.tensors {
            for (new, info) in names(key, info)? {
                if tensors.contains_key(&new) {
                    return Err(ModelError::CorruptWeights {
                        path: self.path.clone(),
                        reason: format!("two {what} tensors are both {new} once renamed"),
                    });
                }
                tensors.insert(new, info);
            }
        }
        Ok(CheckedFile {
            path: self.path.clone(),
            tensors,
            metadata: self.metadata.clone(),
        })
    }
}

pub(crate) fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// A header's entries in file order, duplicates kept (a map would silently keep the last
/// of two entries of one name).
struct HeaderEntries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for HeaderEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<HeaderEntries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    entries.push(entry);
                }
                Ok(HeaderEntries(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// Nanoseconds spent in the load-time NaN / ∞ checks of [`ReadBackend`] since the process
/// started (what `adiff unet-call` reports beside the load time).
static CHECK_NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Milliseconds spent so far checking loaded weights for NaN and ∞.
pub fn finite_check_ms() -> f64 {
    CHECK_NANOS.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6
}

/// Run the check `f`, adding its time to [`finite_check_ms`].
fn timed_check(f: impl FnOnce() -> usize) -> usize {
    let t0 = std::time::Instant::now();
    let n = f();
    CHECK_NANOS.fetch_add(
        t0.elapsed().as_nanos() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    n
}

/// How many of `values` are NaN or ±∞.
pub(crate) fn count_non_finite_f32(values: &[f32]) -> usize {
    values.iter().filter(|v| !v.is_finite()).count()
}

/// How many of the little-endian stored `bytes` of `dtype` are NaN or ±∞ (0 for integer
/// dtypes): one pass over the exponent bits.
fn count_non_finite_bytes(bytes: &[u8], dtype: DType) -> usize {
    fn all_ones<const N: usize>(bytes: &[u8], exponent: u64) -> usize {
        bytes
            .chunks_exact(N)
            .filter(|c| {
                let mut v = 0u64;
                for (i, b) in c.iter().enumerate() {
                    v |= u64::from(*b) << (8 * i);
                }
                v & exponent == exponent
            })
            .count()
    }
    match dtype {
        DType::F16 => all_ones::<2>(bytes, 0x7c00),
        DType::BF16 => all_ones::<2>(bytes, 0x7f80),
        DType::F32 => all_ones::<4>(bytes, 0x7f80_0000),
        DType::F64 => all_ones::<8>(bytes, 0x7ff0_0000_0000_0000),
        _ => 0,
    }
}

/// What every non-finite-weight message says (see [`poisoned_weight`]).
const POISON_MARK: &str = "values that are not finite numbers (NaN or ∞)";

/// The message of a non-finite weight found while loading, wherever it sits among `e`'s
/// causes (candle carries it as text through the layer constructors).
pub fn poisoned_weight(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .map(|c| c.to_string())
        .find(|s| s.starts_with("weights file ") && s.contains(POISON_MARK))
}

/// The error for a tensor holding `count` non-finite values out of `total`.
fn non_finite(
    name: &str,
    path: &Path,
    count: usize,
    total: usize,
    merged: bool,
) -> candle_core::Error {
    let (what, fix) = if merged {
        (
            "after its LoRA update was merged",
            "lower the LoRA's scale or leave that LoRA out",
        )
    } else {
        (
            "as stored",
            "the file is damaged or was saved from a diverged training run: download it again or use another",
        )
    };
    candle_core::Error::Msg(format!(
        "weights file {}: tensor '{name}' holds {count} of {total} {POISON_MARK} {what}; {fix}",
        path.display()
    ))
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
    let HeaderEntries(header) = serde_json::from_slice(&header)
        .map_err(|e| corrupt(format!("the header is not valid JSON ({e})")))?;

    let data_len = file_len - 8 - header_len;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    // (begin, end, name) of every tensor, to check that they tile the data section.
    let mut ranges: Vec<(u64, u64, String)> = Vec::with_capacity(header.len());
    for (name, entry) in header {
        if tensors.contains_key(&name) || (name == "__metadata__" && !metadata.is_empty()) {
            return Err(corrupt(format!(
                "the header names tensor '{name}' twice (the safetensors library refuses such files)"
            ))
            .into());
        }
        if name == "__metadata__" {
            // The format makes it a string → string map; anything else is ignored.
            if let serde_json::Value::Object(map) = entry {
                metadata = map
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.as_str()?.to_string())))
                    .collect();
            }
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
        ranges.push((begin, end, name.clone()));
        tensors.insert(
            name,
            TensorInfo {
                dtype,
                shape,
                file_offset: 8 + header_len + begin,
                transposed: false,
            },
        );
    }
    // As the reference library: sorted by offset, the tensors tile the data section (each
    // starts where the one before ends), so no two share bytes and none are unaccounted for.
    ranges.sort();
    let mut data_end = 0u64;
    let mut previous: Option<&str> = None;
    for (begin, end, name) in &ranges {
        if *begin != data_end {
            let why = match previous {
                Some(p) if *begin < data_end => {
                    format!("its bytes {begin}..{end} overlap those of tensor '{p}'")
                }
                Some(p) => format!(
                    "{} bytes between it and tensor '{p}' belong to no tensor",
                    begin - data_end
                ),
                None => format!("the first {begin} data bytes belong to no tensor"),
            };
            return Err(corrupt(format!(
                "tensor '{name}': invalid data_offsets, {why} (the safetensors library refuses such files)"
            ))
            .into());
        }
        data_end = *end;
        previous = Some(name);
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
        metadata,
    })
}

/// A `VarBuilder` of the given dtype over validated files, reading each tensor when a
/// layer asks for it ([`ReadBackend`]).
pub fn var_builder(
    files: &[CheckedFile],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    var_builder_merged(files, &Merges::new(), dtype, device)
}

/// As [`var_builder`], with low-rank updates merged into the weights they name as each is
/// read (in f32, before the conversion to `dtype`).
pub fn var_builder_merged(
    files: &[CheckedFile],
    merges: &Merges,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let mut backend = ReadBackend::open(files)?;
    backend.merges = merges.clone();
    Ok(VarBuilder::from_backend(
        Box::new(backend),
        dtype,
        device.clone(),
    ))
}

/// The var builder a network in `dtype` on `device` is built from: bf16 on the CPU is
/// mixed precision ([`var_builder_bf16_matrices`]), any other choice [`var_builder_merged`].
pub fn network_var_builder(
    files: &[CheckedFile],
    merges: &Merges,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    if crate::model::kernels::bf16::mixed_bf16(device, dtype) {
        var_builder_bf16_matrices(files, merges, device)
    } else {
        var_builder_merged(files, merges, dtype, device)
    }
}

/// As [`var_builder_merged`] in f32, except that the weights of linear layers and
/// convolutions (rank-2 and rank-4 `….weight` entries) come in bf16: a network built from it
/// keeps its activations, norms and biases in f32 and runs its products on the bf16
/// kernels, the mixed precision `--dtype bf16` means on the CPU. Each weight is converted
/// as it is read, so no f32 copy of the model is ever held.
pub fn var_builder_bf16_matrices(
    files: &[CheckedFile],
    merges: &Merges,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    let mut backend = ReadBackend::open(files)?;
    backend.merges = merges.clone();
    backend.bf16_matrices = true;
    Ok(VarBuilder::from_backend(
        Box::new(backend),
        DType::F32,
        device.clone(),
    ))
}

/// Reads tensors from validated safetensors files with positioned reads, one at a time.
pub struct ReadBackend {
    files: Vec<(File, PathBuf)>,
    /// Tensor name → (index into `files`, its entry).
    index: HashMap<String, (usize, TensorInfo)>,
    /// Low-rank updates merged into the weights they name.
    merges: Merges,
    /// Hand linear and convolution weights out in bf16 when f32 is asked for
    /// ([`var_builder_bf16_matrices`]).
    bf16_matrices: bool,
}

impl ReadBackend {
    /// Open every file (a later file's tensor of the same name wins, as with candle's
    /// multi-file mapping).
    pub fn open(files: &[CheckedFile]) -> Result<Self> {
        let mut opened = Vec::with_capacity(files.len());
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            let file = File::open(&f.path)
                .with_context(|| format!("could not open weights file {}", f.path.display()))?;
            opened.push((file, f.path.clone()));
            for (name, info) in &f.tensors {
                index.insert(name.clone(), (i, info.clone()));
            }
        }
        Ok(Self {
            files: opened,
            index,
            merges: Merges::new(),
            bf16_matrices: false,
        })
    }

    /// Read one tensor in its stored dtype onto `device`.
    fn read(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let (i, info) = self.index.get(name).ok_or_else(|| {
            candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()
        })?;
        let (file, path) = &self.files[*i];
        let dtype = match info.dtype.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            "U8" => DType::U8,
            "U32" => DType::U32,
            "I64" => DType::I64,
            other => candle_core::bail!(
                "tensor '{name}' in {} is stored as {other}, which cannot be loaded as weights",
                path.display()
            ),
        };
        let n: usize = info.shape.iter().product();
        let stored: Vec<usize> = if info.transposed {
            info.shape.iter().rev().copied().collect()
        } else {
            info.shape.clone()
        };
        let shape = Shape::from(stored);
        let read_err = |e: std::io::Error| {
            candle_core::Error::Msg(format!(
                "could not read tensor '{name}' from {}: {e}",
                path.display()
            ))
        };
        if dtype == DType::F32 && cfg!(target_endian = "little") {
            // Straight into the tensor's own buffer: no second copy of the bytes.
            let mut values = vec![0f32; n];
            // SAFETY: any byte pattern is a valid f32; the slice covers exactly the vector.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<u8>(), n * 4) };
            read_at(file, bytes, info.file_offset).map_err(read_err)?;
            let bad = timed_check(|| count_non_finite_f32(&values));
            if bad > 0 {
                return Err(non_finite(name, path, bad, n, false));
            }
            return self.finish(name, info, path, Tensor::from_vec(values, shape, device)?);
        }
        let mut bytes = vec![0u8; n * dtype.size_in_bytes()];
        read_at(file, &mut bytes, info.file_offset).map_err(read_err)?;
        let bad = timed_check(|| count_non_finite_bytes(&bytes, dtype));
        if bad > 0 {
            return Err(non_finite(name, path, bad, n, false));
        }
        self.finish(
            name,
            info,
            path,
            Tensor::from_raw_buffer(&bytes, dtype, shape.dims(), device)?,
        )
    }

    /// A stored tensor as its entry describes it: transposed back where stored transposed,
    /// with its low-rank updates merged in (in f32).
    fn finish(
        &self,
        name: &str,
        info: &TensorInfo,
        path: &Path,
        t: Tensor,
    ) -> candle_core::Result<Tensor> {
        let t = if info.transposed {
            t.t()?.contiguous()?
        } else {
            t
        };
        let Some(updates) = self.merges.get(name) else {
            return Ok(t);
        };
        let mut w = t.to_dtype(DType::F32)?;
        for u in updates {
            let delta = u
                .delta(&info.shape)
                .map_err(|e| candle_core::Error::Msg(format!("LoRA update of {name}: {e}")))?;
            w = (w + delta.to_device(t.device())?)?;
        }
        let values = w.flatten_all()?.to_vec1::<f32>()?;
        let bad = count_non_finite_f32(&values);
        if bad > 0 {
            return Err(non_finite(name, path, bad, values.len(), true));
        }
        Ok(w)
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

impl ReadBackend {
    /// The dtype a tensor is handed out in: `dtype`, or bf16 for a linear or convolution
    /// weight when [`Self::bf16_matrices`] (and f32 was asked for).
    fn dtype_for(&self, name: &str, rank: usize, dtype: DType) -> DType {
        let matrix = name.ends_with(".weight") && matches!(rank, 2 | 4);
        if self.bf16_matrices && dtype == DType::F32 && matrix {
            DType::BF16
        } else {
            dtype
        }
    }
}

impl SimpleBackend for ReadBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Some((_, info)) = self.index.get(name)
            && info.shape != s.dims()
        {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: s,
                got: Shape::from(info.shape.clone()),
            }
            .bt());
        }
        self.read(name, dev)?
            .to_dtype(self.dtype_for(name, s.rank(), dtype))
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.read(name, dev)?;
        let dtype = self.dtype_for(name, t.rank(), dtype);
        t.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
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
    fn read_backend_loads_each_tensor_as_stored_and_converts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write_sample(&path);
        let checked = check_all(&[path]).unwrap();
        let vb = var_builder(&checked, DType::F32, &Device::Cpu).unwrap();
        let a = vb.get((3, 4), "a").unwrap();
        assert_eq!(
            a.to_vec2::<f32>().unwrap(),
            vec![
                vec![0., 1., 2., 3.],
                vec![4., 5., 6., 7.],
                vec![8., 9., 10., 11.]
            ]
        );
        let b = vb.get(5, "b").unwrap();
        assert_eq!(b.dtype(), DType::F32);
        assert_eq!(b.to_vec1::<f32>().unwrap(), vec![1f32; 5]);
        assert!(vb.contains_tensor("a") && !vb.contains_tensor("c"));
        let msg = vb.get((4, 3), "a").unwrap_err().to_string();
        assert!(msg.contains("shape mismatch for a"), "{msg}");
        assert!(vb.get(2, "c").is_err());
        let vb16 = var_builder(&checked, DType::F16, &Device::Cpu).unwrap();
        assert_eq!(vb16.get((3, 4), "a").unwrap().dtype(), DType::F16);
    }

    #[test]
    fn relabelled_entries_read_the_same_bytes_and_collisions_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write_sample(&path);
        let checked = check_safetensors(&path).unwrap();
        // "a" viewed as its second row under a new name; "b" left out.
        let row = checked
            .relabel("test", |name, info| {
                Ok(match name {
                    "a" => vec![(
                        "a.row1".to_string(),
                        TensorInfo {
                            shape: vec![4],
                            file_offset: info.file_offset + 16,
                            ..info.clone()
                        },
                    )],
                    "b" => vec![],
                    _ => unreachable!(),
                })
            })
            .unwrap();
        assert_eq!(row.tensors.keys().collect::<Vec<_>>(), ["a.row1"]);
        let vb = var_builder(&[row], DType::F32, &Device::Cpu).unwrap();
        let got: Vec<f32> = vb.get(4, "a.row1").unwrap().to_vec1().unwrap();
        assert_eq!(got, [4.0, 5.0, 6.0, 7.0]);
        // "a" (3×4) read as its transpose.
        let t = checked
            .relabel("test", |name, info| {
                Ok(match name {
                    "a" => vec![(
                        "a.t".to_string(),
                        TensorInfo {
                            shape: vec![4, 3],
                            transposed: true,
                            ..info.clone()
                        },
                    )],
                    _ => vec![],
                })
            })
            .unwrap();
        // With a rank-1 update merged in: + 0.5 · [1 2 3 4]ᵀ · [1 0 −1].
        let up = Tensor::new(&[[1f32], [2.], [3.], [4.]], &Device::Cpu).unwrap();
        let down = Tensor::new(&[[1f32, 0., -1.]], &Device::Cpu).unwrap();
        let merges = Merges::from([(
            "a.t".to_string(),
            vec![crate::model::lora_update::Update {
                factors: crate::model::lora_update::Factors::LowRank { up, down },
                scale: 0.5,
            }],
        )]);
        let vb = var_builder_merged(std::slice::from_ref(&t), &merges, DType::F32, &Device::Cpu)
            .unwrap();
        let got: Vec<Vec<f32>> = vb.get((4, 3), "a.t").unwrap().to_vec2().unwrap();
        assert_eq!(
            got,
            vec![
                vec![0.5, 4., 7.5],
                vec![2., 5., 8.],
                vec![3.5, 6., 8.5],
                vec![5., 7., 9.]
            ]
        );
        let plain = var_builder(&[t], DType::F32, &Device::Cpu).unwrap();
        let got: Vec<Vec<f32>> = plain.get((4, 3), "a.t").unwrap().to_vec2().unwrap();
        assert_eq!(got[0], [0., 4., 8.]);
        let e = checked
            .relabel("test", |_, info| {
                Ok(vec![("same".to_string(), info.clone())])
            })
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("two test tensors are both same once renamed"),
            "{e}"
        );
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

    /// A safetensors file from a header written by hand and `data` bytes.
    fn raw(path: &Path, header: &str, data: &[u8]) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn headers_are_checked_as_strictly_as_the_reference_library() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let refused = |header: &str, data_len: usize, needle: &str| {
            raw(&path, header, &vec![0u8; data_len]);
            let msg = format!("{:#}", check_safetensors(&path).unwrap_err());
            assert!(msg.contains(needle), "{header}: {msg}");
            assert!(msg.contains("w.safetensors"), "{msg}");
        };
        let t = |name: &str, b: u64, e: u64| {
            format!(
                r#""{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{b},{e}]}}"#,
                (e - b) / 4
            )
        };
        // Accepted: two tensors tiling 32 bytes, in either order in the header.
        raw(
            &path,
            &format!("{{{},{}}}", t("b", 16, 32), t("a", 0, 16)),
            &[0u8; 32],
        );
        assert_eq!(check_safetensors(&path).unwrap().tensors.len(), 2);
        // Overlapping neighbours (each range the right length for its shape).
        refused(
            &format!("{{{},{}}}", t("a", 0, 16), t("b", 8, 24)),
            24,
            "tensor 'b': invalid data_offsets, its bytes 8..24 overlap those of tensor 'a'",
        );
        // Two tensors on the same bytes.
        refused(
            &format!("{{{},{}}}", t("a", 0, 16), t("b", 0, 16)),
            16,
            "overlap those of tensor 'a'",
        );
        // A gap, and bytes before the first tensor.
        refused(
            &format!("{{{},{}}}", t("a", 0, 8), t("b", 16, 24)),
            24,
            "8 bytes between it and tensor 'a' belong to no tensor",
        );
        refused(
            &format!("{{{}}}", t("a", 8, 16)),
            16,
            "the first 8 data bytes belong to no tensor",
        );
        // A name given twice.
        refused(
            &format!("{{{},{}}}", t("a", 0, 8), t("a", 8, 16)),
            16,
            "the header names tensor 'a' twice",
        );
    }

    #[test]
    fn non_finite_weights_are_named_with_file_tensor_and_count() {
        let dir = tempfile::tempdir().unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let path = dir.path().join("w.safetensors");
            let mut v = vec![0.5f32; 10];
            v[3] = f32::NAN;
            v[7] = f32::NEG_INFINITY;
            let good = Tensor::new(&[1f32, 2.0], &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let bad = Tensor::new(v.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let map = HashMap::from([("good".to_string(), good), ("bad".to_string(), bad)]);
            candle_core::safetensors::save(&map, &path).unwrap();
            let vb = var_builder(&check_all(&[path]).unwrap(), DType::F32, &Device::Cpu).unwrap();
            assert!(vb.get(2, "good").is_ok());
            let msg = vb.get(10, "bad").unwrap_err().to_string();
            assert!(
                msg.contains(
                    "w.safetensors: tensor 'bad' holds 2 of 10 values that are not finite"
                ),
                "{dtype:?}: {msg}"
            );
        }
        // A finite update that overflows the merged weight.
        let path = dir.path().join("m.safetensors");
        write_sample(&path);
        let up = Tensor::new(&[[1e30f32], [1.], [1.]], &Device::Cpu).unwrap();
        let down = Tensor::new(&[[1e30f32, 0., 0., 0.]], &Device::Cpu).unwrap();
        let merges = Merges::from([(
            "a".to_string(),
            vec![crate::model::lora_update::Update {
                factors: crate::model::lora_update::Factors::LowRank { up, down },
                scale: 1.0,
            }],
        )]);
        let vb = var_builder_merged(
            &check_all(&[path]).unwrap(),
            &merges,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let msg = vb.get((3, 4), "a").unwrap_err().to_string();
        assert!(
            msg.contains("holds 1 of 12 values that are not finite"),
            "{msg}"
        );
        assert!(msg.contains("after its LoRA update was merged"), "{msg}");
    }
}
