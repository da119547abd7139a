//! The unit tests of `sada` (a sibling file, to keep the rule's own file short).

use super::*;
use crate::sampler::denoise::Denoiser;
use crate::sampler::schedule::SchedulerConfig;
use crate::sampler::{RunSettings, build_scheduler, run};
use candle_core::Device;
use std::ops::ControlFlow;

fn settings(acc: (usize, usize), max_interval: usize, lagrange: [usize; 3]) -> SadaSettings {
    SadaSettings {
        acc_start: acc.0,
        acc_end: acc.1,
        max_interval,
        lagrange_term: lagrange[0],
        lagrange_int: lagrange[1],
        lagrange_step: lagrange[2],
    }
}

#[test]
fn the_cap_comes_before_the_sign_test_and_acc_start_is_at_least_3() {
    let s = settings((0, 10), 2, [0; 3]);
    // acc_start 0 is raised to 3: steps 0–2 never skip the next one.
    for n in 0..3 {
        assert_eq!(decide(&s, n, -1.0, 0), Next::Compute, "step {n}");
    }
    assert_eq!(decide(&s, 3, -1.0, 0), Next::Skip);
    assert_eq!(decide(&s, 3, 0.0, 1), Next::Skip, "m = 0 skips");
    assert_eq!(decide(&s, 3, 1e-9, 0), Next::Compute);
    // Two skips in a row: compute, whatever the sign.
    assert_eq!(decide(&s, 5, -1.0, 2), Next::Forced);
    assert_eq!(decide(&s, 5, 1.0, 2), Next::Forced);
    // acc_end is exclusive.
    assert_eq!(decide(&s, 9, -1.0, 0), Next::Skip);
    assert_eq!(decide(&s, 10, -1.0, 0), Next::Compute);
}

#[test]
fn lagrange_terms_test_the_sign_before_lagrange_step_then_follow_the_schedule() {
    let s = settings((3, 18), 4, [3, 3, 9]);
    assert_eq!(decide(&s, 5, -1.0, 0), Next::Skip);
    assert_eq!(decide(&s, 5, 1.0, 0), Next::Compute);
    // From lagrange_step on the sign does not matter: skip unless n % 3 == 0.
    let from_9: Vec<Next> = (9..19).map(|n| decide(&s, n, 1.0, 0)).collect();
    use Next::{Compute as C, Lagrange as L};
    assert_eq!(from_9, [C, L, L, C, L, L, C, L, L, C]);
    assert_eq!(decide(&s, 10, 1.0, 4), Next::Forced);
}

#[test]
fn the_lagrange_polynomial_goes_through_its_points() {
    let dev = Device::Cpu;
    // x(t) = t² − 2t through t = 1, 4, 7: x(9) = 63, x(4) = 8.
    let pts: Vec<(usize, Tensor)> = [1usize, 4, 7]
        .iter()
        .map(|&t| {
            let v = (t * t) as f32 - 2.0 * t as f32;
            (t, Tensor::new(&[v, 2.0 * v], &dev).unwrap())
        })
        .collect();
    let at = |t| lagrange(&pts, t).unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(at(4), [8.0, 16.0]);
    let v = at(9);
    assert!(
        (v[0] - 63.0).abs() < 1e-4 && (v[1] - 126.0).abs() < 1e-4,
        "{v:?}"
    );
    assert!(lagrange(&[], 3).is_err());
}

#[test]
fn the_settings_are_checked_together() {
    let m = Method::of(&Sada);
    assert!(Sada.check(&m).is_ok());
    let e = Sada.check(&m.with("acc_start", 47.0)).unwrap_err();
    assert_eq!((e.key, e.problem.contains("acc_end")), ("acc_start", true));
    let lag = m.with("lagrange_term", 4.0);
    assert_eq!(Sada.check(&lag).unwrap_err().key, "lagrange_int");
    let lag = lag.with("lagrange_int", 4.0);
    assert_eq!(
        Sada.check(&lag.with("lagrange_step", 22.0))
            .unwrap_err()
            .key,
        "lagrange_step"
    );
    // sd_demo.py's settings; too few stored x0 estimates before lagrange_step.
    assert!(Sada.check(&lag.with("lagrange_step", 24.0)).is_ok());
    assert!(Sada.check(&lag.with("lagrange_step", 12.0)).is_err());
}

/// ε = x/4 + cos(t/40)/2 per element (no guidance): a model whose drift swings.
struct Swing;

fn swing(x: f64, t: f64) -> f64 {
    x / 4.0 + (t / 40.0).cos() / 2.0
}

impl Denoiser for Swing {
    fn predict(&mut self, x: &Tensor, t: f64) -> Result<RawPrediction> {
        Ok(RawPrediction {
            uncond: None,
            cond: x.affine(0.25, (t / 40.0).cos() / 2.0)?,
        })
    }
}

/// On DPM-Solver++ (whose model input is the latents), every traced criterion is the
/// documented formula recomputed in f64 from the run's latents, and a skipped step uses
/// the last computed ε with its x0 replaced.
#[test]
fn the_criterion_and_the_skips_follow_the_formulas_on_synthetic_latents() {
    let (n, dev) = (12usize, Device::Cpu);
    let sd = SchedulerConfig::stable_diffusion();
    let method = Method::of(&Sada)
        .with("acc_start", 0.0)
        .with("acc_end", 12.0);
    let settings = RunSettings {
        scheduler: SchedulerKind::DpmPlusPlus,
        steps: n,
        guidance: 1.0,
        method,
        early_stop: None,
    };
    let init = Tensor::new(&[[3.0f32, -2.0], [0.5, 1.0]], &dev).unwrap();
    let mut xs = vec![init.clone()];
    let out = run(&mut Swing, &sd, &settings, &init, &mut |ev| {
        xs.push(ev.latents.clone());
        ControlFlow::Continue(())
    })
    .unwrap();
    let sched = build_scheduler(SchedulerKind::DpmPlusPlus, &sd, n).unwrap();
    let betas = sd.betas();
    let v = |t: &Tensor| -> Vec<f64> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&a| f64::from(a))
            .collect()
    };
    let (mut eps, mut fs): (Vec<f64>, Vec<Vec<f64>>) = (Vec::new(), Vec::new());
    let mut skipped = 0;
    for (i, rec) in out.trace.steps.iter().enumerate() {
        let x = v(&xs[i]);
        if rec.computed {
            eps = x.iter().map(|&a| swing(a, sched.timesteps()[i])).collect();
        } else {
            skipped += 1;
        }
        let s = sched.sigma(i);
        let alpha = 1.0 / (s * s + 1.0).sqrt();
        let c = 0.5 * betas[sched.timesteps()[i] as usize] * n as f64;
        let f: Vec<f64> = x
            .iter()
            .zip(&eps)
            .map(|(x, e)| c * (e / (s * alpha) - x))
            .collect();
        fs.push(f);
        if i < 2 || i + 1 == n {
            assert_eq!(rec.signal, None, "step {i}");
            continue;
        }
        let (f0, f1, f2) = (&fs[i], &fs[i - 1], &fs[i - 2]);
        let next = v(&xs[i + 1]);
        let m: f64 = (0..x.len())
            .map(|k| {
                let hat = x[k] - (0.625 * f0[k] + 0.75 * f1[k] - 0.375 * f2[k]) / n as f64;
                (next[k] - hat) * (f0[k] - 2.0 * f1[k] + f2[k])
            })
            .sum::<f64>()
            / x.len() as f64;
        let ours = rec.signal.unwrap();
        assert!(
            (ours - m).abs() <= 1e-4 * m.abs().max(1e-6),
            "step {i}: {ours} vs {m}"
        );
        assert_eq!(rec.signal_limit, Some(0.0));
        // The decision made here applies to the next step.
        if i >= 3 && m <= 0.0 && out.trace.steps[i - 1].computed {
            assert!(!out.trace.steps[i + 1].computed, "step {}", i + 1);
        }
    }
    let sig: Vec<_> = out.trace.steps.iter().map(|r| r.signal).collect();
    assert!(skipped > 0, "the synthetic run should skip: {sig:?}");
    assert_eq!(out.trace.unet_calls, n - skipped);
}

#[test]
fn a_sample_predicting_model_or_ddim_is_refused() {
    let sd = SchedulerConfig::stable_diffusion();
    let s = build_scheduler(SchedulerKind::Ddim, &sd, 10).unwrap();
    let mut info = RunInfo {
        scheduler: SchedulerKind::Ddim,
        steps: 10,
        sigmas: (0..10).map(|i| s.sigma(i)).collect(),
        timesteps: s.timesteps().to_vec(),
        guidance: 7.5,
        betas: sd.betas(),
        prediction: PredictionType::Epsilon,
    };
    let e = Sada.rule(&Method::of(&Sada), &info).err().unwrap();
    assert!(e.to_string().contains("euler and dpm++"), "{e}");
    info.scheduler = SchedulerKind::Euler;
    assert!(Sada.rule(&Method::of(&Sada), &info).is_ok());
    info.prediction = PredictionType::Sample;
    let e = Sada.rule(&Method::of(&Sada), &info).err().unwrap();
    assert!(e.to_string().contains("ε- and v-prediction"), "{e}");
}
