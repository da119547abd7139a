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
            // The app always truncates (with a warning); nothing to add.
            Fix::Truncate => None,
            Fix::LocalFolder => Some("or pick \"Local folder…\" in the model list".into()),
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
