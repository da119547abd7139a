//! Where the weights come from: a local diffusers-format folder, or a known Hugging Face
//! repository fetched into the standard Hugging Face cache.
//!
//! Either way resolution ends in a [`ModelFiles`]: the path of every file the pipeline
//! loads, so that loading has a single code path.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result};

use super::hub::{HubOptions, fetch_files};
use crate::model::error::ModelError;
use crate::model::single_file;
use crate::model::tokenizer::TokenizerFiles;

/// The Hugging Face pipelines `--model` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HubModel {
    /// Stable Diffusion 1.5 (512², ε-prediction).
    Sd15,
    /// Stable Diffusion 2.1 *base* (512², ε-prediction). The 768² `stable-diffusion-2-1`
    /// is v-prediction; it loads from a local folder but is not the default.
    Sd21,
    /// Stable Diffusion XL base 1.0 (1024²).
    Sdxl,
    /// SD-Turbo (SD 2.1 architecture, distilled for 1–4 steps, "trailing" spacing).
    SdTurbo,
    /// ModelScope text-to-video 1.7B (`UNet3DConditionModel`, 256², 16 frames).
    ModelScopeT2v,
}

impl HubModel {
    /// Every known model.
    pub const ALL: [HubModel; 5] = [
        HubModel::Sd15,
        HubModel::Sd21,
        HubModel::Sdxl,
        HubModel::SdTurbo,
        HubModel::ModelScopeT2v,
    ];

    /// The canonical name (what `--model` takes).
    pub fn name(self) -> &'static str {
        match self {
            HubModel::Sd15 => "sd15",
            HubModel::Sd21 => "sd21",
            HubModel::Sdxl => "sdxl",
            HubModel::SdTurbo => "sd-turbo",
            HubModel::ModelScopeT2v => "modelscope-t2v",
        }
    }

    /// The Hugging Face repository.
    pub fn repo(self) -> &'static str {
        match self {
            HubModel::Sd15 => "stable-diffusion-v1-5/stable-diffusion-v1-5",
            HubModel::Sd21 => "stabilityai/stable-diffusion-2-1-base",
            HubModel::Sdxl => "stabilityai/stable-diffusion-xl-base-1.0",
            HubModel::SdTurbo => "stabilityai/sd-turbo",
            HubModel::ModelScopeT2v => "ali-vilab/text-to-video-ms-1.7b",
        }
    }

    /// Whether this is an SDXL pipeline (two text encoders, added conditioning).
    pub fn is_sdxl(self) -> bool {
        self == HubModel::Sdxl
    }

    /// The files fetched from the repository (relative paths).
    pub fn files(self) -> Vec<String> {
        let mut files: Vec<String> = [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ]
        .map(String::from)
        .to_vec();
        let suffixes = if self.is_sdxl() {
            &["", "_2"][..]
        } else {
            &[""][..]
        };
        for s in suffixes {
            files.push(format!("text_encoder{s}/config.json"));
            files.push(format!("text_encoder{s}/model.safetensors"));
            for f in [
                "vocab.json",
                "merges.txt",
                "tokenizer_config.json",
                "special_tokens_map.json",
            ] {
                files.push(format!("tokenizer{s}/{f}"));
            }
        }
        files
    }

    fn valid_names() -> String {
        Self::ALL.map(|m| m.name()).join(", ")
    }
}

impl fmt::Display for HubModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HubModel {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key: String = s
            .trim()
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
            .collect();
        Ok(match key.as_str() {
            "sd15" | "sdv15" | "stablediffusionv15" | "stablediffusion15" | "v15" => HubModel::Sd15,
            "sd21"
            | "sdv21"
            | "sd21base"
            | "stablediffusion21"
            | "stablediffusion21base"
            | "v21" => HubModel::Sd21,
            "sdxl" | "sdxlbase" | "sdxl10" | "stablediffusionxl" | "xl" => HubModel::Sdxl,
            "sdturbo" | "turbo" => HubModel::SdTurbo,
            "modelscopet2v"
            | "modelscope"
            | "texttovideoms17b"
            | "t2vms"
            | "modelscopetexttovideo" => HubModel::ModelScopeT2v,
            _ => {
                return Err(ModelError::UnknownModel {
                    name: s.to_string(),
                    valid: Self::valid_names(),
                });
            }
        })
    }
}

/// Where to load a pipeline from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelSource {
    /// A local diffusers-format folder (`--weights DIR`).
    Local(PathBuf),
    /// A known hub repository (`--model NAME`), cached in the Hugging Face cache.
    Hub(HubModel),
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Local(p) => write!(f, "{}", p.display()),
            ModelSource::Hub(m) => write!(f, "{} ({})", m.name(), m.repo()),
        }
    }
}

/// One model component's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFiles {
    /// `config.json`.
    pub config: PathBuf,
    /// The safetensors file(s), several when sharded.
    pub weights: Vec<PathBuf>,
}

/// Every file a pipeline loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// What was resolved (a folder or a repository), for messages.
    pub origin: String,
    /// `model_index.json` when present.
    pub model_index: Option<PathBuf>,
    /// The UNet.
    pub unet: ComponentFiles,
    /// The VAE; `None` for a pixel-space pipeline (no `vae/` folder and no `"vae"` entry
    /// in `model_index.json`): the UNet then works on RGB in [-1, 1] directly.
    pub vae: Option<ComponentFiles>,
    /// One text encoder, or two for SDXL (`text_encoder`, `text_encoder_2`).
    pub text_encoders: Vec<ComponentFiles>,
    /// One tokenizer per text encoder.
    pub tokenizers: Vec<TokenizerFiles>,
    /// `scheduler/scheduler_config.json`.
    pub scheduler_config: PathBuf,
}

impl ModelFiles {
    /// Whether this is a two-encoder (SDXL) pipeline.
    pub fn is_sdxl(&self) -> bool {
        self.text_encoders.len() == 2
    }

    /// Resolve a local diffusers folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        if dir.is_file() {
            return Err(single_file_error(dir));
        }
        if std::fs::symlink_metadata(dir).is_ok()
            && let Some(problem) =
                crate::input_path::problem(dir, crate::input_path::Want::FileOrFolder)
        {
            anyhow::bail!(
                "the model {} {problem}: give a model folder or a .safetensors checkpoint file",
                dir.display()
            );
        }
        if !dir.is_dir() {
            return Err(ModelError::MissingFile {
                what: "model folder".into(),
                path: dir.to_path_buf(),
            }
            .into());
        }
        let lookup = |rel: &str| {
            let p = dir.join(rel);
            p.is_file().then_some(p)
        };
        Self::locate(&dir.display().to_string(), dir, &lookup)
    }

    /// Build from a lookup of relative paths; `base` is where missing files are reported.
    fn locate(origin: &str, base: &Path, lookup: &dyn Fn(&str) -> Option<PathBuf>) -> Result<Self> {
        let missing = |what: &str, rel: &str| -> anyhow::Error {
            ModelError::MissingFile {
                what: what.to_string(),
                path: base.join(rel),
            }
            .into()
        };
        let require = |what: &str, rel: &str| lookup(rel).ok_or_else(|| missing(what, rel));

        let model_index = lookup("model_index.json");
        let index = match &model_index {
            Some(p) => crate::model::config::ModelIndex::from_optional(Some(p))?,
            None => Default::default(),
        };
        let class_name = index.class_name.clone();
        let sdxl_by_class = class_name.as_deref().is_some_and(|c| c.contains("XL"));
        let sdxl = sdxl_by_class || lookup("text_encoder_2/config.json").is_some();

        let component = |name: &str, stem: &str, what: &str| -> Result<ComponentFiles> {
            let config = require(&format!("{what} config"), &format!("{name}/config.json"))?;
            let weights = find_weights(name, stem, base, lookup).map_err(|e| match e {
                WeightsLookup::Missing => missing(
                    &format!("{what} weights"),
                    &format!("{name}/{stem}.safetensors"),
                ),
                WeightsLookup::Other(e) => e,
            })?;
            Ok(ComponentFiles { config, weights })
        };
        let unet = component("unet", "diffusion_pytorch_model", "UNet")?;
        // Pixel space: no "vae" in model_index.json and nothing under vae/.
        let no_vae = index.vae.as_ref().is_none_or(|v| v.is_null())
            && lookup("vae/config.json").is_none()
            && find_weights("vae", "diffusion_pytorch_model", base, lookup).is_err();
        let vae = if no_vae {
            None
        } else {
            Some(component("vae", "diffusion_pytorch_model", "VAE")?)
        };
        let suffixes: &[&str] = if sdxl { &["", "_2"] } else { &[""] };
        let mut text_encoders = vec![];
        let mut tokenizers = vec![];
        for s in suffixes {
            text_encoders.push(component(
                &format!("text_encoder{s}"),
                "model",
                &format!("text encoder{s}"),
            )?);
            let t = format!("tokenizer{s}");
            let files = TokenizerFiles {
                tokenizer_json: lookup(&format!("{t}/tokenizer.json")),
                vocab: lookup(&format!("{t}/vocab.json")),
                merges: lookup(&format!("{t}/merges.txt")),
                config: lookup(&format!("{t}/tokenizer_config.json")),
                special_tokens_map: lookup(&format!("{t}/special_tokens_map.json")),
            };
            if !files.is_usable() {
                let rel = if files.vocab.is_some() {
                    format!("{t}/merges.txt")
                } else {
                    format!("{t}/vocab.json")
                };
                return Err(missing(
                    &format!("{t} (tokenizer.json, or vocab.json and merges.txt)"),
                    &rel,
                ));
            }
            tokenizers.push(files);
        }
        let scheduler_config = require("scheduler config", "scheduler/scheduler_config.json")?;
        Ok(Self {
            origin: origin.to_string(),
            model_index,
            unet,
            vae,
            text_encoders,
            tokenizers,
            scheduler_config,
        })
    }
}

enum WeightsLookup {
    Missing,
    Other(anyhow::Error),
}

/// The safetensors weights of one diffusers component folder on its own (such as a
/// `unet/` folder): `<stem>.safetensors`, its `.fp16` variant or the shards of an index;
/// pickle weights are refused with the same message as for whole pipelines.
pub fn component_weights(dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    let lookup = |rel: &str| {
        let p = dir.join(rel);
        p.is_file().then_some(p)
    };
    find_weights(".", stem, dir, &lookup).map_err(|e| match e {
        WeightsLookup::Missing => anyhow::anyhow!(
            "{} has no {stem}.safetensors (nor a .fp16 variant or a sharded index)",
            dir.display()
        ),
        WeightsLookup::Other(e) => e,
    })
}

/// `<name>/<stem>.safetensors`, its `.fp16` variant, or a sharded index.
fn find_weights(
    name: &str,
    stem: &str,
    base: &Path,
    lookup: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Vec<PathBuf>, WeightsLookup> {
    for candidate in [
        format!("{name}/{stem}.safetensors"),
        format!("{name}/{stem}.fp16.safetensors"),
    ] {
        if let Some(p) = lookup(&candidate) {
            return Ok(vec![p]);
        }
    }
    for index in [
        format!("{name}/{stem}.safetensors.index.json"),
        format!("{name}/{stem}.safetensors.index.fp16.json"),
    ] {
        if let Some(p) = lookup(&index) {
            return shards_of(&p, name, base, lookup).map_err(WeightsLookup::Other);
        }
    }
    for pickle in [
        format!("{name}/{stem}.bin"),
        format!("{name}/{stem}.fp16.bin"),
        format!("{name}/{stem}.ckpt"),
    ] {
        if lookup(&pickle).is_some() {
            return Err(WeightsLookup::Other(anyhow::anyhow!(
                "only safetensors weights are supported, but {} holds PyTorch pickle weights ({pickle}); \
                 convert them to safetensors (e.g. diffusers' save_pretrained(..., safe_serialization=True))",
                base.display()
            )));
        }
    }
    Err(WeightsLookup::Missing)
}

/// Why a file given where a model folder belongs does not load: a pickle (never opened), a
/// single-file checkpoint (its family named), or something else.
fn single_file_error(path: &Path) -> anyhow::Error {
    if let Err(pickle) = single_file::refuse_pickle(path, crate::model::error::PickleKind::Model) {
        return pickle.into();
    }
    if !single_file::is_safetensors(path) {
        return ModelError::MissingFile {
            what: "model folder (this is a file)".into(),
            path: path.to_path_buf(),
        }
        .into();
    }
    // A truncated or corrupt file says so before anything else.
    let checked = match crate::model::checkpoint::check_safetensors(path) {
        Ok(checked) => checked,
        Err(e) => return e,
    };
    match single_file::detect(&checked) {
        Ok(found) => ModelError::SingleFile {
            path: path.to_path_buf(),
            what: found.describe(),
            pipeline: found.family.pipeline_class(),
        },
        Err(e) => e,
    }
    .into()
}

fn shards_of(
    index: &Path,
    name: &str,
    base: &Path,
    lookup: &dyn Fn(&str) -> Option<PathBuf>,
) -> Result<Vec<PathBuf>> {
    let json: serde_json::Value = crate::model::config::read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .with_context(|| format!("{} has no weight_map", index.display()))?;
    let files: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
    files
        .into_iter()
        .map(|f| {
            let rel = format!("{name}/{f}");
            lookup(&rel).ok_or_else(|| {
                ModelError::MissingFile {
                    what: format!("weights shard listed in {}", index.display()),
                    path: base.join(&rel),
                }
                .into()
            })
        })
        .collect()
}

/// The name `--model` takes for the built-in model.
pub const BUILTIN_SHAPES: &str = "shapes";

/// The folder of the built-in "shapes" model: `$ADIFF_SHAPES_MODEL` when set, else
/// `assets/models/shapes` under the current directory when it exists, else the one in the
/// source tree this binary was built from.
pub fn builtin_shapes_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ADIFF_SHAPES_MODEL") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from("assets/models/shapes");
    if local.join("model_index.json").is_file() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/shapes")
}

impl ModelSource {
    /// A model name: `shapes` (the built-in model, a local folder) or a hub model.
    pub fn from_name(name: &str) -> Result<Self> {
        if name.trim().eq_ignore_ascii_case(BUILTIN_SHAPES) {
            return Ok(ModelSource::Local(builtin_shapes_dir()));
        }
        let hub = name.parse().map_err(|e| match e {
            ModelError::UnknownModel { name, valid } => ModelError::UnknownModel {
                name,
                valid: format!("{valid}, {BUILTIN_SHAPES} (built in)"),
            },
            other => other,
        })?;
        Ok(ModelSource::Hub(hub))
    }

    /// The model used when a front end is given none: Stable Diffusion 1.5
    /// when it is complete in the hub cache (no download is started), else the built-in
    /// `shapes` model, so that a fresh offline machine works. Returns the source and a
    /// one-line explanation for the user.
    pub fn default_for(opts: &HubOptions) -> (Self, String) {
        if let Ok(cache_dir) = opts.resolved_cache_dir()
            && hub_model_cached(HubModel::Sd15, &cache_dir)
        {
            return (
                ModelSource::Hub(HubModel::Sd15),
                format!(
                    "using Stable Diffusion 1.5 from the hub cache {}",
                    cache_dir.display()
                ),
            );
        }
        (
            ModelSource::Local(builtin_shapes_dir()),
            "no Stable Diffusion weights in the hub cache: using the built-in shapes model"
                .to_string(),
        )
    }

    /// Resolve to local files, downloading from the hub when needed.
    pub fn resolve(&self, opts: &HubOptions) -> Result<ModelFiles> {
        match self {
            ModelSource::Local(dir) => ModelFiles::from_dir(dir),
            ModelSource::Hub(model) => resolve_hub(*model, opts),
        }
    }
}

/// Whether every file `model` needs is in the hub cache at `cache_dir`.
pub fn hub_model_cached(model: HubModel, cache_dir: &Path) -> bool {
    let cache = hf_hub::Cache::new(cache_dir.to_path_buf());
    let cached = cache.model(model.repo().to_string());
    model
        .files()
        .iter()
        .filter(|rel| !rel.ends_with("special_tokens_map.json"))
        .all(|rel| cached.get(rel).is_some())
}

fn resolve_hub(model: HubModel, opts: &HubOptions) -> Result<ModelFiles> {
    let cache_dir = opts.resolved_cache_dir()?;
    let repo_id = model.repo();
    let found = fetch_files(repo_id, model.files(), opts)?;
    let origin = format!("{repo_id} (cache {})", cache_dir.display());
    let base = cache_dir.join(format!("models--{}", repo_id.replace('/', "--")));
    ModelFiles::locate(&origin, &base, &|rel: &str| found.get(rel).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_is_shapes_without_cached_sd_weights() {
        let empty = std::env::temp_dir().join(format!("adiff-empty-hub-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let opts = HubOptions {
            cache_dir: Some(empty.clone()),
            offline: true,
            ..HubOptions::default()
        };
        assert!(!hub_model_cached(HubModel::Sd15, &empty));
        let (source, why) = ModelSource::default_for(&opts);
        assert_eq!(source, ModelSource::Local(builtin_shapes_dir()));
        assert!(why.contains("built-in shapes model"), "{why}");
        std::fs::remove_dir_all(&empty).ok();
    }

    #[test]
    fn shapes_names_the_builtin_folder() {
        match ModelSource::from_name("Shapes").unwrap() {
            ModelSource::Local(p) => assert!(p.ends_with("assets/models/shapes"), "{p:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            ModelSource::from_name("sd15").unwrap(),
            ModelSource::Hub(HubModel::Sd15)
        );
    }

    #[test]
    fn hub_names_parse_and_unknown_names_list_valid_ones() {
        assert_eq!("sd15".parse::<HubModel>().unwrap(), HubModel::Sd15);
        assert_eq!("SD-1.5".parse::<HubModel>().unwrap(), HubModel::Sd15);
        assert_eq!("sd2.1".parse::<HubModel>().unwrap(), HubModel::Sd21);
        assert_eq!("sdxl".parse::<HubModel>().unwrap(), HubModel::Sdxl);
        assert_eq!("sd-turbo".parse::<HubModel>().unwrap(), HubModel::SdTurbo);
        for m in HubModel::ALL {
            assert_eq!(m.name().parse::<HubModel>().unwrap(), m);
        }
        let err = "sd3".parse::<HubModel>().unwrap_err().to_string();
        assert!(err.contains("unknown model 'sd3'"), "{err}");
        assert!(err.contains("sd15, sd21, sdxl, sd-turbo"), "{err}");
        let e = "sd3".parse::<HubModel>().unwrap_err();
        assert_eq!(e.fix(), Some(crate::field::Fix::LocalFolder));
    }

    #[test]
    fn hub_file_lists() {
        let f = HubModel::Sd15.files();
        assert!(f.contains(&"unet/diffusion_pytorch_model.safetensors".to_string()));
        assert!(!f.iter().any(|x| x.contains("_2/")));
        let f = HubModel::Sdxl.files();
        assert!(f.contains(&"text_encoder_2/model.safetensors".to_string()));
        assert!(f.contains(&"tokenizer_2/merges.txt".to_string()));
        let m: HubModel = "modelscope-t2v".parse().unwrap();
        assert_eq!(m.repo(), "ali-vilab/text-to-video-ms-1.7b");
        assert!(!m.is_sdxl());
    }

    #[test]
    fn offline_hub_without_cache_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let opts = HubOptions {
            cache_dir: Some(dir.path().to_path_buf()),
            offline: true,
            ..HubOptions::default()
        };
        let err = ModelSource::Hub(HubModel::Sd15).resolve(&opts).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("could not reach huggingface.co to download stable-diffusion-v1-5/stable-diffusion-v1-5/"), "{msg}");
        let fix = err.downcast_ref::<ModelError>().and_then(ModelError::fix);
        assert_eq!(fix, Some(crate::field::Fix::LocalFolder), "{msg}");
    }

    #[test]
    fn hub_resolution_reads_the_standard_cache_layout() {
        // A fake cache entry laid out as huggingface_hub writes it.
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("models--stabilityai--sd-turbo");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123").unwrap();
        let snap = repo.join("snapshots/abc123");
        for rel in HubModel::SdTurbo.files() {
            let p = snap.join(&rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, if rel.ends_with(".json") { "{}" } else { "" }).unwrap();
        }
        let opts = HubOptions {
            cache_dir: Some(dir.path().to_path_buf()),
            offline: true,
            ..HubOptions::default()
        };
        let files = ModelSource::Hub(HubModel::SdTurbo).resolve(&opts).unwrap();
        assert_eq!(
            files.unet.weights,
            vec![snap.join("unet/diffusion_pytorch_model.safetensors")]
        );
        assert_eq!(
            files.scheduler_config,
            snap.join("scheduler/scheduler_config.json")
        );
        assert!(!files.is_sdxl());
        assert!(files.tokenizers[0].tokenizer_json.is_none());
    }

    #[test]
    fn missing_files_name_the_file_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFiles::from_dir(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("missing UNet config"), "{msg}");
        assert!(msg.contains("unet/config.json"), "{msg}");
        assert!(msg.contains("text_encoder/model.safetensors"), "{msg}");
        std::fs::create_dir_all(dir.path().join("unet")).unwrap();
        std::fs::write(dir.path().join("unet/config.json"), "{}").unwrap();
        std::fs::write(dir.path().join("unet/diffusion_pytorch_model.bin"), "").unwrap();
        let msg = ModelFiles::from_dir(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("only safetensors"), "{msg}");
        let msg = ModelFiles::from_dir(&dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing model folder"), "{msg}");
    }
}
