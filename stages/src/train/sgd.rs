//! SGD with momentum and weight decay, PyTorch semantics (dampening 0, no Nesterov):
//! `d = g + wd * w; buf = mu * buf + d; w -= lr * buf`. Buffers start at zero, so the first step
//! gives `buf = d` exactly, as PyTorch does. On CPU/f32 both updates run in place through candle
//! in-place ops (no allocation); other devices fall back to tensor ops and `Var::set`.
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Result, Tensor, TensorId, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

impl SgdConfig {
    pub fn new(lr: f64, momentum: f64, weight_decay: f64) -> Self {
        SgdConfig {
            lr,
            momentum,
            weight_decay,
        }
    }
}

pub struct SgdMomentum {
    vars: Vec<(String, Var)>,
    bufs: Vec<Var>,
    /// per variable, an element-wise multiplier of the learning rate (None: 1)
    scales: Vec<Option<Tensor>>,
    cfg: SgdConfig,
    inplace: bool,
}

impl SgdMomentum {
    /// `vars` in a stable order (see `init::sorted_vars`); names key the momentum buffers.
    pub fn new(vars: Vec<(String, Var)>, cfg: SgdConfig) -> Result<Self> {
        let bufs = vars
            .iter()
            .map(|(_, v)| Var::zeros(v.shape(), v.dtype(), v.device()))
            .collect::<Result<Vec<_>>>()?;
        let scales = vec![None; vars.len()];
        Ok(Self {
            vars,
            bufs,
            scales,
            cfg,
            inplace: true,
        })
    }

    /// Element-wise learning-rate multipliers for the variable `name` (a tensor of its shape;
    /// 0 freezes an entry: `w -= lr * scale * buf` leaves it bit-identical). Unknown names are
    /// an error.
    pub fn set_lr_scale(&mut self, name: &str, scale: Tensor) -> Result<()> {
        let Some(i) = self.vars.iter().position(|(n, _)| n == name) else {
            candle_core::bail!("sgd: no variable {name}")
        };
        if scale.dims() != self.vars[i].1.dims() {
            candle_core::bail!("sgd: lr scale of {name} has shape {:?}", scale.dims());
        }
        self.scales[i] = Some(scale);
        Ok(())
    }

    /// Off: always use the tensor-op path (the one non-CPU devices take); for tests and benches.
    pub fn set_inplace(&mut self, on: bool) {
        self.inplace = on
    }

    /// The variables this optimiser updates, in its order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr
    }

    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_with(|v| grads.get(v.as_tensor()).cloned())
    }

    /// Updates every variable for which `grad_of` gives a gradient; others are left untouched
    /// (no weight decay either: a variable without gradient is not trained).
    pub fn step_with(&mut self, grad_of: impl Fn(&Var) -> Option<Tensor>) -> Result<()> {
        for (((_, var), buf), scale) in self.vars.iter().zip(self.bufs.iter()).zip(&self.scales) {
            let Some(g) = grad_of(var) else { continue };
            let g = g.contiguous()?;
            match scale {
                None => update(var, buf, &g, &self.cfg, self.inplace)?,
                Some(s) => {
                    let d = (g + (var.as_tensor() * self.cfg.weight_decay)?)?;
                    let nb = ((buf.as_tensor() * self.cfg.momentum)? + d)?;
                    buf.set(&nb)?;
                    var.set(&(var.as_tensor() - ((nb * self.cfg.lr)? * s)?)?)?;
                }
            }
        }
        Ok(())
    }

    /// Momentum buffers by variable name (for checkpoints).
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        self.vars
            .iter()
            .zip(self.bufs.iter())
            .map(|((n, _), b)| (n.clone(), b.as_tensor().clone()))
            .collect()
    }

    pub fn load_buffers(&mut self, values: &HashMap<String, Tensor>) -> Result<()> {
        for ((name, _), buf) in self.vars.iter().zip(self.bufs.iter()) {
            match values.get(name) {
                Some(t) => buf.set(t)?,
                None => candle_core::bail!("checkpoint lacks the momentum buffer of {name}"),
            }
        }
        Ok(())
    }
}

fn update(var: &Var, buf: &Var, g: &Tensor, cfg: &SgdConfig, inplace: bool) -> Result<()> {
    let cpu_f32 = inplace
        && var.device().is_cpu()
        && var.dtype() == DType::F32
        && var.as_tensor().is_contiguous()
        && buf.as_tensor().is_contiguous();
    if cpu_f32 {
        let mu = cfg.momentum as f32;
        let wd = cfg.weight_decay as f32;
        buf.as_tensor()
            .inplace_op3(g, var.as_tensor(), &MomentumOp { mu, wd })?;
        var.as_tensor()
            .inplace_op2(buf.as_tensor(), &AxpyOp { a: -cfg.lr as f32 })
    } else {
        let d = (g + (var.as_tensor() * cfg.weight_decay)?)?;
        let nb = ((buf.as_tensor() * cfg.momentum)? + d)?;
        buf.set(&nb)?;
        var.set(&(var.as_tensor() - (nb * cfg.lr)?)?)
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("sgd: {what} not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("sgd: {what} is not f32"),
    }
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("sgd: {what} not contiguous")))?;
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("sgd: {what} is not f32"),
    }
}

/// buf = mu * buf + g + wd * w, in place on buf.
struct MomentumOp {
    mu: f32,
    wd: f32,
}

impl candle_core::InplaceOp3 for MomentumOp {
    fn name(&self) -> &'static str {
        "sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let buf = f32_slice_mut(s1, l1, "momentum buffer")?;
        let g = f32_slice(s2, l2, "gradient")?;
        let w = f32_slice(s3, l3, "weight")?;
        if buf.len() != g.len() || buf.len() != w.len() {
            candle_core::bail!("sgd: length mismatch {} {} {}", buf.len(), g.len(), w.len())
        }
        for ((b, &g), &w) in buf.iter_mut().zip(g).zip(w) {
            *b = self.mu * *b + (g + self.wd * w);
        }
        Ok(())
    }
}

/// w += a * buf, in place on w.
struct AxpyOp {
    a: f32,
}

impl candle_core::InplaceOp2 for AxpyOp {
    fn name(&self) -> &'static str {
        "sgd-axpy"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let w = f32_slice_mut(s1, l1, "weight")?;
        let b = f32_slice(s2, l2, "momentum buffer")?;
        if w.len() != b.len() {
            candle_core::bail!("sgd: length mismatch {} {}", w.len(), b.len())
        }
        for (w, &b) in w.iter_mut().zip(b) {
            *w += self.a * b;
        }
        Ok(())
    }
}

/// Sums gradients over several backward passes (episodes) without keeping their graphs alive.
#[derive(Default)]
pub struct GradAccum {
    sums: HashMap<TensorId, Tensor>,
}

impl GradAccum {
    pub fn add(&mut self, grads: &GradStore, vars: &[(String, Var)]) -> Result<()> {
        for (_, v) in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let id = v.as_tensor().id();
                let s = match self.sums.remove(&id) {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                };
                self.sums.insert(id, s);
            }
        }
        Ok(())
    }

    pub fn get(&self, v: &Var) -> Option<Tensor> {
        self.sums.get(&v.as_tensor().id()).cloned()
    }
}
