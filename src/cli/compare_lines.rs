//! The lines `adiff compare` ends with: each run by its role and method spec, each side
//! against the full-step reference, and the right side against the left, in plain words
//! with every ratio read the right way round ("2.00× more calls", never "0.50× fewer").

use crate::metrics::psnr_text;
use crate::pipeline::{CompareSummary, Comparison, Generation, Reference, Role, VideoQuality};

/// `x` as "N.NN× `above`" when it is above 1, "N.NN× `below`" (of its inverse) when below,
/// and `equal` when both read 1.00×; "-" when it is no ratio (0, ∞, NaN).
pub fn ratio(x: f64, above: &str, below: &str, equal: &str) -> String {
    if !(x.is_finite() && x > 0.0) {
        return "-".into();
    }
    if format!("{x:.2}") == "1.00" && format!("{:.2}", 1.0 / x) == "1.00" {
        equal.into()
    } else if x >= 1.0 {
        format!("{x:.2}× {above}")
    } else {
        format!("{:.2}× {below}", 1.0 / x)
    }
}

/// A run against its standard: calls, work, wall time, PSNR and SSIM.
pub fn measures(s: &CompareSummary) -> String {
    let calls = ratio(s.nfe_speedup, "fewer calls", "more calls", "as many calls");
    let work = s.macs_speedup.map_or("work not counted".into(), |x| {
        ratio(x, "less work", "more work", "the same work")
    });
    let wall = ratio(s.wall_speedup, "faster", "slower", "as fast");
    let ssim = s.ssim.map_or(String::new(), |v| format!(", SSIM {v:.4}"));
    format!(
        "{calls}, {work}, {wall}, PSNR {}{ssim}",
        psnr_text(s.psnr_db)
    )
}

/// One run: its role, method spec, calls of its budget and loop time.
fn run_line(role: Role, g: &Generation) -> String {
    format!(
        "{:<9} {}: {}/{} calls, {:.0} ms",
        role.name(),
        crate::job::method_spec::format(&g.trace.method),
        g.trace.unet_calls,
        g.trace.budget,
        g.trace.elapsed_ms
    )
}

/// A clip's quality frame by frame.
fn frames_line(what: &str, v: &VideoQuality) -> String {
    format!(
        "{what}, per frame: PSNR mean {}, worst {} (frame {}), SSIM {:.4}",
        psnr_text(v.psnr_mean_db),
        psnr_text(v.psnr_worst_db),
        v.worst_frame,
        v.ssim_mean
    )
}

/// The lines that end `adiff compare`, in order.
pub fn lines(c: &Comparison) -> Vec<String> {
    let mut out = vec![];
    let side = c.reference_side();
    match (&c.reference, side) {
        (Reference::Ran(g), _) => out.push(format!(
            "{} (the full-step baseline both sides are measured against)",
            run_line(Role::Reference, g)
        )),
        (_, s) => out.push(format!(
            "{:<9} = the {} side, the full-step baseline (it ran once)",
            Role::Reference.name(),
            s.unwrap_or(Role::Left).name()
        )),
    }
    for (role, g, vs) in [
        (Role::Left, &c.left, &c.left_vs_reference),
        (Role::Right, &c.right, &c.right_vs_reference),
    ] {
        if side == Some(role) {
            out.push(format!("{} (the reference)", run_line(role, g)));
        } else if side.is_some() {
            // The other side is the reference: the pair's line below says it all.
            out.push(run_line(role, g));
        } else {
            out.push(format!(
                "{}; against the reference: {}",
                run_line(role, g),
                measures(vs)
            ));
            if let Some(v) = &vs.video {
                out.push(frames_line(
                    &format!("{} against the reference", role.name()),
                    v,
                ));
            }
        }
    }
    let pair = match side {
        Some(s) => format!(
            "right against left (the {} side is the reference)",
            s.name()
        ),
        None => "right against left".to_string(),
    };
    out.push(format!("{pair}: {}", measures(&c.summary)));
    if let Some(v) = &c.summary.video {
        out.push(frames_line(&pair, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_read_the_right_way_round() {
        assert_eq!(
            ratio(0.5, "fewer calls", "more calls", "as many calls"),
            "2.00× more calls"
        );
        assert_eq!(
            ratio(2.0, "fewer calls", "more calls", "as many calls"),
            "2.00× fewer calls"
        );
        assert_eq!(ratio(1.001, "faster", "slower", "as fast"), "as fast");
        assert_eq!(ratio(0.999, "faster", "slower", "as fast"), "as fast");
        assert_eq!(ratio(0.98, "faster", "slower", "as fast"), "1.02× slower");
        assert_eq!(ratio(f64::NAN, "faster", "slower", "as fast"), "-");
        assert_eq!(ratio(0.0, "faster", "slower", "as fast"), "-");
    }

    #[test]
    fn measures_name_each_quantity() {
        let s = CompareSummary {
            unet_calls_saved: 0,
            nfe_speedup: 0.5,
            macs_speedup: Some(4.0),
            wall_speedup: 0.25,
            psnr_db: 31.234,
            ssim: Some(0.95),
            video: None,
        };
        assert_eq!(
            measures(&s),
            format!(
                "2.00× more calls, 4.00× less work, 4.00× slower, PSNR {}, SSIM 0.9500",
                psnr_text(31.234)
            )
        );
        let s = CompareSummary {
            macs_speedup: None,
            ssim: None,
            ..s
        };
        assert!(
            measures(&s).contains("work not counted"),
            "{}",
            measures(&s)
        );
        assert!(!measures(&s).contains("SSIM"));
    }
}
