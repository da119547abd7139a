//! What each side is called. A side is named by its method everywhere — titles, legends,
//! key numbers, status lines, export buttons and file names — never as "baseline" or
//! "adaptive" when it runs something else.

use super::compose::method_title;
use super::protocol::Side;
use crate::sampler::Method;

/// The two sides' names: each method's title, with "(left)" / "(right)" added when both
/// sides run the same kind of method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideNames {
    /// The left side's name.
    pub left: String,
    /// The right side's name.
    pub right: String,
}

impl SideNames {
    /// The names of a comparison of `left` (the reference) and `right`.
    pub fn new(left: &Method, right: &Method) -> Self {
        let (l, r) = (method_title(left), method_title(right));
        if l == r {
            Self {
                left: format!("{l} (left)"),
                right: format!("{r} (right)"),
            }
        } else {
            Self {
                left: l.to_string(),
                right: r.to_string(),
            }
        }
    }

    /// One side's name.
    pub fn of(&self, side: Side) -> &str {
        match side {
            Side::Baseline => &self.left,
            Side::Adaptive => &self.right,
        }
    }

    /// `"Fewer steps vs DeepCache"`: the right side against the left.
    pub fn versus(&self) -> String {
        format!("{} vs {}", self.right, self.left)
    }
}

/// The word a file name uses for one side: `left-deepcache`, `right-adaptive-forecast`.
pub fn file_word(side: Side, method: &Method) -> String {
    let which = match side {
        Side::Baseline => "left",
        Side::Adaptive => "right",
    };
    let name: String = method
        .name()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{which}-{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_named_by_their_methods() {
        let n = SideNames::new(&Method::named("deepcache").unwrap(), &Method::steps(25));
        assert_eq!(n.versus(), "Fewer steps vs DeepCache");
        let same = SideNames::new(&Method::adaptive(0.01, 4), &Method::adaptive(0.05, 4));
        assert_eq!(same.of(Side::Baseline), "Adaptive (left)");
        assert_eq!(
            file_word(
                Side::Adaptive,
                &Method::named("adaptive+forecast")
                    .unwrap()
                    .with_adaptive_rule(0.01, 4)
            ),
            "right-adaptive-forecast"
        );
    }
}
