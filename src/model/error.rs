//! Errors the model layer reports with a fixed shape, so that callers can match on them
//! (`anyhow::Error::downcast_ref::<ModelError>()`) as well as print them.

use std::path::PathBuf;

/// A model-layer failure that a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model name named no known Hugging Face pipeline.
    #[error("unknown model '{name}'; valid names: {valid}")]
    UnknownModel {
        /// What the user typed.
        name: String,
        /// The accepted names, comma separated.
        valid: String,
    },

    /// A file the pipeline needs is not in the folder.
    #[error(
        "missing {what}: expected {path}\n{layout}",
        path = path.display(),
        layout = LAYOUT_HELP
    )]
    MissingFile {
        /// What the file is for (e.g. "UNet weights").
        what: String,
        /// Where it was looked for (the first candidate).
        path: PathBuf,
    },

    /// A PyTorch pickle file: never opened, since loading one can run code.
    #[error(
        "{path} is a PyTorch pickle file; pickle files can run code when they are loaded, so adiff never opens them: convert it to safetensors first, {how}",
        path = path.display(),
        how = kind.conversion(path)
    )]
    Pickle {
        /// The file.
        path: PathBuf,
        /// What it was given as (the conversion differs).
        kind: PickleKind,
    },

    /// A single-file (original-layout) checkpoint where a pipeline folder was expected.
    #[error(
        "{path} is a single-file {what}, not a pipeline folder (diffusers reads it with {pipeline}.from_single_file)",
        path = path.display()
    )]
    SingleFile {
        /// The file.
        path: PathBuf,
        /// What it was recognised as ([`super::single_file::Detected::describe`]).
        what: String,
        /// The diffusers pipeline class that converts it.
        pipeline: &'static str,
    },

    /// A file given as a VAE that holds no VAE decoder.
    #[error(
        "{path} holds no VAE: a VAE file has decoder.* tensors (the original or the diffusers layout), or first_stage_model.decoder.* in a whole checkpoint, but {found}",
        path = path.display()
    )]
    NotVae {
        /// The file.
        path: PathBuf,
        /// The prefixes of the names it does hold.
        found: String,
    },

    /// A single-file checkpoint without a VAE, and none given to use instead.
    #[error(
        "{path} holds no VAE (no first_stage_model.* tensors): it needs the VAE it was made for",
        path = path.display()
    )]
    NoVae {
        /// The checkpoint.
        path: PathBuf,
    },

    /// A checkpoint that lacks a tensor its layout must have.
    #[error(
        "{path} has no {name} ({what}): the checkpoint is incomplete, or of a layout adiff does not read",
        path = path.display()
    )]
    Incomplete {
        /// The file.
        path: PathBuf,
        /// The missing entry (under its diffusers name).
        name: String,
        /// The component.
        what: String,
    },

    /// A VAE file whose shape does not fit the model.
    #[error("{path} does not fit this model as its VAE: {problem}", path = path.display())]
    WrongVae {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        problem: String,
    },

    /// A LoRA file that cannot be applied to the model.
    #[error("LoRA {path}: {problem}", path = path.display())]
    Lora {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },

    /// A safetensors file that is no Stable Diffusion checkpoint adiff recognises.
    #[error(
        "{path} is not a Stable Diffusion checkpoint adiff recognises: a checkpoint has its UNet under model.diffusion_model.* and a text encoder under cond_stage_model.transformer.* (SD 1.x), cond_stage_model.model.* (SD 2.x) or conditioner.embedders.* (SDXL), but {found}{hint}",
        path = path.display()
    )]
    UnknownCheckpoint {
        /// The file.
        path: PathBuf,
        /// The prefixes of the names it does hold.
        found: String,
        /// What the file looks like instead, or empty.
        hint: String,
    },

    /// A weights file whose header or length does not add up.
    #[error("weights file {path} is truncated or corrupt: {reason}; delete it and download it again", path = path.display())]
    CorruptWeights {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The hub could not be reached (or refused a file).
    #[error(
        "could not reach huggingface.co to download {repo}/{file}: {cause}; check your network"
    )]
    Download {
        /// The repository, e.g. `stable-diffusion-v1-5/stable-diffusion-v1-5`.
        repo: String,
        /// The file inside it.
        file: String,
        /// The underlying error.
        cause: String,
    },

    /// A configuration this implementation cannot run.
    #[error("unsupported model configuration in {file}: {field}: {reason}", file = file.display())]
    Unsupported {
        /// The config file.
        file: PathBuf,
        /// The offending field.
        field: String,
        /// Why it is not supported.
        reason: String,
    },

    /// An image size the VAE cannot produce.
    #[error("{what} {value} is not a multiple of {factor} (the VAE's downsampling factor)")]
    BadImageSize {
        /// "width" or "height".
        what: &'static str,
        /// The value given.
        value: usize,
        /// The required factor.
        factor: usize,
    },
}

/// What a refused pickle file was given as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickleKind {
    /// A model (`--weights`).
    Model,
    /// A VAE (`--vae`).
    Vae,
    /// A LoRA (`--lora`).
    Lora,
}

impl PickleKind {
    /// How to convert such a file to safetensors.
    fn conversion(self, path: &std::path::Path) -> String {
        let p = path.display();
        match self {
            PickleKind::Model => format!(
                "on a machine where you trust it (with diffusers: StableDiffusionPipeline.from_single_file(\"{p}\").save_pretrained(\"DIR\", safe_serialization=True)) and load the folder"
            ),
            PickleKind::Vae => format!(
                "on a machine where you trust it (with diffusers: AutoencoderKL.from_single_file(\"{p}\").save_pretrained(\"DIR\", safe_serialization=True)) and use DIR/diffusion_pytorch_model.safetensors"
            ),
            PickleKind::Lora => format!(
                "on a machine where you trust it (with PyTorch: safetensors.torch.save_file(torch.load(\"{p}\", weights_only=True), \"lora.safetensors\")) and use lora.safetensors"
            ),
        }
    }
}

impl ModelError {
    /// What a front end can suggest in its own words: a local folder instead of the hub,
    /// a file loaded as a checkpoint, the VAE a checkpoint lacks.
    pub fn fix(&self) -> Option<crate::field::Fix> {
        use crate::field::Fix;
        match self {
            ModelError::UnknownModel { .. } | ModelError::Download { .. } => Some(Fix::LocalFolder),
            ModelError::SingleFile { .. } => Some(Fix::CheckpointFile),
            ModelError::NoVae { .. } => Some(Fix::VaeFile),
            _ => None,
        }
    }
}

/// The folder layout reported with a missing-file error.
pub const LAYOUT_HELP: &str = "a diffusers-format pipeline folder holds:\n  \
model_index.json\n  \
unet/config.json, unet/diffusion_pytorch_model.safetensors\n  \
vae/config.json, vae/diffusion_pytorch_model.safetensors\n  \
text_encoder/config.json, text_encoder/model.safetensors\n  \
tokenizer/tokenizer.json or tokenizer/vocab.json + tokenizer/merges.txt (+ tokenizer_config.json)\n  \
scheduler/scheduler_config.json\n  \
and for SDXL also text_encoder_2/ and tokenizer_2/";
