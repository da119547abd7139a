//! What the UI asks of the app. Every action a click, a key, a drag or a dropped file makes
//! (Generate, Cancel, a re-run, a dialog, an export, a dismissed message, the clip player's
//! buttons) is a [`UiCommand`]: the panels queue them while they draw, and
//! [`GuiApp`](super::GuiApp) applies the queue once per frame, after the panels ran, in the
//! order the commands were queued ([`GuiApp::apply_commands`]). The panels read the app's
//! state and edit only the plain settings they are given; they never write the app's state.

use super::export::ExportKind;
use super::player::Player;
use super::{DialogKind, GuiApp, egui};
use std::path::PathBuf;

/// One action of the UI, applied by the app after the panels drew the frame.
#[derive(Debug, Clone, PartialEq)]
pub enum UiCommand {
    /// Start a comparison with the settings (Generate, Ctrl+Enter).
    Generate,
    /// Stop the running job at the next step (Cancel, Esc).
    Cancel,
    /// A method or one of its settings changed (or a change is waiting): re-run the sides
    /// that changed, when re-running is on, once the value is `settled` (no longer dragged
    /// or typed into); until then the re-run waits.
    Rerun {
        /// Whether the value stopped changing.
        settled: bool,
    },
    /// Open a file chooser (on its own thread; what it picks comes back as a path).
    OpenDialog(DialogKind),
    /// A path typed into a path field: taken as if chosen in that file chooser.
    UsePath(DialogKind, PathBuf),
    /// A file dropped on the window: a model, LoRA, VAE or motion module.
    Drop(PathBuf),
    /// Export into the export folder under its default name.
    Export(ExportKind),
    /// Hide the error message.
    DismissError,
    /// Hide the note about a file chooser that showed nothing.
    DismissDialogNote,
    /// Move the wipe view's divider (0 = left edge … 1).
    Wipe(f32),
    /// The clip player's buttons, keys, slider and PSNR strip.
    Player(PlayerAction),
    /// Show or hide the frame-time overlay (F12).
    ToggleOverlay,
}

impl UiCommand {
    /// Whether the frame drawn before the command was applied no longer shows the app's
    /// state (the app then draws the frame again at once). A waiting re-run changes nothing
    /// on screen, and the wipe view already drew its divider where it was dragged.
    pub fn redraws(&self) -> bool {
        !matches!(self, Self::Rerun { settled: false } | Self::Wipe(_))
    }
}

/// What the clip player is asked to do. Both sides show the player's one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerAction {
    /// One frame on (`+1`) or back (`-1`), pausing (Next / Previous frame, the arrow keys).
    Step(isize),
    /// Play or pause (Space).
    Toggle,
    /// Pause on this frame (the frame slider, a click on the PSNR strip).
    GoTo(usize),
}

impl PlayerAction {
    /// Apply to `player`, for a clip of `frames` frames that loops or not.
    pub fn apply(self, player: &mut Player, frames: usize, looping: bool) {
        match self {
            Self::Step(by) => player.step(by, frames, looping),
            Self::Toggle => player.toggle(frames, looping),
            Self::GoTo(frame) => {
                player.pause();
                // (The strip may name a frame the live clip has not reached yet.)
                player.seek(frame, frames.max(frame + 1));
            }
        }
    }
}

/// The commands of one frame, in the order they were queued.
#[derive(Debug, Default)]
pub struct Commands(Vec<UiCommand>);

impl Commands {
    /// Queue `command`.
    pub fn push(&mut self, command: UiCommand) {
        self.0.push(command);
    }

    /// The queued commands, oldest first; the queue is empty afterwards.
    pub fn take(&mut self) -> Vec<UiCommand> {
        std::mem::take(&mut self.0)
    }
}

/// The re-run rule: a change of a method or its settings waits while its value is being
/// edited (a slider dragged, a number typed), and re-runs once, when it settles.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rerun {
    pending: bool,
}

impl Rerun {
    /// A [`UiCommand::Rerun`]: whether to re-run now.
    pub fn apply(&mut self, settled: bool) -> bool {
        self.pending = !settled;
        settled
    }

    /// The command the method controls queue in a frame where something `changed` (or not)
    /// and a value is still being `edited` (or not): none when nothing is to be done.
    pub fn command(self, changed: bool, editing: bool) -> Option<UiCommand> {
        (changed || (self.pending && !editing)).then_some(UiCommand::Rerun { settled: !editing })
    }
}

impl GuiApp {
    /// Apply the commands the frame queued, in order (once per frame, after the panels);
    /// when one changed what the frame shows, egui draws the frame again at once.
    pub(super) fn apply_commands(&mut self, ctx: &egui::Context) {
        let commands = self.commands.take();
        let redraw = commands.iter().any(UiCommand::redraws);
        for command in commands {
            self.apply(command);
        }
        if redraw {
            self.redrawn_frames += 1;
            ctx.request_discard("UI commands applied");
            if !ctx.will_discard() {
                ctx.request_repaint();
            }
        }
    }

    /// Apply one command.
    fn apply(&mut self, command: UiCommand) {
        match command {
            UiCommand::Generate => self.generate(),
            UiCommand::Cancel => self.cancel(),
            UiCommand::Rerun { settled } => {
                if self.rerun.apply(settled) && self.settings.auto_rerun {
                    self.generate();
                }
            }
            UiCommand::OpenDialog(kind) => self.open_dialog(kind),
            UiCommand::UsePath(kind, path) => self.take_path(kind, path),
            UiCommand::Drop(path) => self.take_dropped(path),
            UiCommand::Export(kind) => self.export(kind, None),
            UiCommand::DismissError => self.session.error = None,
            UiCommand::DismissDialogNote => self.dialog_note = None,
            UiCommand::Wipe(at) => self.wipe = at.clamp(0.0, 1.0),
            UiCommand::Player(action) => action.apply(
                &mut self.player,
                self.session.clip_len(),
                self.settings.loop_playback,
            ),
            UiCommand::ToggleOverlay => self.show_overlay = !self.show_overlay,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_come_out_once_in_the_order_queued() {
        let mut q = Commands::default();
        q.push(UiCommand::Generate);
        q.push(UiCommand::Export(ExportKind::TraceJson));
        q.push(UiCommand::Cancel);
        assert_eq!(
            q.take(),
            [
                UiCommand::Generate,
                UiCommand::Export(ExportKind::TraceJson),
                UiCommand::Cancel
            ]
        );
        assert_eq!(q.take(), [], "applied once: the next frame starts empty");
    }

    #[test]
    fn a_rerun_waits_until_the_value_settles() {
        let mut r = Rerun::default();
        // Nothing changed: nothing queued.
        assert_eq!(r.command(false, false), None);
        assert_eq!(r.command(false, true), None);
        // A slider dragged: the re-run waits.
        let c = r.command(true, true).unwrap();
        assert_eq!(c, UiCommand::Rerun { settled: false });
        assert!(!c.redraws());
        assert!(!r.apply(false));
        // Still dragged, no new value: nothing queued.
        assert_eq!(r.command(false, true), None);
        // Released: one re-run.
        assert_eq!(
            r.command(false, false),
            Some(UiCommand::Rerun { settled: true })
        );
        assert!(r.apply(true));
        assert_eq!(r.command(false, false), None, "once");
        // A click on a checkbox: at once.
        assert_eq!(
            r.command(true, false),
            Some(UiCommand::Rerun { settled: true })
        );
    }

    #[test]
    fn player_actions_move_the_one_frame() {
        let mut p = Player::default();
        PlayerAction::Step(1).apply(&mut p, 4, true);
        assert_eq!(p.frame(), 1);
        PlayerAction::Step(-2).apply(&mut p, 4, true);
        assert_eq!(p.frame(), 3, "wraps when looping");
        PlayerAction::Toggle.apply(&mut p, 4, true);
        assert!(p.is_playing());
        PlayerAction::GoTo(2).apply(&mut p, 4, true);
        assert_eq!((p.frame(), p.is_playing()), (2, false), "a seek pauses");
        PlayerAction::GoTo(5).apply(&mut p, 3, true);
        assert_eq!(p.frame(), 5, "a frame the live clip has not reached yet");
    }
}
