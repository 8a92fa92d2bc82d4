//! Deterministic variable initialisation. candle draws `Init::Randn`/`Kaiming` from an unseeded
//! thread RNG; this backend draws each new variable from ChaCha keyed by (seed, variable name), so
//! initial weights do not depend on the process, the thread or the order of creation.
use crate::train::rng::{hash_str, rng_for, STREAM_INIT};
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::Rng;

pub struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(map: &VarMap, seed: u64) -> Self {
        Self {
            map: map.clone(),
            seed,
        }
    }
}

/// A `VarBuilder` over `map` whose missing variables are created with seeded values.
pub fn var_builder(map: &VarMap, seed: u64, dev: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(
        Box::new(SeededVarMap::new(map, seed)),
        DType::F32,
        dev.clone(),
    )
}

/// Values for `init` drawn from a generator keyed by `seed` and `name`.
pub fn seeded_init(
    shape: &Shape,
    init: &Init,
    seed: u64,
    name: &str,
    dev: &Device,
) -> Result<Tensor> {
    let n = shape.elem_count();
    let mut rng = rng_for(seed, &[STREAM_INIT, hash_str(name)]);
    let values: Vec<f32> = match *init {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => normal(&mut rng, n, mean, stdev),
        Init::Uniform { lo, up } => uniform(&mut rng, n, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Normal => normal(&mut rng, n, 0.0, std),
                NormalOrUniform::Uniform => {
                    let b = 3f64.sqrt() * std;
                    uniform(&mut rng, n, -b, b)
                }
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), dev)
}

/// Box-Muller; u1 in (0, 1] keeps the log finite.
fn normal(rng: &mut impl Rng, n: usize, mean: f64, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            (mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect()
}

fn uniform(rng: &mut impl Rng, n: usize, lo: f64, up: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
        .collect()
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.map.data().lock().unwrap();
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape())
            }
            return Ok(v.as_tensor().clone());
        }
        let t = seeded_init(&s, &h, self.seed, name, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let data = self.map.data().lock().unwrap();
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => candle_core::bail!("cannot find {name} in VarMap"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map.data().lock().unwrap().contains_key(name)
    }
}

/// Variables of `map` sorted by name (a stable order for optimisers and checkpoints).
pub fn sorted_vars(map: &VarMap) -> Vec<(String, Var)> {
    let data = map.data().lock().unwrap();
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Deep copy of every variable's value (for best-state snapshots).
pub fn snapshot(map: &VarMap) -> Result<Vec<(String, Tensor)>> {
    sorted_vars(map)
        .into_iter()
        .map(|(k, v)| Ok((k, v.as_tensor().copy()?)))
        .collect()
}

/// Writes values into existing variables of `map`; every variable must be present in `values`.
pub fn restore(map: &VarMap, values: &[(String, Tensor)]) -> Result<()> {
    let lookup: std::collections::HashMap<&str, &Tensor> =
        values.iter().map(|(k, t)| (k.as_str(), t)).collect();
    for (name, var) in sorted_vars(map) {
        match lookup.get(name.as_str()) {
            Some(t) => var.set(t)?,
            None => candle_core::bail!("restore: no value for variable {name}"),
        }
    }
    Ok(())
}

/// blake3 (hex) over every variable's name, shape and f32 bytes, in name order: equal digests
/// mean bit-identical weights (BN running statistics included).
pub fn weights_digest(map: &VarMap) -> Result<String> {
    let mut h = blake3::Hasher::new();
    for (name, t) in snapshot(map)? {
        h.update(name.as_bytes());
        for d in t.dims() {
            h.update(&(*d as u64).to_le_bytes());
        }
        let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        h.update(
            &values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
    }
    Ok(h.finalize().to_hex().to_string())
}

/// A new VarMap holding deep copies of `map`'s variables (training mutates variables in place:
/// copy a pretrained map before handing it to a stage that must not change it).
pub fn deep_copy(map: &VarMap) -> Result<VarMap> {
    let out = VarMap::new();
    {
        let mut data = out.data().lock().unwrap();
        for (k, t) in snapshot(map)? {
            data.insert(k, Var::from_tensor(&t)?);
        }
    }
    Ok(out)
}
