//! FlowNet2 as a flow backend of pre-processing: the same [`FlowEstimator`] contract as TV-L1
//! (flow from frame `a` to frame `b` in pixels, pixel x of `a` moving to x + (u, v) in `b`,
//! `u` horizontal). flownet2-pytorch's network computes exactly that: it warps the second image
//! to the first with the flow (`resample2d`, `img2(x + flow(x))`), and its final flow is in
//! pixels of the input.
//!
//! Frames (intensities in [0, 1], grey or RGB) enter as RGB in [0, 255], grey replicated over
//! the three channels (flownet2-pytorch reads images as RGB with `rgb_max` 255).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};

use super::checkpoint;
use super::nets::{FlowNet2, FlowNet2Config};
use crate::prep::flow::{check_same_size, FlowEstimator, FlowField};
use crate::prep::image::Frame;

/// FlowNet2 with loaded weights.
pub struct FlowNet2Flow {
    net: FlowNet2,
    device: Device,
    /// Identifies the weights in `name()` (e.g. the file's content digest).
    weights_id: String,
}

impl FlowNet2Flow {
    pub fn new(net: FlowNet2, device: Device, weights_id: impl Into<String>) -> Self {
        Self {
            net,
            device,
            weights_id: weights_id.into(),
        }
    }

    /// Loads a checkpoint (full width) on the CPU, once per process for one file state
    /// (path, size, modification time): every `features` node of a run shares it. Its name
    /// carries the file's blake3 digest.
    pub fn shared(path: &Path) -> Result<Arc<FlowNet2Flow>> {
        type Cache =
            Mutex<HashMap<(PathBuf, u64, Option<std::time::SystemTime>), Arc<FlowNet2Flow>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let meta = std::fs::metadata(path)
            .with_context(|| format!("FlowNet2 weights {}", path.display()))?;
        let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
        let cache = CACHE.get_or_init(Default::default);
        // hold the lock while loading: concurrent nodes wait for one load instead of each
        // reading 650 MB
        let mut map = cache.lock().unwrap();
        if let Some(e) = map.get(&key) {
            return Ok(e.clone());
        }
        let net = checkpoint::load(path, &FlowNet2Config::default(), &Device::Cpu)?;
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(std::fs::File::open(path)?)?;
        let digest = hasher.finalize().to_hex().to_string();
        let e = Arc::new(FlowNet2Flow::new(net, Device::Cpu, digest));
        map.insert(key, e.clone());
        Ok(e)
    }

    fn image(&self, f: &Frame) -> Result<Tensor> {
        let rgb = f.to_rgb();
        let (w, h) = (rgb.width, rgb.height);
        // HWC in [0, 1] -> CHW in [0, 255]
        let mut chw = vec![0f32; 3 * w * h];
        for (p, px) in rgb.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * w * h + p] = px[c] * 255.0;
            }
        }
        Ok(Tensor::from_vec(chw, (1, 3, h, w), &self.device)?)
    }

    pub fn net(&self) -> &FlowNet2 {
        &self.net
    }
}

impl FlowEstimator for FlowNet2Flow {
    fn flow(&self, a: &Frame, b: &Frame) -> Result<FlowField> {
        check_same_size("FlowNet2", a, b)?;
        let flow = self.net.flow(&self.image(a)?, &self.image(b)?)?;
        let flow = flow.squeeze(0)?.to_device(&Device::Cpu)?;
        let u = flow.get(0)?.flatten_all()?.to_vec1::<f32>()?;
        let v = flow.get(1)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(FlowField {
            width: a.width,
            height: a.height,
            u,
            v,
        })
    }

    fn name(&self) -> String {
        format!("flownet2(weights={})", self.weights_id)
    }
}
