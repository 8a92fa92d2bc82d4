//! 3D ops for CA-I3D that candle 0.11.1 lacks (or runs slowly on CPU).
//!
//! Every op has two paths:
//! - a CPU custom op (`candle_core::CustomOp*`) with an analytic backward, built on the `gemm`
//!   crate and rayon (stock candle ops measured 8-9x slower than PyTorch on this CPU);
//! - a reference path built only from stock candle ops, used on non-CPU devices (so a CUDA build
//!   runs the model unchanged) and in the tests as the ground truth;
//! - for conv3d on CUDA with the `cudnn` feature, cuDNN's N-d convolution ([`cudnn`]).
//!
//! All tensors are f32, layout `[B, C, T, H, W]`.

pub mod bn;
pub mod ca;
pub mod conv3d;
#[cfg(feature = "cudnn")]
pub mod cudnn;
pub mod pool3d;
pub mod reference;

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::cell::Cell;
use std::thread::LocalKey;

pub use bn::{batch_norm, BnArgs, BnMode};
pub use ca::{ca_apply, ca_pool};
pub use conv3d::conv3d;
pub use pool3d::{adaptive_avg_pool3d, max_pool3d};

/// Whether the custom CPU kernels are used for this tensor (false: stock-op reference path).
pub fn use_custom(x: &Tensor) -> bool {
    custom_on(&FORCE_REFERENCE, x)
}

thread_local! {
    static FORCE_REFERENCE: Cell<bool> = const { Cell::new(false) };
}

/// Whether the stock-op reference path is forced on this thread ([`with_reference`]).
#[cfg_attr(not(feature = "cudnn"), allow(dead_code))]
pub(crate) fn reference_forced() -> bool {
    FORCE_REFERENCE.with(|c| c.get())
}

/// Runs `f` with the stock-op reference path forced on the current thread (benchmarks, tests).
pub fn with_reference<R>(f: impl FnOnce() -> R) -> R {
    forcing(&FORCE_REFERENCE, f)
}

/// Runs `f` with the thread-local switch `force` set (the reference path forced), then
/// restores it.
pub(crate) fn forcing<R>(force: &'static LocalKey<Cell<bool>>, f: impl FnOnce() -> R) -> R {
    let prev = force.with(|c| c.replace(true));
    let r = f();
    force.with(|c| c.set(prev));
    r
}

/// Whether `x` takes a custom CPU op: it lives on the CPU and `force` is not set.
pub(crate) fn custom_on(force: &'static LocalKey<Cell<bool>>, x: &Tensor) -> bool {
    x.device().is_cpu() && !force.with(|c| c.get())
}

/// Contiguous f32 view of a CPU storage.
pub(crate) fn cpu_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    f32_slice(s, l, "model ops")
}

/// Contiguous f32 view of a CPU storage; errors name `what`.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!(
            "{what}: only f32 is supported, got {:?}",
            candle_core::backend::BackendStorage::dtype(s)
        ),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: input must be contiguous"),
    }
}

/// An input of [`F32Op2::fwd`]: contiguous data and shape.
pub(crate) type F32In<'a> = (&'a [f32], &'a Shape);
/// What [`F32Op2::fwd`] returns: the output data and shape.
pub(crate) type F32Out = Result<(Vec<f32>, Shape)>;

/// A binary custom op's CPU forward over contiguous f32 inputs (with their shapes), and its
/// backward; [`Cpu2`] adapts it to candle's `CustomOp2`, slicing the storages once for all.
pub(crate) trait F32Op2: Send + Sync {
    /// candle's name for the op.
    const NAME: &'static str;
    /// What the input errors name (wrong dtype, not contiguous).
    const WHAT: &'static str;

    fn fwd(&self, a: F32In, b: F32In) -> F32Out;

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        _grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Err(candle_core::Error::BackwardNotSupported { op: Self::NAME })
    }
}

/// An [`F32Op2`] as a candle `CustomOp2`.
pub(crate) struct Cpu2<T>(pub T);

impl<T: F32Op2> CustomOp2 for Cpu2<T> {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = (f32_slice(s1, l1, T::WHAT)?, l1.shape());
        let b = (f32_slice(s2, l2, T::WHAT)?, l2.shape());
        let (out, shape) = self.0.fwd(a, b)?;
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        self.0.bwd(a, b, res, grad)
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

/// A strided matrix operand of [`sgemm`]: its first element and its row and column strides.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    pub ptr: P,
    pub rs: isize,
    pub cs: isize,
}

impl<P> Strided<P> {
    /// Row-major, rows `rs` elements apart.
    pub fn rows(ptr: P, rs: usize) -> Self {
        Self {
            ptr,
            rs: rs as isize,
            cs: 1,
        }
    }

    /// Column-major (a transposed row-major matrix), columns `cs` elements apart.
    pub fn cols(ptr: P, cs: usize) -> Self {
        Self {
            ptr,
            rs: 1,
            cs: cs as isize,
        }
    }
}

/// `dst (m x n) = [dst +] lhs (m x k) * rhs (k x n)` on raw strided matrices.
pub(crate) unsafe fn sgemm(
    [m, n, k]: [usize; 3],
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.ptr.offset(i as isize * dst.rs + j as isize * dst.cs) = 0.0;
                }
            }
        }
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst.ptr,
        dst.cs,
        dst.rs,
        accumulate,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
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
