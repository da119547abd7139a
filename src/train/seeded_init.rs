//! Reproducible initial weights: a `VarBuilder` backend that draws each new variable from
//! its `Init` hint with the project's seeded RNG (candle's CPU initialisers use an
//! unseedable thread RNG). Variables are drawn in the order the model asks for them, which
//! is fixed by the model's code, so one seed gives one set of weights.

use std::sync::Mutex;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{Init, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{VarBuilder, VarMap};

use crate::shapes::Rng;

/// A [`VarMap`] whose new variables are drawn from a seeded RNG.
pub struct SeededVarMap {
    map: VarMap,
    rng: Mutex<Rng>,
}

impl SeededVarMap {
    /// New variables go into `map` (shared: `VarMap` clones share their data).
    pub fn new(map: &VarMap, seed: u64) -> Self {
        Self {
            map: map.clone(),
            rng: Mutex::new(Rng::new(seed)),
        }
    }

    /// A `VarBuilder` over this backend.
    pub fn builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}

/// `n` values drawn for `init` (on a tensor of shape `shape`).
fn draw(rng: &mut Rng, init: Init, shape: &Shape) -> Vec<f32> {
    let n = shape.elem_count();
    let uniform = |rng: &mut Rng, lo: f64, up: f64| {
        (0..n)
            .map(|_| (lo + (up - lo) * rng.unit()) as f32)
            .collect()
    };
    let normal = |rng: &mut Rng, mean: f64, std: f64| {
        (0..n).map(|_| (mean + std * rng.normal()) as f32).collect()
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.map.data().lock().expect("var map lock");
        if let Some(var) = data.get(name) {
            let t = var.as_tensor();
            if t.shape() != &s {
                candle_core::bail!("{name}: shape {:?} asked for, {:?} present", s, t.shape());
            }
            return Ok(t.clone());
        }
        let values = draw(&mut self.rng.lock().expect("rng lock"), h, &s);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        match self.map.data().lock().expect("var map lock").get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("{name} is not in the var map"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .expect("var map lock")
            .contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_set_of_weights_with_the_hinted_distribution() {
        let build = |seed| {
            let map = VarMap::new();
            let vb = SeededVarMap::new(&map, seed).builder(DType::F32, &Device::Cpu);
            let lin = candle_nn::linear(256, 64, vb.pp("lin")).unwrap();
            let emb = candle_nn::embedding(10, 64, vb.pp("emb")).unwrap();
            (lin, emb)
        };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (a, ea) = build(5);
        let (b, eb) = build(5);
        let (c, _) = build(6);
        assert_eq!(flat(a.weight()), flat(b.weight()));
        assert_eq!(flat(ea.embeddings()), flat(eb.embeddings()));
        assert_ne!(flat(a.weight()), flat(c.weight()));
        // candle's linear: weights Kaiming-normal (fan-in 256, ReLU gain √2: variance
        // 2/256), biases uniform in ±1/16; embeddings N(0, 1).
        let w = flat(a.weight());
        let var_w = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
        assert!((var_w * 128.0 - 1.0).abs() < 0.1, "{var_w}");
        let bias = flat(a.bias().unwrap());
        assert!(bias.iter().all(|v| v.abs() <= 1.0 / 16.0));
        assert!(bias.iter().any(|v| v.abs() > 0.9 / 16.0));
        let e = flat(ea.embeddings());
        let var = e.iter().map(|v| v * v).sum::<f32>() / e.len() as f32;
        assert!((var - 1.0).abs() < 0.15, "{var}");
    }
}
