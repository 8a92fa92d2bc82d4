//! 3D ops for CA-I3D that candle 0.11.1 lacks (or runs slowly on CPU).
//!
//! Every op has two paths:
//! - a CPU custom op (`candle_core::CustomOp*`) with an analytic backward, built on the `gemm`
//!   crate and rayon (stock candle ops measured 8-9x slower than PyTorch on this CPU);
//! - a reference path built only from stock candle ops, used on non-CPU devices (so a CUDA build
//!   runs the model unchanged) and in the tests as the ground truth.
//!
//! All tensors are f32, layout `[B, C, T, H, W]`.

pub mod bn;
pub mod ca;
pub mod conv3d;
pub mod pool3d;
pub mod reference;

use candle_core::{bail, CpuStorage, Layout, Result, Tensor};

pub use bn::{batch_norm3d, BnMode};
pub use ca::{ca_apply, ca_pool};
pub use conv3d::conv3d;
pub use pool3d::{adaptive_avg_pool3d, max_pool3d};

/// Whether the custom CPU kernels are used for this tensor (false: stock-op reference path).
pub fn use_custom(x: &Tensor) -> bool {
    x.device().is_cpu() && !force_reference()
}

thread_local! {
    static FORCE_REFERENCE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the stock-op reference path forced on the current thread (benchmarks, tests).
pub fn with_reference<R>(f: impl FnOnce() -> R) -> R {
    let prev = FORCE_REFERENCE.with(|c| c.replace(true));
    let r = f();
    FORCE_REFERENCE.with(|c| c.set(prev));
    r
}

fn force_reference() -> bool {
    FORCE_REFERENCE.with(|c| c.get())
}

/// Contiguous f32 view of a CPU storage.
pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!(
            "model ops: only f32 is supported, got {:?}",
            candle_core::backend::BackendStorage::dtype(s)
        ),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("model ops: input must be contiguous"),
    }
}

/// Contiguous f32 data of a CPU tensor (copy-free when the tensor already is contiguous).
pub(crate) fn with_cpu_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        candle_core::Storage::Cpu(c) => f(cpu_slice(c, l)?),
        _ => bail!("model ops: expected a CPU tensor"),
    }
}

/// A vector of `n` floats that the caller overwrites entirely before reading any of it: no
/// zero-fill pass (a full extra write of every activation-sized buffer otherwise; candle's own
/// CPU kernels allocate their outputs the same way).
#[allow(clippy::uninit_vec)]
pub(crate) fn uninit_vec(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns, and every caller writes all `n` elements
    // before reading.
    unsafe { v.set_len(n) };
    v
}

/// Lanes of the reductions below: independent partial sums, so the loop vectorises instead of
/// waiting on one add chain; the lanes are combined in a fixed order (deterministic).
const LANES: usize = 16;

/// `sum(v)` accumulated in f64 over `LANES` partial sums.
pub(crate) fn sum_f64(v: &[f32]) -> f64 {
    let mut acc = [0f64; LANES];
    let mut it = v.chunks_exact(LANES);
    for c in &mut it {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x as f64;
        }
    }
    let mut s: f64 = it.remainder().iter().map(|&x| x as f64).sum();
    for a in acc {
        s += a;
    }
    s
}

/// `sum((v - mean)^2)` accumulated in f64 over `LANES` partial sums.
pub(crate) fn sum_sq_dev_f64(v: &[f32], mean: f64) -> f64 {
    let mut acc = [0f64; LANES];
    let mut it = v.chunks_exact(LANES);
    for c in &mut it {
        for (a, &x) in acc.iter_mut().zip(c) {
            let d = x as f64 - mean;
            *a += d * d;
        }
    }
    let mut s: f64 = it
        .remainder()
        .iter()
        .map(|&x| {
            let d = x as f64 - mean;
            d * d
        })
        .sum();
    for a in acc {
        s += a;
    }
    s
}

/// Raw pointer that rayon tasks may share; every user writes disjoint ranges.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub fn ptr(&self) -> *mut f32 {
        self.0
    }

    /// # Safety
    /// The caller guarantees that `[off, off + len)` is in bounds and written by one task only.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice(&self, off: usize, len: usize) -> &mut [f32] {
        std::slice::from_raw_parts_mut(self.0.add(off), len)
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)` on raw strided pointers (row/col strides).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.offset(i as isize * dst_rs + j as isize * dst_cs) = 0.0;
                }
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs,
        dst_rs,
        accumulate,
        lhs,
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        1.0f32,
        1.0f32,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Splits `0..n` into `parts` contiguous ranges (a fixed split, so that reductions over the
/// ranges add up in the same order whatever the thread count: bitwise-reproducible gradients).
pub(crate) fn fixed_chunks(n: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|i| (i * n / parts)..((i + 1) * n / parts))
        .filter(|r| !r.is_empty())
        .collect()
}

/// Number of partial sums used by reductions (fixed: results do not depend on the thread count).
pub(crate) const REDUCE_PARTS: usize = 8;

pub(crate) fn dims5(shape: &candle_core::Shape, what: &str) -> Result<[usize; 5]> {
    match shape.dims() {
        &[a, b, c, d, e] => Ok([a, b, c, d, e]),
        d => bail!("{what}: expected a 5D tensor [B, C, T, H, W], got {d:?}"),
    }
}

/// Along one axis of a strided, padded window op (conv3d, pools): the output positions `o < n_out` whose input index `o*s + d - p` lies in `[0, n_in)`.
pub(crate) fn valid_range(
    n_out: usize,
    s: usize,
    d: usize,
    p: usize,
    n_in: usize,
) -> (usize, usize) {
    let lo = if d >= p { 0 } else { (p - d).div_ceil(s) };
    let hi = if n_in + p > d {
        ((n_in - 1 + p - d) / s + 1).min(n_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}
