//! Seeded weight initialisation: a `VarBuilder` backend that creates the variables of a
//! `VarMap` from a ChaCha stream derived from `(seed, variable name)`, not from candle's global
//! RNG. Each variable's values depend only on the seed and its own name, so adding a layer does
//! not change the others, and the same seed gives bit-identical weights.

use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A `VarMap` whose new variables are drawn from a seeded RNG.
pub struct SeededVarMap {
    pub map: VarMap,
    pub seed: u64,
}

/// `VarBuilder` that fills `varmap` deterministically from `seed` (existing variables are reused).
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap {
            map: varmap.clone(),
            seed,
        }),
        DType::F32,
        device.clone(),
    )
}

/// The RNG for one named variable.
pub fn rng_for(seed: u64, name: &str) -> ChaCha8Rng {
    let mut h = blake3::Hasher::new();
    h.update(b"mpfnet-init-v1");
    h.update(&seed.to_le_bytes());
    h.update(name.as_bytes());
    ChaCha8Rng::from_seed(*h.finalize().as_bytes())
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; u1 in (0, 1] so the log is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Values for `init` over `shape`, drawn from `rng`.
pub fn sample(init: &Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = shape.elem_count();
    match *init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => (0..n)
            .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
            .collect(),
        Init::Randn { mean, stdev } => (0..n)
            .map(|_| (mean + stdev * normal(rng)) as f32)
            .collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = match fan {
                FanInOut::FanIn | FanInOut::FanOut => fan.for_shape(shape),
            };
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => (0..n).map(|_| (std * normal(rng)) as f32).collect(),
                NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    (0..n)
                        .map(|_| (-b + 2.0 * b * rng.random::<f64>()) as f32)
                        .collect()
                }
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.map.data().lock().unwrap();
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape());
            }
            return Ok(v.as_tensor().clone());
        }
        let vals = sample(&h, &s, &mut rng_for(self.seed, name));
        let var = Var::from_tensor(&Tensor::from_vec(vals, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        match self.map.data().lock().unwrap().get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => bail!("{name} is not in the VarMap"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().unwrap().contains_key(name)
    }
}
