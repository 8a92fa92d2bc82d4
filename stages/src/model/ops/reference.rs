//! Reference implementations from stock candle ops only (all have CUDA/Metal kernels and
//! autograd). Used on non-CPU devices and as ground truth in the tests.

use super::bn::{BnArgs, BnMode};
use super::dims5;
use super::pool3d::adaptive_bin;
use candle_core::{bail, Device, Result, Tensor};

fn index(dev: &Device, n: usize, stride: usize, offset: usize) -> Result<Tensor> {
    let idx: Vec<u32> = (0..n).map(|o| (o * stride + offset) as u32).collect();
    Tensor::new(idx.as_slice(), dev)
}

/// Conv3d as a sum over temporal taps of candle `conv2d` over all (batch, output frame) pairs.
/// The input is zero-padded explicitly and cropped to the extent the output reads, so candle's
/// conv2d backward (which has no output padding) works for every size; H and W strides must
/// be equal (candle's conv2d takes one).
pub fn conv3d(x: &Tensor, w: &Tensor, stride: [usize; 3], padding: [usize; 3]) -> Result<Tensor> {
    let [b, cin, ..] = dims5(x.shape(), "conv3d input")?;
    let [cout, wcin, kt, kh, kw] = dims5(w.shape(), "conv3d weight")?;
    if wcin != cin {
        bail!("conv3d: input has {cin} channels, weight expects {wcin}");
    }
    if stride[1] != stride[2] {
        bail!("conv3d reference: H and W strides must match ({stride:?})");
    }
    let k = [kt, kh, kw];
    let mut xp = x.clone();
    let mut o = [0usize; 3];
    for d in 0..3 {
        let n = x.dim(d + 2)? + 2 * padding[d];
        if n < k[d] || stride[d] == 0 {
            bail!(
                "conv3d: kernel {k:?} / stride {stride:?} do not fit {:?}",
                x.dims()
            );
        }
        o[d] = (n - k[d]) / stride[d] + 1;
        if padding[d] > 0 {
            xp = xp.pad_with_zeros(d + 2, padding[d], padding[d])?;
        }
        let used = (o[d] - 1) * stride[d] + k[d];
        if used < n {
            xp = xp.narrow(d + 2, 0, used)?;
        }
    }
    let xp = xp.contiguous()?;
    let (hp, wp) = (xp.dim(3)?, xp.dim(4)?);
    let mut acc: Option<Tensor> = None;
    for dt in 0..kt {
        let xs = xp.index_select(&index(x.device(), o[0], stride[0], dt)?, 2)?;
        let xs = xs
            .permute((0, 2, 1, 3, 4))?
            .reshape((b * o[0], cin, hp, wp))?;
        let wk = w.narrow(2, dt, 1)?.squeeze(2)?.contiguous()?;
        let y = xs.conv2d(&wk, 0, stride[1], 1, 1)?;
        acc = Some(match acc {
            None => y,
            Some(a) => (a + y)?,
        });
    }
    let y = acc.expect("kt >= 1");
    y.reshape((b, o[0], cout, o[1], o[2]))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()
}

/// Max pooling by padding with -inf and taking the elementwise maximum over all kernel offsets.
pub fn max_pool3d(
    x: &Tensor,
    kernel: [usize; 3],
    stride: [usize; 3],
    padding: [usize; 3],
) -> Result<Tensor> {
    let dims = dims5(x.shape(), "max_pool3d")?;
    let mut xp = x.clone();
    let mut o = [0usize; 3];
    for d in 0..3 {
        if dims[d + 2] + 2 * padding[d] < kernel[d] || stride[d] == 0 {
            bail!("max_pool3d: bad kernel {kernel:?}/stride {stride:?} for {dims:?}");
        }
        o[d] = (dims[d + 2] + 2 * padding[d] - kernel[d]) / stride[d] + 1;
        if padding[d] > 0 {
            let mut s = xp.dims().to_vec();
            s[d + 2] = padding[d];
            let pad = Tensor::full(f32::NEG_INFINITY, s, x.device())?.to_dtype(x.dtype())?;
            xp = Tensor::cat(&[&pad, &xp, &pad], d + 2)?;
        }
    }
    let dev = x.device();
    let mut res: Option<Tensor> = None;
    for dt in 0..kernel[0] {
        let xt = xp.index_select(&index(dev, o[0], stride[0], dt)?, 2)?;
        for dh in 0..kernel[1] {
            let xh = xt.index_select(&index(dev, o[1], stride[1], dh)?, 3)?;
            for dw in 0..kernel[2] {
                let xw = xh.index_select(&index(dev, o[2], stride[2], dw)?, 4)?;
                res = Some(match res {
                    None => xw,
                    Some(r) => r.maximum(&xw)?,
                });
            }
        }
    }
    Ok(res.expect("kernel >= 1"))
}

/// Adaptive average pooling as a matmul with a constant `[T*H*W, t*h*w]` averaging matrix.
pub fn adaptive_avg_pool3d(x: &Tensor, out: [usize; 3]) -> Result<Tensor> {
    let [b, c, t, h, w] = dims5(x.shape(), "adaptive_avg_pool3d")?;
    let i = [t, h, w];
    if (0..3).any(|k| out[k] == 0 || out[k] > i[k]) {
        bail!("adaptive_avg_pool3d: output {out:?} must be in 1..=input {i:?}");
    }
    let (iv, ov) = (t * h * w, out.iter().product::<usize>());
    let mut m = vec![0f32; iv * ov];
    let mut oi = 0;
    for a in 0..out[0] {
        let (t0, t1) = adaptive_bin(a, out[0], t);
        for bb in 0..out[1] {
            let (h0, h1) = adaptive_bin(bb, out[1], h);
            for cc in 0..out[2] {
                let (w0, w1) = adaptive_bin(cc, out[2], w);
                let s = 1.0 / ((t1 - t0) * (h1 - h0) * (w1 - w0)) as f32;
                for tt in t0..t1 {
                    for hh in h0..h1 {
                        for ww in w0..w1 {
                            m[((tt * h + hh) * w + ww) * ov + oi] = s;
                        }
                    }
                }
                oi += 1;
            }
        }
    }
    let m = Tensor::from_vec(m, (iv, ov), x.device())?.to_dtype(x.dtype())?;
    x.reshape((b * c, iv))?
        .matmul(&m)?
        .reshape((b, c, out[0], out[1], out[2]))
}

fn channel_mean(x: &Tensor, n: usize) -> Result<Tensor> {
    x.sum_keepdim(4)?
        .sum_keepdim(3)?
        .sum_keepdim(2)?
        .sum_keepdim(0)?
        .affine(1.0 / n as f64, 0.0)
}

/// BatchNorm (+ReLU) from broadcast ops; same statistics conventions as the custom op.
pub fn batch_norm3d(x: &Tensor, gamma: &Tensor, beta: &Tensor, a: &BnArgs) -> Result<Tensor> {
    let (running_mean, running_var) = (a.running_mean, a.running_var);
    let [b, c, t, h, w] = dims5(x.shape(), "batch_norm3d")?;
    let n = b * t * h * w;
    let (mean, var) = match a.mode {
        BnMode::Train => {
            let mean = channel_mean(x, n)?;
            let var = channel_mean(&x.broadcast_sub(&mean)?.sqr()?, n)?;
            let unbiased = if n > 1 {
                n as f64 / (n - 1) as f64
            } else {
                1.0
            };
            let m = a.momentum;
            let rm = (running_mean.as_tensor().affine(1.0 - m, 0.0)?
                + mean.flatten_all()?.detach().affine(m, 0.0)?)?;
            let rv = (running_var.as_tensor().affine(1.0 - m, 0.0)?
                + var.flatten_all()?.detach().affine(m * unbiased, 0.0)?)?;
            running_mean.set(&rm)?;
            running_var.set(&rv)?;
            (mean, var)
        }
        BnMode::Eval => (
            running_mean.as_tensor().reshape((1, c, 1, 1, 1))?,
            running_var.as_tensor().reshape((1, c, 1, 1, 1))?,
        ),
    };
    let y = x
        .broadcast_sub(&mean)?
        .broadcast_div(&(var + a.eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape((1, c, 1, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1, 1))?)?;
    if a.relu {
        y.relu()
    } else {
        Ok(y)
    }
}
