//! `adiff methods`: every registered acceleration method with its spec keys, their
//! defaults, ranges and units, the schedulers it runs on and its source — written from the
//! method registry, so it lists a new method as soon as it is registered.

use crate::job::method_spec;
use crate::sampler::methods::{KeyKind, METHODS, POSITIVE};

/// The listing.
pub fn listing() -> String {
    let mut out = String::from(
        "Methods (--method, compare --left/--right, bench --method take NAME[:KEY=VALUE,…]):\n",
    );
    for m in METHODS {
        out.push_str(&format!("\n{} — {}\n", method_spec::usage(*m), m.title()));
        out.push_str(&format!("  {}\n", m.about()));
        if let Some(s) = m.schedulers() {
            let names: Vec<_> = s.iter().map(|k| k.name()).collect();
            out.push_str(&format!("  schedulers: {}\n", names.join(", ")));
        }
        for k in m.keys() {
            let shown = |v: f64| k.show(v);
            let default = if k.required {
                "required".to_string()
            } else {
                format!("default {}", shown(k.default))
            };
            let range = if k.kind == KeyKind::Flag {
                "0 or 1".to_string()
            } else if k.min == POSITIVE {
                "> 0".to_string()
            } else if k.max == f64::INFINITY {
                format!("≥ {}", shown(k.min))
            } else {
                format!("{}–{}", shown(k.min), shown(k.max))
            };
            let unit = if k.unit.is_empty() {
                String::new()
            } else {
                format!(", {}", k.unit)
            };
            out.push_str(&format!(
                "  {:<14} {default}, {range}{unit}: {}\n",
                k.name, k.help
            ));
        }
    }
    out
}

/// Print the listing.
pub fn run() -> anyhow::Result<()> {
    print!("{}", listing());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_and_key_is_listed() {
        let l = listing();
        for m in METHODS {
            assert!(
                l.contains(&format!("\n{}", method_spec::usage(*m))),
                "{}",
                m.name()
            );
            for k in m.keys() {
                assert!(l.contains(&format!("  {:<14} ", k.name)), "{}", k.name);
            }
        }
        assert!(l.contains("max_skips      default 4, ≥ 1, steps"), "{l}");
    }
}
