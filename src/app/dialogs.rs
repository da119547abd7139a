//! File choosers. The system's (rfd: the desktop portal, else zenity) runs on its own
//! thread; when it cannot open — no portal, no zenity — it returns at once with nothing,
//! and the app says so in the window and points at the path field beside every button
//! that opens one.

use super::export::ExportKind;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What a chooser is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogKind {
    /// A diffusers-format model folder.
    ModelFolder,
    /// A single-file checkpoint.
    ModelFile,
    /// A VAE file.
    Vae,
    /// A LoRA file.
    Lora,
    /// An AnimateDiff motion module (a `.safetensors` file; a MotionAdapter folder is
    /// typed or dropped).
    Motion,
    /// The export folder.
    ExportDir,
    /// Where to save an export.
    SaveAs(ExportKind),
}

impl DialogKind {
    /// The dialog's title.
    pub fn title(self) -> &'static str {
        match self {
            DialogKind::ModelFolder => "Choose a diffusers-format pipeline folder",
            DialogKind::ModelFile => "Choose a single-file checkpoint",
            DialogKind::Vae => "Choose a VAE file",
            DialogKind::Lora => "Choose a LoRA file",
            DialogKind::Motion => "Choose a motion module (AnimateDiff .safetensors)",
            DialogKind::ExportDir => "Choose the export folder",
            DialogKind::SaveAs(_) => "Export",
        }
    }

    /// The path field that does the same job, as the note names it.
    fn field(self) -> &'static str {
        match self {
            DialogKind::ModelFolder => "Model folder",
            DialogKind::ModelFile => "Checkpoint file",
            DialogKind::Vae => "VAE file",
            DialogKind::Lora => "LoRA file",
            DialogKind::Motion => "Motion module",
            DialogKind::ExportDir => "Export folder",
            DialogKind::SaveAs(_) => "Save as",
        }
    }
}

/// One request to a chooser.
#[derive(Debug, Clone)]
pub struct DialogRequest {
    /// What is chosen.
    pub kind: DialogKind,
    /// The folder it opens in.
    pub start_dir: Option<PathBuf>,
    /// The suggested file name (save dialogs).
    pub file_name: String,
}

/// A file chooser: shows a dialog for the request and returns the path picked (`None`:
/// closed, or no chooser could open).
pub type FileChooser = fn(&DialogRequest) -> Option<PathBuf>;

/// The desktop's chooser (rfd).
pub fn system_chooser(r: &DialogRequest) -> Option<PathBuf> {
    let mut d = rfd::FileDialog::new().set_title(r.kind.title());
    if let Some(dir) = &r.start_dir {
        d = d.set_directory(dir);
    }
    match r.kind {
        DialogKind::ModelFolder | DialogKind::ExportDir => d.pick_folder(),
        DialogKind::ModelFile | DialogKind::Vae | DialogKind::Lora | DialogKind::Motion => {
            d.add_filter("safetensors", &["safetensors"]).pick_file()
        }
        DialogKind::SaveAs(kind) => d
            .set_file_name(&r.file_name)
            .add_filter(kind.extension().to_uppercase(), &[kind.extension()])
            .save_file(),
    }
}

/// What a chooser reported.
#[derive(Debug)]
pub(super) enum Picked {
    /// A path.
    Path(DialogKind, PathBuf),
    /// Nothing; `quick`: it returned too soon for a person to have closed it, so most
    /// likely it never opened.
    Nothing { kind: DialogKind, quick: bool },
}

/// Faster than anyone closes a dialog: the chooser did not open.
const QUICK: Duration = Duration::from_millis(1000);

/// Run `chooser` for `request` (on the caller's thread).
pub(super) fn run(chooser: FileChooser, request: &DialogRequest) -> Picked {
    let t0 = Instant::now();
    match chooser(request) {
        Some(p) => Picked::Path(request.kind, p),
        None => Picked::Nothing {
            kind: request.kind,
            quick: t0.elapsed() < QUICK,
        },
    }
}

/// The note shown when the chooser for `kind` did not open.
pub(super) fn not_opened_note(kind: DialogKind) -> String {
    format!(
        "The system file chooser did not open (this desktop has no file-chooser portal or \
         zenity). Type the path into the “{}” field instead.",
        kind.field()
    )
}
