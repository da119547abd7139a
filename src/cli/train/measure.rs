//! `adiff train measure`: the time of a guided UNet call of the shapes architecture and,
//! unless `--batch 0`, of a training step.

use super::*;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::model::unet::UNet;
use crate::train::{Arch, TrainConfig, Trainer};

/// `adiff train measure`: time a guided UNet call and, unless `--batch 0`, a training step.
pub(super) fn measure(a: &MeasureArgs) -> Result<()> {
    let arch = Arch::parse(&a.arch).context("--arch")?;
    measure_unet_call(&arch, a.calls)?;
    if a.batch > 0 {
        measure_train_step(arch, a.batch, a.train_steps)?;
    }
    Ok(())
}

/// Time a batch-2 UNet call of `arch` (`calls` times with each convolution path).
pub(super) fn measure_unet_call(arch: &Arch, calls: usize) -> Result<()> {
    let (ucfg, _) = arch.configs()?;
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let unet = UNet::new(VarBuilder::from_varmap(&vm, DType::F32, &dev), &ucfg)?;
    let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev)?;
    let ctx = Tensor::randn(
        0f32,
        1.0,
        (2, crate::shapes::vocab::MAX_LEN, arch.text_hidden),
        &dev,
    )?;
    // Two untimed rounds first, one with each path.
    let secs = time_both_convolutions(calls.max(1), 2, || {
        unet.forward(&x, 500.0, &ctx, None)?;
        Ok(())
    })?;
    let ms = secs.map(|s| s * 1e3);
    println!(
        "arch {:?}: UNet {n} parameters; batch-2 call {:.2} ms; 50 guided steps ≈ {:.2} s \
         (candle's own CPU convolution: {:.2} ms, {:.2}× slower)",
        arch.block_out_channels,
        ms[0],
        ms[0] * 50.0 / 1e3,
        ms[1],
        ms[1] / ms[0]
    );
    Ok(())
}

/// Time a training step of `arch` on a batch of `batch` (`steps` times with each
/// convolution path), in a throw-away checkpoint folder.
pub(super) fn measure_train_step(arch: Arch, batch: usize, steps: usize) -> Result<()> {
    let dir = tempfile_dir()?;
    let mut t = Trainer::new(
        TrainConfig {
            arch,
            batch,
            ..TrainConfig::default()
        },
        &dir,
    )?;
    t.train_step()?;
    // The slow path is the convolution composed of basic ops.
    let secs = time_both_convolutions(steps.max(1), 0, || t.train_step().map(drop))?;
    println!(
        "training: {} parameters in all; batch {}: {:.3} s/step = {:.2} steps/s \
         (convolutions composed of basic ops: {:.3} s/step, {:.2}× slower)",
        t.num_parameters(),
        batch,
        secs[0],
        1.0 / secs[0],
        secs[1],
        secs[1] / secs[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Mean seconds of one `f()` with the CPU patch-op convolution and without it
/// (`[with, without]`), `runs` of each, alternating the two so that both see the same
/// machine load, after `untimed` rounds (alternating too). Leaves the patch-op convolution on.
pub(super) fn time_both_convolutions(
    runs: usize,
    untimed: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<[f64; 2]> {
    let mut secs = [0.0f64; 2];
    for round in 0..2 * runs + untimed {
        let fast = round % 2 == 0;
        crate::model::cpu_conv::set_enabled(fast);
        let t0 = Instant::now();
        f()?;
        if round >= untimed {
            secs[usize::from(!fast)] += t0.elapsed().as_secs_f64() / runs as f64;
        }
    }
    crate::model::cpu_conv::set_enabled(true);
    Ok(secs)
}

pub(super) fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("adiff-measure-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
