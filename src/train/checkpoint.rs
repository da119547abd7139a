//! The checkpoints of the shapes-model and tiny-CLIP trainers: their parameters in name
//! order with per-parameter state (AdamW moments, EMA), written and restored through the
//! same files (tensors, JSON half, loss plot).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The file names of one trainer's checkpoint, inside its checkpoint folder.
pub(super) struct Files {
    /// The tensors (safetensors).
    pub tensors: &'static str,
    /// The JSON half (step, data RNG state, settings, loss log, seconds trained).
    pub meta: &'static str,
    /// The loss plot (PNG).
    pub loss_plot: &'static str,
}

/// Every variable of `varmap` with its name, sorted by name.
pub(super) fn sorted_params(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut params: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .expect("varmap lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params
}

/// Zeros shaped like each parameter (fresh AdamW moments).
pub(super) fn zeros_like(params: &[(String, Var)]) -> Result<Vec<Tensor>> {
    Ok(params
        .iter()
        .map(|(_, v)| v.as_tensor().zeros_like())
        .collect::<candle_core::Result<_>>()?)
}

/// The JSON half of the checkpoint in `dir` (the folder is created when missing), or
/// `None` when `dir` holds no checkpoint yet.
pub(super) fn read_meta<M: DeserializeOwned>(dir: &Path, files: &Files) -> Result<Option<M>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let meta_path = dir.join(files.meta);
    if !meta_path.is_file() {
        return Ok(None);
    }
    let meta = serde_json::from_str(&std::fs::read_to_string(&meta_path)?)
        .with_context(|| format!("cannot parse {}", meta_path.display()))?;
    Ok(Some(meta))
}

/// Write a checkpoint into `dir` atomically: each parameter as `param/NAME` and its
/// per-parameter state as `PREFIX/NAME` for each `(PREFIX, tensors)` of `state`, the JSON
/// half `meta`, and the plot of `loss_log` once it has two points.
pub(super) fn write(
    dir: &Path,
    files: &Files,
    params: &[(String, Var)],
    state: &[(&str, &[Tensor])],
    meta: &impl Serialize,
    loss_log: &[(usize, f64)],
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut map: HashMap<String, Tensor> = HashMap::new();
    for (i, (name, var)) in params.iter().enumerate() {
        map.insert(format!("param/{name}"), var.as_tensor().clone());
        for (prefix, tensors) in state {
            map.insert(format!("{prefix}/{name}"), tensors[i].clone());
        }
    }
    super::write_map(&map, &dir.join(files.tensors))?;
    crate::output::write_atomic(
        &dir.join(files.meta),
        serde_json::to_string_pretty(meta)?.as_bytes(),
    )?;
    if loss_log.len() >= 2 {
        super::plot::loss_plot(loss_log, &dir.join(files.loss_plot))?;
    }
    Ok(())
}

/// Set the parameters and their per-parameter `state` (as [`write`] names them) from the
/// checkpoint tensors at `path`, read as f32 (packed checkpoints keep the moments in bf16,
/// see [`super::pack_checkpoint`]).
pub(super) fn restore(
    path: &Path,
    device: &Device,
    params: &[(String, Var)],
    state: &mut [(&str, &mut Vec<Tensor>)],
) -> Result<()> {
    restore_some(path, device, params, state, &|_| false)
}

/// [`restore`], leaving the parameters for which `may_lack(name)` holds and that the
/// checkpoint lacks as they are (a parameter group that joins a resumed run).
pub(super) fn restore_some(
    path: &Path,
    device: &Device,
    params: &[(String, Var)],
    state: &mut [(&str, &mut Vec<Tensor>)],
    may_lack: &dyn Fn(&str) -> bool,
) -> Result<()> {
    let map = candle_core::safetensors::load(path, device)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let get = |k: &str| -> Result<Tensor> {
        Ok(map
            .get(k)
            .with_context(|| format!("checkpoint {} lacks {k}", path.display()))?
            .to_dtype(DType::F32)?)
    };
    for (i, (name, var)) in params.iter().enumerate() {
        if may_lack(name) && !map.contains_key(&format!("param/{name}")) {
            continue;
        }
        var.set(&get(&format!("param/{name}"))?)?;
        for (prefix, tensors) in state.iter_mut() {
            tensors[i] = get(&format!("{prefix}/{name}"))?;
        }
    }
    Ok(())
}
