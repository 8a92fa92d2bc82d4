//! The two full-size parts of 3D Coordinate Attention as fused ops (the 1x1 convs in between
//! act on tiny `[B, C, T+H+W]` tensors and stay stock candle ops):
//! - `ca_pool`: `x [B,C,T,H,W]` -> `z [B,C,T+H+W]` = (mean over H,W | mean over T,W |
//!   mean over T,H), one pass instead of several reductions;
//! - `ca_apply`: `y = x * a_t[t] * a_h[h] * a_w[w]` with `a = [a_t | a_h | a_w]` of
//!   `[B,C,T+H+W]`, one pass forward and one backward instead of ~8 broadcast passes.

use super::{cpu_slice, dims5, uninit_vec, use_custom, with_cpu_data, Cpu2, F32In, F32Op2, F32Out};
use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct CaPool;

impl CustomOp1 for CaPool {
    fn name(&self) -> &'static str {
        "mpf-ca-pool"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let [b, c, t, h, w] = dims5(l.shape(), "ca_pool")?;
        let x = cpu_slice(s, l)?;
        let (vol, len) = (t * h * w, t + h + w);
        let mut z = vec![0f32; b * c * len];
        z.par_chunks_mut(len).enumerate().for_each(|(pl, zp)| {
            let xp = &x[pl * vol..][..vol];
            let mut acc = vec![0f64; len];
            for ti in 0..t {
                for hi in 0..h {
                    let row = &xp[(ti * h + hi) * w..][..w];
                    let mut rs = 0f64;
                    for (wi, &v) in row.iter().enumerate() {
                        rs += v as f64;
                        acc[t + h + wi] += v as f64;
                    }
                    acc[ti] += rs;
                    acc[t + hi] += rs;
                }
            }
            for (i, o) in zp.iter_mut().enumerate() {
                let n = if i < t {
                    h * w
                } else if i < t + h {
                    t * w
                } else {
                    t * h
                };
                *o = (acc[i] / n as f64) as f32;
            }
        });
        Ok((CpuStorage::F32(z), Shape::from((b, c, len))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let [b, c, t, h, w] = dims5(x.shape(), "ca_pool")?;
        let (vol, len) = (t * h * w, t + h + w);
        let (st, sh, sw) = (
            1.0 / (h * w) as f32,
            1.0 / (t * w) as f32,
            1.0 / (t * h) as f32,
        );
        let mut gx = uninit_vec(b * c * vol);
        with_cpu_data(grad, |gz| {
            gx.par_chunks_mut(vol).enumerate().for_each(|(pl, gp)| {
                let g = &gz[pl * len..][..len];
                let gw: Vec<f32> = g[t + h..].iter().map(|v| v * sw).collect();
                for ti in 0..t {
                    for hi in 0..h {
                        let base = g[ti] * st + g[t + hi] * sh;
                        let row = &mut gp[(ti * h + hi) * w..][..w];
                        for (o, &v) in row.iter_mut().zip(&gw) {
                            *o = base + v;
                        }
                    }
                }
            });
            Ok(())
        })?;
        Ok(Some(Tensor::from_vec(gx, x.shape(), x.device())?))
    }
}

/// Directional means of `x [B,C,T,H,W]`: `[B, C, T+H+W]`.
pub fn ca_pool(x: &Tensor) -> Result<Tensor> {
    if use_custom(x) {
        return x.contiguous()?.apply_op1(CaPool);
    }
    let (b, c, t, h, w) = x.dims5()?;
    let p_tw = x.mean_keepdim(3)?; // [B,C,T,1,W]
    let p_th = x.mean_keepdim(4)?; // [B,C,T,H,1]
    let z_t = p_th.mean_keepdim(3)?.reshape((b, c, t))?;
    let z_h = p_th.mean_keepdim(2)?.reshape((b, c, h))?;
    let z_w = p_tw.mean_keepdim(2)?.reshape((b, c, w))?;
    Tensor::cat(&[&z_t, &z_h, &z_w], 2)
}

struct CaApply;

fn check(x: [usize; 5], a: &[usize]) -> Result<()> {
    let [b, c, t, h, w] = x;
    if a != [b, c, t + h + w] {
        bail!("ca_apply: attention {a:?} does not match input {x:?}");
    }
    Ok(())
}

impl F32Op2 for CaApply {
    const NAME: &'static str = "mpf-ca-apply";
    const WHAT: &'static str = "model ops";

    fn fwd(&self, (x, xs): F32In, (a, as_): F32In) -> F32Out {
        let d = dims5(xs, "ca_apply")?;
        check(d, as_.dims())?;
        let [_, _, t, h, w] = d;
        let (vol, len) = (t * h * w, t + h + w);
        let mut y = uninit_vec(x.len());
        y.par_chunks_mut(vol).enumerate().for_each(|(pl, yp)| {
            let xp = &x[pl * vol..][..vol];
            let ap = &a[pl * len..][..len];
            let aw = &ap[t + h..];
            for ti in 0..t {
                for hi in 0..h {
                    let s = ap[ti] * ap[t + hi];
                    let o = (ti * h + hi) * w;
                    for ((yo, &xv), &wv) in yp[o..o + w].iter_mut().zip(&xp[o..o + w]).zip(aw) {
                        *yo = xv * s * wv;
                    }
                }
            }
        });
        Ok((y, xs.clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let [b, c, t, h, w] = dims5(x.shape(), "ca_apply")?;
        let (vol, len) = (t * h * w, t + h + w);
        let mut gx = uninit_vec(b * c * vol);
        let mut ga = vec![0f32; b * c * len];
        with_cpu_data(x, |xs| {
            with_cpu_data(a, |as_| {
                with_cpu_data(grad, |gs| {
                    gx.par_chunks_mut(vol)
                        .zip(ga.par_chunks_mut(len))
                        .enumerate()
                        .for_each(|(pl, (gxp, gap))| {
                            let xp = &xs[pl * vol..][..vol];
                            let gp = &gs[pl * vol..][..vol];
                            let ap = &as_[pl * len..][..len];
                            let aw = &ap[t + h..];
                            let mut acc = vec![0f64; len];
                            for ti in 0..t {
                                for hi in 0..h {
                                    let s = ap[ti] * ap[t + hi];
                                    let o = (ti * h + hi) * w;
                                    let mut r = 0f64; // sum_w g*x*a_w
                                    for wi in 0..w {
                                        let (g, xv) = (gp[o + wi], xp[o + wi]);
                                        gxp[o + wi] = g * s * aw[wi];
                                        let p = g * xv;
                                        r += (p * aw[wi]) as f64;
                                        acc[t + h + wi] += (p * s) as f64;
                                    }
                                    acc[ti] += r * ap[t + hi] as f64;
                                    acc[t + hi] += r * ap[ti] as f64;
                                }
                            }
                            for (o, v) in gap.iter_mut().zip(&acc) {
                                *o = *v as f32;
                            }
                        });
                    Ok(())
                })
            })
        })?;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), dev)?),
            Some(Tensor::from_vec(ga, a.shape(), dev)?),
        ))
    }
}

/// `y = x * a_t[t] * a_h[h] * a_w[w]` for `x [B,C,T,H,W]`, `a = [a_t | a_h | a_w] [B,C,T+H+W]`.
pub fn ca_apply(x: &Tensor, a: &Tensor) -> Result<Tensor> {
    if use_custom(x) {
        return x.contiguous()?.apply_op2(&a.contiguous()?, Cpu2(CaApply));
    }
    let (b, c, t, h, w) = x.dims5()?;
    let a_t = a.narrow(2, 0, t)?.reshape((b, c, t, 1, 1))?;
    let a_h = a.narrow(2, t, h)?.reshape((b, c, 1, h, 1))?;
    let a_w = a.narrow(2, t + h, w)?.reshape((b, c, 1, 1, w))?;
    // The product of the small maps first ([B,C,T,H,1]), then one full-size broadcast.
    let a_full = a_t.broadcast_mul(&a_h)?.broadcast_mul(&a_w)?;
    x.mul(&a_full)
}
