//! CA-I3D's 3D convolution on CUDA through cuDNN's N-dimensional convolution (feature `cudnn`).
//!
//! Three custom ops, each with a CUDA forward only: the convolution, its gradient with respect
//! to the input (cuDNN's backward-data) and with respect to the weight (backward-filter). The
//! first one's `bwd` applies the other two, so autograd never leaves the device. Without this
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

    fn len(d: [usize; 5]) -> usize {
        d.iter().product()
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

fn workspace(dev: &CudaDevice, bytes: usize) -> Result<CudaSlice<u8>> {
    dev.alloc_zeros::<u8>(bytes)
}

fn wrap(y: CudaSlice<f32>, dev: &CudaDevice, d: [usize; 5]) -> (CudaStorage, Shape) {
    (
        CudaStorage::wrap_cuda_slice(y, dev.clone()),
        Shape::from(d.to_vec()),
    )
}

/// `conv3d(x, w)` without bias; `bwd` gives both gradients through the two ops below.
#[derive(Clone, Copy, Debug)]
pub struct CudnnConv3d {
    pub stride: [usize; 3],
    pub padding: [usize; 3],
}

/// The gradient with respect to the input: applied to `(grad_y, w)`.
#[derive(Clone, Copy, Debug)]
struct CudnnConv3dData {
    x: [usize; 5],
    stride: [usize; 3],
    padding: [usize; 3],
}

/// The gradient with respect to the weight: applied to `(x, grad_y)`.
#[derive(Clone, Copy, Debug)]
struct CudnnConv3dFilter {
    w: [usize; 5],
    stride: [usize; 3],
    padding: [usize; 3],
}

fn cpu_refused(op: &str) -> Result<(CpuStorage, Shape)> {
    bail!("{op} runs on CUDA only (the CPU has its own conv3d op)")
}

impl CustomOp2 for CudnnConv3d {
    fn name(&self) -> &'static str {
        "mpf-conv3d-cudnn"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_refused(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let cudnn = handle(dev)?;
        let x = dims5(xl.shape(), "conv3d input")?;
        let w = dims5(wl.shape(), "conv3d weight")?;
        let p = Plan::new(&cudnn, x, w, self.stride, self.padding)?;
        let mut y = unsafe { dev.alloc::<f32>(Plan::len(p.y)) }?;
        let op = ConvForward {
            conv: &p.conv,
            x: &p.xd,
            w: &p.wd,
            y: &p.yd,
        };
        let algo = op.pick_algorithm()?;
        let mut work = workspace(dev, op.get_workspace_size(algo)?)?;
        // SAFETY: the descriptors describe exactly the buffers passed (packed f32 of these dims)
        unsafe {
            op.launch(
                algo,
                Some(&mut work),
                (1f32, 0f32),
                &view(xs, xl)?,
                &view(ws, wl)?,
                &mut y,
            )
        }?;
        Ok(wrap(y, dev, p.y))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (stride, padding) = (self.stride, self.padding);
        let gx = if x.track_op() {
            let x = dims5(x.shape(), "conv3d input")?;
            let op = CudnnConv3dData { x, stride, padding };
            Some(grad.apply_op2_no_bwd(w, &op)?)
        } else {
            None
        };
        let gw = if w.track_op() {
            let w = dims5(w.shape(), "conv3d weight")?;
            let op = CudnnConv3dFilter { w, stride, padding };
            Some(x.apply_op2_no_bwd(&grad, &op)?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

impl CustomOp2 for CudnnConv3dData {
    fn name(&self) -> &'static str {
        "mpf-conv3d-cudnn-bwd-data"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_refused(self.name())
    }

    fn cuda_fwd(
        &self,
        gs: &CudaStorage,
        gl: &Layout,
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &gs.device;
        let cudnn = handle(dev)?;
        let w = dims5(wl.shape(), "conv3d weight")?;
        let p = Plan::new(&cudnn, self.x, w, self.stride, self.padding)?;
        p.check_y(gl.shape())?;
        let mut dx = unsafe { dev.alloc::<f32>(Plan::len(p.x)) }?;
        let op = ConvBackwardData {
            conv: &p.conv,
            dx: &p.xd,
            w: &p.wd,
            dy: &p.yd,
        };
        let algo = op.pick_algorithm()?;
        let mut work = workspace(dev, op.get_workspace_size(algo)?)?;
        // SAFETY: as in the forward; beta = 0 overwrites dx entirely
        unsafe {
            op.launch(
                algo,
                Some(&mut work),
                (1f32, 0f32),
                &mut dx,
                &view(ws, wl)?,
                &view(gs, gl)?,
            )
        }?;
        Ok(wrap(dx, dev, p.x))
    }
}

impl CustomOp2 for CudnnConv3dFilter {
    fn name(&self) -> &'static str {
        "mpf-conv3d-cudnn-bwd-filter"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_refused(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let cudnn = handle(dev)?;
        let x = dims5(xl.shape(), "conv3d input")?;
        let p = Plan::new(&cudnn, x, self.w, self.stride, self.padding)?;
        p.check_y(gl.shape())?;
        let mut dw = unsafe { dev.alloc::<f32>(Plan::len(p.w)) }?;
        let op = ConvBackwardFilter {
            conv: &p.conv,
            x: &p.xd,
            dw: &p.wd,
            dy: &p.yd,
        };
        let algo = op.pick_algorithm()?;
        let mut work = workspace(dev, op.get_workspace_size(algo)?)?;
        // SAFETY: as in the forward; beta = 0 overwrites dw entirely
        unsafe {
            op.launch(
                algo,
                Some(&mut work),
                (1f32, 0f32),
                &view(xs, xl)?,
                &mut dw,
                &view(gs, gl)?,
            )
        }?;
        Ok(wrap(dw, dev, p.w))
    }
}
