//! LoRA files merged into a pipeline's weights at load (`--lora FILE[:SCALE]`).
//!
//! Two formats are read:
//! * kohya / AUTOMATIC1111: `lora_unet_<module>`, `lora_te_<module>` (SD 1.x / 2.x),
//!   `lora_te1_` / `lora_te2_` (SDXL), each with `.lora_down.weight`, `.lora_up.weight`
//!   and an optional `.alpha`; UNet modules in diffusers' naming or, as SDXL trainers
//!   write them, the original layout's (`input_blocks_4_1_…`);
//! * diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (or the older
//!   `.lora.down.weight` / `.lora.up.weight`), `text_encoder.` and `text_encoder_2.`.
//!
//! LyCORIS's LoHa (`.hada_w1_a` …) and LoKr (`.lokr_w1`, `.lokr_w2_a` …) modules under the
//! same names are read too.
//!
//! Each module's update `scale · alpha / rank · ΔW` is added to its weight as the weight is
//! read ([`crate::model::lora_update::Update`]), as diffusers' `fuse_lora` does. A key
//! that names no module of the model is an error listing it, never skipped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

use crate::model::checkpoint;
use crate::model::error::ModelError;
use crate::model::lora_update::{Factors, Update};
use crate::model::parts::{Parts, Weights};

/// One `--lora` argument: a file and the scale its update is merged with.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The safetensors file.
    pub path: PathBuf,
    /// How much of the update is merged (1: as trained).
    pub scale: f64,
}

impl FromStr for LoraSpec {
    type Err = String;

    /// `FILE` or `FILE:SCALE` (a suffix that is not a number stays part of the path, so
    /// `C:\loras\a.safetensors` is a path).
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("expected FILE or FILE:SCALE".into());
        }
        let (path, scale) = match s.rsplit_once(':') {
            Some((p, scale)) if !p.is_empty() && scale.trim().parse::<f64>().is_ok() => {
                (p, scale.trim().parse::<f64>().expect("checked"))
            }
            // `FILE:abc` (a suffix with no path separator after a file name) meant a scale.
            Some((p, suffix))
                if !p.is_empty()
                    && !suffix.contains(['/', '\\'])
                    && (p.ends_with(".safetensors") || Path::new(p).is_file()) =>
            {
                return Err(format!(
                    "the scale '{}' after {p} is not a number: write FILE:SCALE with SCALE between -{MAX_SCALE} and {MAX_SCALE} (e.g. {p}:0.8)",
                    crate::field::cut(suffix, 40)
                ));
            }
            _ => (s, 1.0),
        };
        check_scale(scale).map_err(|e| format!("the scale of {path} {e}"))?;
        Ok(Self {
            path: PathBuf::from(path),
            scale,
        })
    }
}

/// The largest LoRA scale accepted, either sign: trained LoRAs are merged at about 1, and a
/// scale far beyond this only turns the weights into noise or overflows them.
pub const MAX_SCALE: f64 = 100.0;

/// Whether `scale` is a usable LoRA scale; the error completes "the scale of FILE …".
pub fn check_scale(scale: f64) -> Result<(), String> {
    if !scale.is_finite() {
        return Err("must be a finite number".into());
    }
    if scale.abs() > MAX_SCALE {
        return Err(format!(
            "is {scale}, beyond the ±{MAX_SCALE} adiff accepts (a trained LoRA is merged at about 1)"
        ));
    }
    Ok(())
}

impl fmt::Display for LoraSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.scale)
    }
}

/// Which part of the pipeline a LoRA key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Unet,
    /// Text encoder 0 or 1.
    Text(usize),
}

/// What a tensor of a module is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Role {
    Down,
    Up,
    Alpha,
    /// LoHa's `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`.
    Hada(u8),
    /// LoKr's `lokr_w1`, `lokr_w1_a`, `lokr_w1_b`, `lokr_w2`, `lokr_w2_a`, `lokr_w2_b`.
    Lokr(u8),
}

/// A parsed key: the component, the module stem (kohya: underscores; PEFT: dots), the role.
struct Key<'a> {
    target: Target,
    module: &'a str,
    kohya: bool,
    role: Role,
}

fn parse_key(key: &str) -> Option<Key<'_>> {
    const KOHYA: [(&str, Target); 4] = [
        ("lora_unet_", Target::Unet),
        ("lora_te1_", Target::Text(0)),
        ("lora_te2_", Target::Text(1)),
        ("lora_te_", Target::Text(0)),
    ];
    const PEFT: [(&str, Target); 3] = [
        ("unet.", Target::Unet),
        ("text_encoder.", Target::Text(0)),
        ("text_encoder_2.", Target::Text(1)),
    ];
    const ROLES: [(&str, Role); 17] = [
        (".lora_down.weight", Role::Down),
        (".lora_up.weight", Role::Up),
        (".lora_A.weight", Role::Down),
        (".lora_B.weight", Role::Up),
        (".lora.down.weight", Role::Down),
        (".lora.up.weight", Role::Up),
        (".alpha", Role::Alpha),
        (".hada_w1_a", Role::Hada(0)),
        (".hada_w1_b", Role::Hada(1)),
        (".hada_w2_a", Role::Hada(2)),
        (".hada_w2_b", Role::Hada(3)),
        (".lokr_w1", Role::Lokr(0)),
        (".lokr_w1_a", Role::Lokr(1)),
        (".lokr_w1_b", Role::Lokr(2)),
        (".lokr_w2", Role::Lokr(3)),
        (".lokr_w2_a", Role::Lokr(4)),
        (".lokr_w2_b", Role::Lokr(5)),
    ];
    let (rest, role) = ROLES
        .iter()
        .find_map(|(suffix, role)| Some((key.strip_suffix(suffix)?, *role)))?;
    if let Some((module, target)) = KOHYA
        .iter()
        .find_map(|(p, t)| Some((rest.strip_prefix(p)?, *t)))
    {
        return Some(Key {
            target,
            module,
            kohya: true,
            role,
        });
    }
    PEFT.iter()
        .find_map(|(p, t)| Some((rest.strip_prefix(p)?, *t)))
        .map(|(module, target)| Key {
            target,
            module,
            kohya: false,
            role,
        })
}

/// A component's weights by module, underscored (`text_model_` in front of a text
/// encoder's, whatever its file does): `down_blocks_0_…_to_q` → the `….weight` entry.
fn module_index(weights: &Weights, text: bool) -> BTreeMap<String, String> {
    weights
        .names()
        .filter_map(|name| {
            let module = name.strip_suffix(".weight")?;
            let key = if text {
                format!("text_model.{}", module.trim_start_matches("text_model."))
            } else {
                module.to_string()
            };
            Some((key.replace('.', "_"), name.clone()))
        })
        .collect()
}

/// The module key of a parsed LoRA key in [`module_index`]'s form.
fn index_key(key: &Key, layers: usize) -> Vec<String> {
    match (key.target, key.kohya) {
        (Target::Unet, true) => {
            let mut keys = vec![key.module.to_string()];
            keys.extend(crate::model::ldm_unet::kohya_stem(key.module, layers));
            keys
        }
        (Target::Unet, false) => vec![key.module.replace('.', "_")],
        (Target::Text(_), true) => {
            let m = key.module.trim_start_matches("text_model_");
            vec![format!("text_model_{m}")]
        }
        (Target::Text(_), false) => {
            let m = key.module.trim_start_matches("text_model.");
            vec![format!("text_model_{}", m.replace('.', "_"))]
        }
    }
}

/// A LoRA file's modules: (target, kohya naming, stem) → its tensors by role.
type Modules<'a> = BTreeMap<(Target, bool, String), HashMap<Role, &'a Tensor>>;

/// The tensors of a LoRA file (refused unopened when a pickle) and its PEFT adapter
/// configs, if it carries them.
type Read = (
    HashMap<String, Tensor>,
    Option<serde_json::Map<String, serde_json::Value>>,
);

fn lora_error(path: &std::path::Path, problem: String) -> anyhow::Error {
    ModelError::Lora {
        path: path.to_path_buf(),
        problem,
    }
    .into()
}

fn read(path: &std::path::Path) -> Result<Read> {
    crate::model::single_file::refuse_pickle(path, crate::model::error::PickleKind::Lora)?;
    if let Some(problem) = crate::input_path::problem(path, crate::input_path::Want::File) {
        return Err(lora_error(path, problem));
    }
    let checked = checkpoint::check_safetensors(path)?;
    let configs = adapter_configs(&checked).map_err(|e| lora_error(path, e))?;
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| lora_error(path, format!("could not read it: {e}")))?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !t.dtype().is_float() {
            continue;
        }
        let values = t
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?;
        let bad = checkpoint::count_non_finite_f32(&values);
        if bad > 0 {
            return Err(lora_error(
                path,
                format!(
                    "tensor '{name}' holds {bad} of {} values that are not finite numbers (NaN or ∞); the file is damaged: download it again or use another",
                    values.len()
                ),
            ));
        }
    }
    Ok((tensors, configs))
}

/// Group a LoRA's tensors by module; keys of no known format go to `unknown`. Also says
/// whether kohya names mark it as an SD 1.x / 2.x LoRA (`lora_te_`) and as an SDXL one
/// (`lora_te1_`/`lora_te2_`, or PEFT `text_encoder_2.`); an SDXL LoRA with only its
/// first encoder's PEFT keys looks like an SD one, so those do not count.
fn group<'a>(
    tensors: &'a HashMap<String, Tensor>,
    unknown: &mut Vec<String>,
) -> (Modules<'a>, (bool, bool)) {
    let mut modules = Modules::new();
    let mut kinds = (false, false);
    for (name, t) in tensors {
        let Some(key) = parse_key(name) else {
            unknown.push(name.clone());
            continue;
        };
        if name.starts_with("lora_te1_") || name.starts_with("lora_te2_") {
            kinds.1 = true;
        } else if name.starts_with("lora_te_") {
            kinds.0 = true;
        } else if key.target == Target::Text(1) {
            kinds.1 = true;
        }
        modules
            .entry((key.target, key.kohya, key.module.to_string()))
            .or_default()
            .insert(key.role, t);
    }
    (modules, kinds)
}

/// `alpha / rank` of one module: its `.alpha` tensor, else (PEFT) the metadata's config,
/// else 1.
fn factor(
    alpha: Option<&Tensor>,
    configs: Option<&serde_json::Map<String, serde_json::Value>>,
    (target, kohya, stem): (Target, bool, &str),
    rank: usize,
) -> Result<f64, String> {
    match (alpha, configs) {
        (Some(a), _) => {
            let read = || -> candle_core::Result<f64> {
                a.to_dtype(DType::F64)?
                    .flatten_all()?
                    .get(0)?
                    .to_scalar::<f64>()
            };
            Ok(read().map_err(|e| format!("{stem}.alpha is not a number ({e})"))? / rank as f64)
        }
        (None, Some(configs)) if !kohya => peft_factor(configs, component_name(target), stem, rank),
        (None, _) => Ok(1.0),
    }
}

/// The factors a module's tensors make (in f32), and the rank its alpha is divided by
/// (`None`: a LoKr of two whole matrices, merged at scale 1 whatever its alpha, as LyCORIS
/// does); else what is missing.
fn module_factors(t: &HashMap<Role, &Tensor>) -> Result<(Factors, Option<usize>), String> {
    let get = |r: Role| t.get(&r).copied();
    let f32 = |x: &Tensor| x.to_dtype(DType::F32).map_err(|e| e.to_string());
    // `a · b` with `b` read as `(rank, rest)`.
    let product = |a: &Tensor, b: &Tensor| -> Result<Tensor, String> {
        let rank = b.dims().first().copied().unwrap_or(0).max(1);
        let b = f32(b)?
            .reshape((rank, b.elem_count() / rank))
            .map_err(|e| e.to_string())?;
        f32(a)?
            .matmul(&b)
            .map_err(|e| format!("its factors do not multiply ({e})"))
    };
    let rank_of = |b: &Tensor| b.dims().first().copied().unwrap_or(0);
    match (get(Role::Down), get(Role::Up)) {
        (Some(down), Some(up)) => {
            return Ok((
                Factors::LowRank {
                    up: f32(up)?,
                    down: f32(down)?,
                },
                Some(rank_of(down)),
            ));
        }
        (Some(_), None) => return Err("has no up (B) matrix".into()),
        (None, Some(_)) => return Err("has no down (A) matrix".into()),
        (None, None) => {}
    }
    let hada: Vec<_> = (0..4).map(|i| get(Role::Hada(i))).collect();
    if hada.iter().any(Option::is_some) {
        let [Some(w1a), Some(w1b), Some(w2a), Some(w2b)] = hada[..] else {
            return Err("is a LoHa without all four hada_w1_a/b, hada_w2_a/b".into());
        };
        let factors = Factors::Hadamard {
            w1a: f32(w1a)?,
            w1b: f32(w1b)?,
            w2a: f32(w2a)?,
            w2b: f32(w2b)?,
        };
        return Ok((factors, Some(rank_of(w1b))));
    }
    let whole_or_product = |w: Role, a: Role, b: Role| -> Result<(Tensor, Option<usize>), String> {
        match (get(w), get(a), get(b)) {
            (Some(w), _, _) => Ok((f32(w)?, None)),
            (None, Some(a), Some(b)) => Ok((product(a, b)?, Some(rank_of(b)))),
            _ => Err(
                "is a LoKr without lokr_w1 (or lokr_w1_a/b) and lokr_w2 (or lokr_w2_a/b)".into(),
            ),
        }
    };
    if (0..6).any(|i| get(Role::Lokr(i)).is_some()) {
        let (w1, r1) = whole_or_product(Role::Lokr(0), Role::Lokr(1), Role::Lokr(2))?;
        let (w2, r2) = whole_or_product(Role::Lokr(3), Role::Lokr(4), Role::Lokr(5))?;
        return Ok((Factors::Kronecker { w1, w2 }, r2.or(r1)));
    }
    Err("has no down (A) and up (B) matrices".into())
}

/// Merge the LoRA `spec` into `parts` (nothing is read from the model's weights; the
/// updates are added as they are). Returns the line reporting what it touched.
pub fn apply(parts: &mut Parts, spec: &LoraSpec) -> Result<String> {
    let path = spec.path.as_path();
    let fail = |problem: String| lora_error(path, problem);
    let (tensors, configs) = read(path)?;
    let mut unknown = vec![];
    let (modules, kinds) = group(&tensors, &mut unknown);
    check_family(parts, kinds).map_err(fail)?;

    let layers = parts.unet_config.down.first().map_or(2, |b| b.layers);
    let unet_index = module_index(&parts.unet, false);
    let text_index: Vec<_> = parts
        .text
        .iter()
        .map(|t| module_index(&t.weights, true))
        .collect();
    let mut touched: BTreeMap<Target, usize> = BTreeMap::new();
    let mut problems = vec![];
    for ((target, kohya, stem), tensors) in &modules {
        let key = Key {
            target: *target,
            module: stem,
            kohya: *kohya,
            role: Role::Down,
        };
        let index = match target {
            Target::Unet => Some(&unet_index),
            Target::Text(i) => text_index.get(*i),
        };
        let found = index.and_then(|ix| {
            index_key(&key, layers)
                .iter()
                .find_map(|k| ix.get(k).cloned())
        });
        let (factors, rank) = match module_factors(tensors) {
            Ok(made) => made,
            Err(what) => {
                problems.push(format!("{stem} {what}"));
                continue;
            }
        };
        let Some(weight) = found else {
            unknown.push(stem.to_string());
            continue;
        };
        let alpha = tensors.get(&Role::Alpha).copied();
        let factor = match rank {
            Some(rank) => {
                factor(alpha, configs.as_ref(), (*target, *kohya, stem), rank).map_err(&fail)?
            }
            None => 1.0,
        };
        let update = Update {
            factors,
            scale: spec.scale * factor,
        };
        let weights = match target {
            Target::Unet => &mut parts.unet,
            Target::Text(i) => &mut parts.text[*i].weights,
        };
        let dims = weights.shape(&weight).expect("indexed").to_vec();
        if let Err(e) = update.check(&dims) {
            problems.push(format!("{stem}: {e}"));
            continue;
        }
        weights.merges.entry(weight).or_default().push(update);
        *touched.entry(*target).or_default() += 1;
    }
    if !problems.is_empty() {
        return Err(fail(format!(
            "its modules do not fit this model (rank, shape or missing factors): {}",
            crate::field::cut_list(&problems, 5)
        )));
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(fail(format!(
            "{} of its keys or modules match nothing in this model (is it made for another model?): {}",
            unknown.len(),
            crate::field::cut_list(&unknown, 8)
        )));
    }
    if touched.is_empty() {
        return Err(fail("it holds no LoRA modules".into()));
    }
    Ok(report(parts, spec, &touched))
}

/// "LoRA FILE ×SCALE: merged into N modules (UNet a, text encoder b)".
fn report(parts: &Parts, spec: &LoraSpec, touched: &BTreeMap<Target, usize>) -> String {
    let counts: Vec<String> = touched
        .iter()
        .map(|(t, n)| {
            let name = match t {
                Target::Unet => "UNet".to_string(),
                Target::Text(0) if parts.text.len() == 1 => "text encoder".to_string(),
                Target::Text(i) => format!("text encoder {}", i + 1),
            };
            format!("{name} {n}")
        })
        .collect();
    let total: usize = touched.values().sum();
    format!(
        "LoRA {} ×{}: merged into {total} modules ({})",
        spec.path.display(),
        spec.scale,
        counts.join(", ")
    )
}

/// The PEFT adapter configs diffusers writes into a LoRA file's `lora_adapter_metadata`
/// (`unet.lora_alpha`, `unet.alpha_pattern`, `text_encoder.use_rslora`, …), if any.
fn adapter_configs(
    file: &checkpoint::CheckedFile,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    let Some(text) = file.metadata.get("lora_adapter_metadata") else {
        return Ok(None);
    };
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
        _ => Err("its lora_adapter_metadata is not a JSON object".into()),
    }
}

/// The PEFT component name of a target.
fn component_name(target: Target) -> &'static str {
    match target {
        Target::Unet => "unet",
        Target::Text(0) => "text_encoder",
        Target::Text(_) => "text_encoder_2",
    }
}

/// `alpha / rank` (`alpha / √rank` with rsLoRA) of the PEFT module `module` of
/// `component`, as PEFT's `LoraConfig` in the metadata sets it: `alpha_pattern` entries
/// match a module by its name or a dotted suffix, else `lora_alpha`, else the rank.
fn peft_factor(
    configs: &serde_json::Map<String, serde_json::Value>,
    component: &str,
    module: &str,
    rank: usize,
) -> Result<f64, String> {
    let get = |key: &str| configs.get(&format!("{component}.{key}"));
    if get("use_dora").and_then(|v| v.as_bool()) == Some(true) {
        return Err("it is a DoRA (use_dora), which is not supported".into());
    }
    let pattern = get("alpha_pattern")
        .and_then(|p| p.as_object())
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| module == *k || module.ends_with(&format!(".{k}")))
                .and_then(|(_, v)| v.as_f64())
        });
    let alpha = pattern
        .or_else(|| get("lora_alpha").and_then(|v| v.as_f64()))
        .unwrap_or(rank as f64);
    let rs = get("use_rslora").and_then(|v| v.as_bool()) == Some(true);
    Ok(if rs {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    })
}

/// SDXL LoRAs (`lora_te1_` / `lora_te2_` / `text_encoder_2.`) on SDXL, SD ones
/// (`lora_te_`) on SD 1.x / 2.x.
fn check_family(parts: &Parts, (sd, xl): (bool, bool)) -> Result<(), String> {
    let model = if parts.is_sdxl() {
        "SDXL"
    } else {
        "SD 1.x / 2.x"
    };
    if xl && !parts.is_sdxl() {
        return Err(format!(
            "it is made for SDXL (it has keys for two text encoders) but the model is {model}"
        ));
    }
    if sd && !xl && parts.is_sdxl() {
        return Err(format!(
            "it is made for SD 1.x / 2.x (one text encoder, lora_te_* keys) but the model is {model}"
        ));
    }
    Ok(())
}

/// Merge every LoRA of `specs` into `parts`, noting each.
pub fn apply_all(parts: &mut Parts, specs: &[LoraSpec]) -> Result<()> {
    for spec in specs {
        let note = apply(parts, spec)?;
        parts.notes.push(note.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_take_an_optional_scale_after_the_last_colon() {
        let spec = |s: &str| s.parse::<LoraSpec>().unwrap();
        assert_eq!(spec("a.safetensors").scale, 1.0);
        assert_eq!(spec("a.safetensors:0.8").scale, 0.8);
        assert_eq!(spec("a.safetensors:-0.5").scale, -0.5);
        let windows = spec(r"C:\loras\a.safetensors");
        assert_eq!(
            (windows.path, windows.scale),
            (PathBuf::from(r"C:\loras\a.safetensors"), 1.0)
        );
        let both = spec(r"C:\loras\a.safetensors:2");
        assert_eq!(
            (both.path, both.scale),
            (PathBuf::from(r"C:\loras\a.safetensors"), 2.0)
        );
        assert!("".parse::<LoraSpec>().is_err());
        assert!("a.safetensors:inf".parse::<LoraSpec>().is_err());
        assert_eq!(spec("a.safetensors:0.8").to_string(), "a.safetensors:0.8");
    }

    #[test]
    fn peft_metadata_alphas_follow_the_adapter_config() {
        let configs: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"unet.r": 4, "unet.lora_alpha": 2, "unet.alpha_pattern": {"to_k": 6},
                "text_encoder.lora_alpha": 8, "text_encoder.use_rslora": true,
                "text_encoder_2.use_dora": true}"#,
        )
        .unwrap();
        let f = |component, module| peft_factor(&configs, component, module, 4);
        assert_eq!(f("unet", "mid_block.attentions.0.proj_in"), Ok(0.5));
        assert_eq!(
            f(
                "unet",
                "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"
            ),
            Ok(1.5)
        );
        // "to_k" is a whole name, not any suffix.
        assert_eq!(f("unet", "x.attn1.add_to_k"), Ok(0.5));
        assert_eq!(
            f("text_encoder", "text_model.encoder.layers.0.mlp.fc1"),
            Ok(4.0)
        );
        assert!(f("text_encoder_2", "x").unwrap_err().contains("DoRA"));
        // No config for a component: alpha = rank.
        let none = serde_json::Map::new();
        assert_eq!(peft_factor(&none, "unet", "x", 8), Ok(1.0));
    }

    #[test]
    fn keys_of_both_formats_are_parsed() {
        let k = parse_key("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight").unwrap();
        assert_eq!(
            (k.target, k.module, k.kohya, k.role),
            (
                Target::Text(1),
                "text_model_encoder_layers_0_mlp_fc1",
                true,
                Role::Up
            )
        );
        let k = parse_key("unet.mid_block.attentions.0.proj_in.lora_A.weight").unwrap();
        assert_eq!(
            (k.target, k.module, k.kohya, k.role),
            (
                Target::Unet,
                "mid_block.attentions.0.proj_in",
                false,
                Role::Down
            )
        );
        let k = parse_key("lora_unet_x_to_q.lokr_w2_a").unwrap();
        assert_eq!((k.module, k.role), ("x_to_q", Role::Lokr(4)));
        let k = parse_key("lora_unet_x_to_q.hada_w2_b").unwrap();
        assert_eq!((k.module, k.role), ("x_to_q", Role::Hada(3)));
        let k = parse_key("lora_unet_input_blocks_1_1_proj_in.alpha").unwrap();
        assert_eq!((k.target, k.role), (Target::Unet, Role::Alpha));
        for key in [
            "lora_unet_x.dora_scale",
            "lora_unet_x.hada_t1",
            "model.diffusion_model.conv_in.weight",
        ] {
            assert!(parse_key(key).is_none(), "{key}");
        }
    }
}
