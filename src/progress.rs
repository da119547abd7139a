//! Progress bars on stderr in the project's one style (every command's bars, the hub
//! download's).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` units drawn with `template` (indicatif's syntax; `{prefix}`, `{msg}`…) in
/// the project's one style; hidden when `visible` is false.
pub fn bar(len: u64, template: &str, visible: bool) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if visible {
        bar.set_style(style(template));
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

/// The project's bar style with `template`.
pub fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}
