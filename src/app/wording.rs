//! The desktop app's names for settings: a setting is the control that sets it.

use crate::field::{Field, Fix, Wording};

/// The app's names: controls and menus.
pub struct Controls;

impl Wording for Controls {
    fn name(&self, field: Field) -> String {
        match field {
            Field::Scheduler => "Scheduler",
            Field::Steps => "Steps",
            Field::Guidance => "Guidance",
            Field::Width => "Width",
            Field::Height => "Height",
            Field::EarlyStopTau => "Early stop τ",
            Field::Frames => "Frames",
            // The rest read as the library's own names ("the prompt", "δ", "C_max").
            other => other.noun(),
        }
        .to_string()
    }

    fn fix(&self, fix: Fix) -> Option<String> {
        match fix {
            // The app always truncates (with a warning), and runs no benchmarks: nothing
            // to add.
            Fix::Truncate | Fix::Resume => None,
            Fix::LocalFolder => Some("or pick \"Local folder…\" in the model list".into()),
            Fix::CheckpointFile => {
                Some("load it as a file: pick \"Local file…\" in the model list".into())
            }
            Fix::VaeFile => Some("choose the VAE it was made for under VAE".into()),
            // The app has no prediction control: say what the command line does.
            Fix::EpsilonPrediction => Some(
                "the app cannot set the prediction type yet: a 512-px base model runs with adiff's --prediction epsilon".into(),
            ),
        }
    }

    fn fix_of(&self, cause: &(dyn std::error::Error + 'static)) -> Option<Fix> {
        cause
            .downcast_ref::<crate::model::ModelError>()
            .and_then(crate::model::ModelError::fix)
    }
}

/// An error on one line, settings named by their controls.
pub fn one_line(e: &anyhow::Error) -> String {
    crate::field::one_line(e, &Controls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Job;
    use crate::model::ModelSource;

    #[test]
    fn load_notes_and_model_errors_get_the_apps_words() {
        let note = crate::field::Note::new("SD 2.x: v-prediction at 768×768 assumed")
            .with_fix(Fix::EpsilonPrediction);
        assert!(
            note.worded(&Controls)
                .contains("the app cannot set the prediction type")
        );
        let e = anyhow::Error::new(crate::model::ModelError::NoVae {
            path: "m.safetensors".into(),
        });
        assert!(
            one_line(&e).ends_with("; choose the VAE it was made for under VAE"),
            "{}",
            one_line(&e)
        );
        assert!(!one_line(&e).contains("--"));
    }

    #[test]
    fn job_errors_name_the_control() {
        let mut j = Job::new(ModelSource::Local("x".into()), "  ");
        let e = anyhow::Error::new(j.validate().unwrap_err());
        assert!(
            one_line(&e).starts_with("the prompt is empty"),
            "{}",
            one_line(&e)
        );
        j.prompt = "a fox".into();
        j.width = Some(65);
        let e = anyhow::Error::new(j.validate().unwrap_err());
        assert_eq!(
            one_line(&e),
            "Width 65 is not a positive multiple of 8 (try 64)"
        );
    }
}
