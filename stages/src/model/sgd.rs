//! SGD with momentum and weight decay (PyTorch semantics), updating parameters and momentum
//! buffers in place on CPU (candle `InplaceOp3`), with a stock-op fallback elsewhere.
//!
//! Per step, for each parameter p with gradient g:
//! `d = g + wd * p; buf = d (first step) or momentum * buf + d; d = nesterov ? d + momentum * buf
//! : buf; p -= lr * d`.

use crate::model::ops::cpu_slice;
use candle_core::backprop::GradStore;
use candle_core::{bail, CpuStorage, InplaceOp3, Layout, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    #[serde(default)]
    pub nesterov: bool,
}

pub struct Sgd {
    vars: Vec<Var>,
    /// Momentum buffers (None until the variable's first gradient).
    bufs: Vec<Option<Tensor>>,
    cfg: SgdConfig,
}

fn cpu_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> Result<&'a mut [f32]> {
    let (a, b) = match l.contiguous_offsets() {
        Some(o) => o,
        None => bail!("sgd: destination must be contiguous"),
    };
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => bail!("sgd: only f32 is supported"),
    }
}

/// `buf = momentum * buf + g + wd * p` (or `g + wd * p` on the first step).
struct BufUpdate {
    momentum: f32,
    wd: f32,
    first: bool,
}

impl InplaceOp3 for BufUpdate {
    fn name(&self) -> &'static str {
        "mpf-sgd-buf"
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
        let buf = cpu_mut(s1, l1)?;
        let (g, p) = (cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        let m = if self.first { 0.0 } else { self.momentum };
        for ((b, &g), &p) in buf.iter_mut().zip(g).zip(p) {
            *b = m * *b + g + self.wd * p;
        }
        Ok(())
    }
}

/// `p -= lr * (nesterov ? g + wd * p + momentum * buf : buf)`.
struct ParamUpdate {
    lr: f32,
    momentum: f32,
    wd: f32,
    nesterov: bool,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "mpf-sgd-param"
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
        let p = cpu_mut(s1, l1)?;
        let (buf, g) = (cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        for ((p, &b), &g) in p.iter_mut().zip(buf).zip(g) {
            let d = if self.nesterov {
                g + self.wd * *p + self.momentum * b
            } else {
                b
            };
            *p -= self.lr * d;
        }
        Ok(())
    }
}

impl Sgd {
    pub fn new(vars: Vec<Var>, cfg: SgdConfig) -> Result<Self> {
        if cfg.nesterov && cfg.momentum <= 0.0 {
            bail!("sgd: nesterov needs a positive momentum");
        }
        let bufs = vec![None; vars.len()];
        Ok(Self { vars, bufs, cfg })
    }

    pub fn learning_rate(&self) -> f64 {
        self.cfg.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    pub fn config(&self) -> SgdConfig {
        self.cfg
    }

    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// Momentum buffers, aligned with `vars()`.
    pub fn momentum_buffers(&self) -> &[Option<Tensor>] {
        &self.bufs
    }

    /// Restores a momentum buffer (checkpoint loading).
    pub fn set_momentum_buffer(&mut self, i: usize, buf: Option<Tensor>) -> Result<()> {
        if let Some(b) = &buf {
            if b.shape() != self.vars[i].shape() {
                bail!("sgd: momentum buffer {i} has shape {:?}", b.shape());
            }
        }
        self.bufs[i] = buf.map(|b| b.copy()).transpose()?;
        Ok(())
    }

    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (lr, m, wd) = (self.cfg.lr, self.cfg.momentum, self.cfg.weight_decay);
        for (var, buf) in self.vars.iter().zip(self.bufs.iter_mut()) {
            let Some(g) = grads.get(var) else { continue };
            let g = g.contiguous()?;
            if var.device().is_cpu() {
                if m == 0.0 {
                    // Plain SGD: no buffer; `ParamUpdate` with nesterov form and momentum 0.
                    var.inplace_op3(
                        &g,
                        &g,
                        &ParamUpdate {
                            lr: lr as f32,
                            momentum: 0.0,
                            wd: wd as f32,
                            nesterov: true,
                        },
                    )?;
                    continue;
                }
                let first = buf.is_none();
                let b = match buf {
                    Some(b) => b.clone(),
                    None => {
                        let b = Tensor::zeros_like(&g)?;
                        *buf = Some(b.clone());
                        b
                    }
                };
                b.inplace_op3(
                    &g,
                    var.as_tensor(),
                    &BufUpdate {
                        momentum: m as f32,
                        wd: wd as f32,
                        first,
                    },
                )?;
                var.inplace_op3(
                    &b,
                    &g,
                    &ParamUpdate {
                        lr: lr as f32,
                        momentum: m as f32,
                        wd: wd as f32,
                        nesterov: self.cfg.nesterov,
                    },
                )?;
            } else {
                let p = var.as_tensor();
                let d = (&g + p.affine(wd, 0.0)?)?;
                let d = if m == 0.0 {
                    d
                } else {
                    let nb = match buf.take() {
                        Some(b) => (b.affine(m, 0.0)? + &d)?,
                        None => d.copy()?,
                    };
                    *buf = Some(nb.clone());
                    if self.cfg.nesterov {
                        (d + nb.affine(m, 0.0)?)?
                    } else {
                        nb
                    }
                };
                var.set(&(p - d.affine(lr, 0.0)?)?)?;
            }
        }
        Ok(())
    }
}

/// Step decay: `lr = base * gamma^(epoch / step_size)` (the AFE's "divided by 10 every 10
/// epochs" is `StepLr { base: 1e-3, gamma: 0.1, step_size: 10 }`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepLr {
    pub base: f64,
    pub gamma: f64,
    pub step_size: usize,
}

impl StepLr {
    pub fn lr(&self, epoch: usize) -> f64 {
        self.base * self.gamma.powi((epoch / self.step_size.max(1)) as i32)
    }
}
