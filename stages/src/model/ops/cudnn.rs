//! CA-I3D's 3D convolution on CUDA through cuDNN's N-dimensional convolution (feature `cudnn`).
//!
//! One custom op with a CUDA forward only, in three passes: the convolution, its gradient with
//! respect to the input (cuDNN's backward-data) and with respect to the weight
//! (backward-filter). The convolution's `bwd` applies the other two, so autograd never leaves
//! the device. Without this
//! feature a CUDA build runs [`super::reference::conv3d`] (one candle `conv2d` per temporal tap).
//!
//! Math: f32 through FMA kernels by default, so a CUDA run matches the CPU ops to 1e-4; with
//! the training kinds' `tf32 = true` (candle's reduced-precision switch, which
//! `train::precision` holds) cuDNN may use TF32 tensor cores as well.

use super::conv3d::Geo;
use super::dims5;
use candle_core::cuda_backend::cudarc::cudnn::sys::{
    cudnnConvolutionMode_t, cudnnMathType_t, cudnnTensorFormat_t,
};
use candle_core::cuda_backend::cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, FilterDescriptor,
    TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{bail, CpuStorage, CudaStorage, CustomOp2, Layout, Result, Shape, Tensor};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device, bound to candle's
    // stream for that device (so our kernels queue behind candle's own)
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream())?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

/// The contiguous f32 data of a CUDA storage.
fn view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f32>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<f32>()?.slice(a..b)),
        None => bail!("cudnn conv3d: input must be contiguous"),
    }
}

/// Dims and packed (NCDHW) strides of a 5-d shape, as cuDNN takes them.
fn packed(d: [usize; 5]) -> ([i32; 5], [i32; 5]) {
    let mut strides = [1i32; 5];
    for i in (0..4).rev() {
        strides[i] = strides[i + 1] * d[i + 1] as i32;
    }
    (d.map(|v| v as i32), strides)
}

/// One convolution's geometry with its cuDNN descriptors.
struct Plan {
    x: [usize; 5],
    w: [usize; 5],
    y: [usize; 5],
    conv: ConvDescriptor<f32>,
    xd: TensorDescriptor<f32>,
    wd: FilterDescriptor<f32>,
    yd: TensorDescriptor<f32>,
}

impl Plan {
    fn new(
        cudnn: &Arc<Cudnn>,
        x: [usize; 5],
        w: [usize; 5],
        stride: [usize; 3],
        padding: [usize; 3],
    ) -> Result<Plan> {
        // the same checks and output size as the CPU op
        let y = dims5(
            &Geo::new(x, w, stride, padding)?.out_shape(),
            "conv3d output",
        )?;
        let mut conv = cudnn.create_convnd::<f32>(
            &padding.map(|v| v as i32),
            &stride.map(|v| v as i32),
            &[1, 1, 1],
            cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
        )?;
        conv.set_math_type(if candle_core::cuda::gemm_reduced_precision_f32() {
            cudnnMathType_t::CUDNN_DEFAULT_MATH
        } else {
            cudnnMathType_t::CUDNN_FMA_MATH
        })?;
        let tensor = |d: [usize; 5]| {
            let (dims, strides) = packed(d);
            cudnn.create_nd_tensor::<f32>(&dims, &strides)
        };
        let (xd, yd) = (tensor(x)?, tensor(y)?);
        let wd =
            cudnn.create_5d_filter::<f32>(cudnnTensorFormat_t::CUDNN_TENSOR_NCHW, packed(w).0)?;
        Ok(Plan {
            x,
            w,
            y,
            conv,
            xd,
            wd,
            yd,
        })
    }

    /// Refuses a gradient whose shape is not this convolution's output.
    fn check_y(&self, got: &Shape) -> Result<()> {
        if got.dims() != &self.y[..] {
            bail!(
                "cudnn conv3d: gradient {got:?} does not match the output {:?}",
                self.y
            );
        }
        Ok(())
    }
}

/// cuDNN's scratch memory: never read before cuDNN writes it, so not zero-filled (a memset per
/// convolution otherwise).
fn workspace(dev: &CudaDevice, bytes: usize) -> Result<CudaSlice<u8>> {
    // SAFETY: cuDNN only reads what it wrote into its workspace
    unsafe { dev.alloc::<u8>(bytes) }
}

/// Builds cuDNN's pass descriptor `$pass { .. }`, picks its heuristic algorithm, allocates the
/// workspace that needs and launches it on `$buf`s (the three passes differ only in these).
macro_rules! launch {
    ($dev:expr, $pass:ident { $($f:ident: $d:expr),* }, $($buf:expr),*) => {{
        let op = $pass { $($f: $d),* };
        let algo = op.pick_algorithm()?;
        let mut work = workspace($dev, op.get_workspace_size(algo)?)?;
        // SAFETY: the descriptors describe exactly the buffers passed (packed f32 of these
        // dims), and beta = 0 overwrites the output entirely
        unsafe { op.launch(algo, Some(&mut work), (1f32, 0f32), $($buf),*) }?;
    }};
}

/// Which of cuDNN's three convolution passes an op runs; the backward ones carry the shape that
/// their inputs do not give.
#[derive(Clone, Copy, Debug)]
enum Pass {
    /// `(x, w) -> y`
    Forward,
    /// `(grad_y, w) -> grad_x`
    Data { x: [usize; 5] },
    /// `(x, grad_y) -> grad_w`
    Filter { w: [usize; 5] },
}

/// `conv3d(x, w)` without bias through cuDNN; its `bwd` applies the two backward passes as ops
/// of the same kind, so both gradients are computed on the device.
#[derive(Clone, Copy, Debug)]
pub struct CudnnConv3d {
    stride: [usize; 3],
    padding: [usize; 3],
    pass: Pass,
}

impl CudnnConv3d {
    pub fn forward(stride: [usize; 3], padding: [usize; 3]) -> Self {
        CudnnConv3d {
            stride,
            padding,
            pass: Pass::Forward,
        }
    }

    /// The convolution's (x, w) dims: from the two inputs `a`, `b`, or from the pass.
    fn dims(&self, a: &Shape, b: &Shape) -> Result<([usize; 5], [usize; 5])> {
        let (x, w) = match self.pass {
            Pass::Forward => (a, b),
            Pass::Data { x } => return Ok((x, dims5(b, "conv3d weight")?)),
            Pass::Filter { w } => return Ok((dims5(a, "conv3d input")?, w)),
        };
        Ok((dims5(x, "conv3d input")?, dims5(w, "conv3d weight")?))
    }

    /// Runs this op's pass of the convolution `p` on its inputs `a`, `b` into `o`.
    #[rustfmt::skip]
    fn run(&self, dev: &CudaDevice, p: &Plan, (a, b): (&CudaView<f32>, &CudaView<f32>), o: &mut CudaSlice<f32>) -> Result<()> {
        let (conv, xd, wd, yd) = (&p.conv, &p.xd, &p.wd, &p.yd);
        match self.pass {
            Pass::Forward => launch!(dev, ConvForward { conv: conv, x: xd, w: wd, y: yd }, a, b, o),
            Pass::Data { .. } => launch!(dev, ConvBackwardData { conv: conv, dx: xd, w: wd, dy: yd }, o, b, a),
            Pass::Filter { .. } => launch!(dev, ConvBackwardFilter { conv: conv, x: xd, dw: wd, dy: yd }, a, o, b),
        }
        Ok(())
    }
}

impl CustomOp2 for CudnnConv3d {
    fn name(&self) -> &'static str {
        match self.pass {
            Pass::Forward => "mpf-conv3d-cudnn",
            Pass::Data { .. } => "mpf-conv3d-cudnn-bwd-data",
            Pass::Filter { .. } => "mpf-conv3d-cudnn-bwd-filter",
        }
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!(
            "{} runs on CUDA only (the CPU has its own conv3d op)",
            self.name()
        )
    }

    fn cuda_fwd(
        &self,
        sa: &CudaStorage,
        la: &Layout,
        sb: &CudaStorage,
        lb: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &sa.device;
        let (x, w) = self.dims(la.shape(), lb.shape())?;
        let p = Plan::new(&handle(dev)?, x, w, self.stride, self.padding)?;
        let (a, b) = (view(sa, la)?, view(sb, lb)?);
        let out = match self.pass {
            Pass::Forward => p.y,
            Pass::Data { .. } => p.check_y(la.shape()).map(|_| p.x)?,
            Pass::Filter { .. } => p.check_y(lb.shape()).map(|_| p.w)?,
        };
        // SAFETY: every pass writes all of `o` (beta = 0) before anything reads it
        let mut o = unsafe { dev.alloc::<f32>(out.iter().product()) }?;
        self.run(dev, &p, (&a, &b), &mut o)?;
        Ok((
            CudaStorage::wrap_cuda_slice(o, dev.clone()),
            Shape::from(out.to_vec()),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let pass = |pass| CudnnConv3d { pass, ..*self };
        let gx = if x.track_op() {
            let x = dims5(x.shape(), "conv3d input")?;
            Some(grad.apply_op2_no_bwd(w, &pass(Pass::Data { x }))?)
        } else {
            None
        };
        let gw = if w.track_op() {
            let w = dims5(w.shape(), "conv3d weight")?;
            Some(x.apply_op2_no_bwd(&grad, &pass(Pass::Filter { w }))?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}
