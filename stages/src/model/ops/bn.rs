//! BatchNorm over `[B, C, T, H, W]` (per channel), optionally fused with ReLU, as a candle
//! `CustomOp3` (x, gamma, beta) with an analytic backward. Training mode normalises with the
//! batch statistics (biased variance) and updates the running statistics PyTorch's way
//! (`r = (1 - m) r + m s`, unbiased variance); eval mode uses the running statistics.

use super::{
    cpu_slice, dims5, sum_f64, sum_sq_dev_f64, uninit_vec, use_custom, with_cpu_data, SendPtr,
};
use candle_core::{bail, CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, Var};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics, running statistics updated.
    Train,
    /// Running statistics.
    Eval,
}

/// Per-channel statistics used by the forward pass (kept for the backward).
#[derive(Clone, Debug, Default)]
struct Stats {
    mean: Vec<f32>,
    invstd: Vec<f32>,
    /// Unbiased batch variance (training only, for the running statistics).
    var_unbiased: Vec<f32>,
}

struct BnOp {
    eps: f32,
    relu: bool,
    /// Eval mode: the running statistics; train mode: None (computed from the batch).
    given: Option<(Vec<f32>, Vec<f32>)>,
    stats: Arc<Mutex<Stats>>,
}

fn channel_stats(x: &[f32], b: usize, c: usize, vol: usize, eps: f32) -> Stats {
    let n = (b * vol) as f64;
    let per: Vec<(f32, f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ci| {
            let mut s = 0f64;
            for bi in 0..b {
                s += sum_f64(&x[(bi * c + ci) * vol..][..vol]);
            }
            let mean = s / n;
            let mut ss = 0f64;
            for bi in 0..b {
                ss += sum_sq_dev_f64(&x[(bi * c + ci) * vol..][..vol], mean);
            }
            let var = ss / n;
            let unb = if n > 1.0 { ss / (n - 1.0) } else { var };
            (
                mean as f32,
                (1.0 / (var + eps as f64).sqrt()) as f32,
                unb as f32,
            )
        })
        .collect();
    Stats {
        mean: per.iter().map(|p| p.0).collect(),
        invstd: per.iter().map(|p| p.1).collect(),
        var_unbiased: per.iter().map(|p| p.2).collect(),
    }
}

impl CustomOp3 for BnOp {
    fn name(&self) -> &'static str {
        "mpf-batch-norm3d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let [b, c, t, h, w] = dims5(l1.shape(), "batch_norm3d")?;
        let vol = t * h * w;
        let x = cpu_slice(s1, l1)?;
        let (gamma, beta) = (cpu_slice(s2, l2)?, cpu_slice(s3, l3)?);
        if gamma.len() != c || beta.len() != c {
            bail!(
                "batch_norm3d: {c} channels but gamma/beta of {}",
                gamma.len()
            );
        }
        let st = match &self.given {
            Some((mean, var)) => Stats {
                mean: mean.clone(),
                invstd: var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect(),
                var_unbiased: vec![],
            },
            None => channel_stats(x, b, c, vol, self.eps),
        };
        let mut y = uninit_vec(x.len());
        let relu = self.relu;
        y.par_chunks_mut(vol).enumerate().for_each(|(pl, yp)| {
            let ci = pl % c;
            let scale = gamma[ci] * st.invstd[ci];
            let shift = beta[ci] - st.mean[ci] * scale;
            let xp = &x[pl * vol..][..vol];
            if relu {
                for (o, &v) in yp.iter_mut().zip(xp) {
                    *o = (v * scale + shift).max(0.0);
                }
            } else {
                for (o, &v) in yp.iter_mut().zip(xp) {
                    *o = v * scale + shift;
                }
            }
        });
        *self.stats.lock().unwrap() = st;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [b, c, t, h, w] = dims5(x.shape(), "batch_norm3d")?;
        let st = self.stats.lock().unwrap().clone();
        let gam = gamma.to_vec1::<f32>()?;
        let mut dx = uninit_vec(x.elem_count());
        let dxp = SendPtr(dx.as_mut_ptr());
        let sums: Vec<(f32, f32)> = with_cpu_data(x, |xs| {
            with_cpu_data(res, |ys| {
                with_cpu_data(grad, |gs| {
                    let g = BwdPlanes {
                        xs,
                        ys,
                        gs,
                        b,
                        c,
                        vol: t * h * w,
                        relu: self.relu,
                    };
                    let train = self.given.is_none();
                    Ok((0..c)
                        .into_par_iter()
                        .map(|ci| g.channel(ci, &st, gam[ci], train, dxp))
                        .collect())
                })
            })
        })?;
        let dev = x.device();
        let dgamma = Tensor::from_vec(sums.iter().map(|s| s.0).collect(), c, dev)?;
        let dbeta = Tensor::from_vec(sums.iter().map(|s| s.1).collect(), c, dev)?;
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), dev)?),
            Some(dgamma),
            Some(dbeta),
        ))
    }
}

/// The backward pass's inputs (x, the op's output, the output gradient), contiguous
/// `[B, C, vol]`.
struct BwdPlanes<'a> {
    xs: &'a [f32],
    ys: &'a [f32],
    gs: &'a [f32],
    b: usize,
    c: usize,
    vol: usize,
    relu: bool,
}

impl BwdPlanes<'_> {
    /// Input, output and gradient of plane `(bi, ci)`.
    fn plane(&self, bi: usize, ci: usize) -> (&[f32], &[f32], &[f32]) {
        let off = (bi * self.c + ci) * self.vol;
        let vol = self.vol;
        (
            &self.xs[off..off + vol],
            &self.ys[off..off + vol],
            &self.gs[off..off + vol],
        )
    }

    /// Channel `ci`'s `(sum dz * xhat, sum dz)` (dgamma, dbeta), where `dz` is the gradient
    /// through the ReLU; sums in f32 over chunks of 256, added up in f64.
    fn sums(&self, ci: usize, mean: f32) -> (f64, f64) {
        let relu = self.relu;
        let (mut sdz, mut sdzc) = (0f64, 0f64);
        for bi in 0..self.b {
            let (xr, yr, gr) = self.plane(bi, ci);
            for ((xc, yc), gc) in xr.chunks(256).zip(yr.chunks(256)).zip(gr.chunks(256)) {
                // 16 independent f32 lanes per chunk (vectorises), added in a fixed order,
                // then the chunk total in f64.
                let (mut a, mut bs) = ([0f32; 16], [0f32; 16]);
                let n16 = xc.len() / 16 * 16;
                for ((x16, y16), g16) in xc[..n16]
                    .chunks_exact(16)
                    .zip(yc[..n16].chunks_exact(16))
                    .zip(gc[..n16].chunks_exact(16))
                {
                    for l in 0..16 {
                        let g = g16[l];
                        let d = if relu && y16[l] <= 0.0 { 0.0 } else { g };
                        a[l] += d;
                        bs[l] += d * (x16[l] - mean);
                    }
                }
                let (mut ta, mut tb) = (0f32, 0f32);
                for l in 0..16 {
                    ta += a[l];
                    tb += bs[l];
                }
                for ((&x, &y), &g) in xc[n16..].iter().zip(&yc[n16..]).zip(&gc[n16..]) {
                    let d = if relu && y <= 0.0 { 0.0 } else { g };
                    ta += d;
                    tb += d * (x - mean);
                }
                sdz += ta as f64;
                sdzc += tb as f64;
            }
        }
        (sdz, sdzc)
    }

    /// Writes channel `ci`'s input gradient through `dxp` and returns its (dgamma, dbeta).
    fn channel(&self, ci: usize, st: &Stats, gamma: f32, train: bool, dxp: SendPtr) -> (f32, f32) {
        let (mean, inv) = (st.mean[ci], st.invstd[ci]);
        let n = (self.b * self.vol) as f32;
        let (sdz, sdzc) = self.sums(ci, mean);
        let sdzx = (sdzc * inv as f64) as f32;
        let sdz = sdz as f32;
        let k = gamma * inv;
        let (c1, c2) = if train {
            (sdz / n, sdzx / n * inv)
        } else {
            (0.0, 0.0)
        };
        for bi in 0..self.b {
            let off = (bi * self.c + ci) * self.vol;
            // SAFETY: channel ci's planes are written by this task only.
            let d = unsafe { dxp.slice(off, self.vol) };
            let (xr, yr, gr) = self.plane(bi, ci);
            for (((o, &x), &y), &g) in d.iter_mut().zip(xr).zip(yr).zip(gr) {
                let dz = if self.relu && y <= 0.0 { 0.0 } else { g };
                *o = k * (dz - c1 - (x - mean) * c2);
            }
        }
        (sdzx, sdz)
    }
}

/// BatchNorm's running statistics and settings for one call.
#[derive(Clone, Copy)]
pub struct BnArgs<'a> {
    pub running_mean: &'a Var,
    pub running_var: &'a Var,
    pub eps: f64,
    pub momentum: f64,
    pub mode: BnMode,
    /// Fuse a ReLU after the normalisation.
    pub relu: bool,
}

/// BatchNorm (+ optional ReLU) over channels of `x [B, C, T, H, W]`.
/// In [`BnMode::Train`] the running statistics are updated in place.
pub fn batch_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, a: &BnArgs) -> Result<Tensor> {
    if !use_custom(x) {
        return super::reference::batch_norm3d(x, gamma, beta, a);
    }
    let stats = Arc::new(Mutex::new(Stats::default()));
    let given = match a.mode {
        BnMode::Train => None,
        BnMode::Eval => Some((
            a.running_mean.as_tensor().to_vec1::<f32>()?,
            a.running_var.as_tensor().to_vec1::<f32>()?,
        )),
    };
    let op = BnOp {
        eps: a.eps as f32,
        relu: a.relu,
        given,
        stats: stats.clone(),
    };
    let y = x
        .contiguous()?
        .apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
    if a.mode == BnMode::Train {
        let st = stats.lock().unwrap().clone();
        let m = a.momentum as f32;
        // r = (1 - m) r + m s
        let update = |r: &Var, s: &[f32]| -> Result<()> {
            let old = r.as_tensor().to_vec1::<f32>()?;
            let new: Vec<f32> = old
                .iter()
                .zip(s)
                .map(|(r, s)| (1.0 - m) * r + m * s)
                .collect();
            r.set(&Tensor::from_vec(new, old.len(), x.device())?)
        };
        update(a.running_mean, &st.mean)?;
        update(a.running_var, &st.var_unbiased)?;
    }
    Ok(y)
}
