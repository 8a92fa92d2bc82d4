//! The per-clip pre-processing (paper Sec. 3.2, 4.2) as the `features` stage runs it and
//! `mpfnet predict` repeats it on new clips: its parameters and what a `features` artifact
//! records. Shared by `features` and `bundle`, so it is no single kind's file.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use mpfnet_api::StageParams;
use serde::{Deserialize, Serialize};

use crate::flownet2::FlowNet2Flow;
use crate::prep::face::FaceCropper;
use crate::prep::features::{fuse, FeatureMode, FlowNorm};
use crate::prep::flow::{FlowEstimator, TvL1, TvL1Params};
use crate::prep::image::{resize, Frame};
use crate::prep::interp::{ConsistencyParams, FlowInterpolator, FrameInterpolator};
use crate::prep::magnify::{Magnifier, MagnifyMethod};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureParams {
    /// Output side in pixels (the paper: 128).
    pub size: usize,
    /// Frames after interpolation, onset and apex included (the paper: L = 11).
    pub frames: usize,
    /// Run the face detector (rustface) on the onset frame; false for registered crops.
    pub detect_face: bool,
    pub face: FaceCropper,
    /// TV-L1's settings (used when `flow_backend = "tvl1"`).
    pub flow: TvL1Params,
    /// Which estimator computes every flow of pre-processing (interpolation, magnification and
    /// the flow channels alike).
    pub flow_backend: FlowBackend,
    /// FlowNet2's weights (used when `flow_backend = "flownet2"`).
    pub flownet2: FlowNet2Params,
    pub flow_norm: FlowNorm,
    pub consistency: ConsistencyParams,
    /// Used for axis items that carry a `phi` (the `balance` axis).
    pub magnify: MagnifyMethod,
}

impl Default for FeatureParams {
    fn default() -> Self {
        FeatureParams {
            size: 128,
            frames: 11,
            detect_face: false,
            face: FaceCropper::default(),
            flow: TvL1Params::default(),
            flow_backend: FlowBackend::default(),
            flownet2: FlowNet2Params::default(),
            flow_norm: FlowNorm::default(),
            consistency: ConsistencyParams::default(),
            magnify: MagnifyMethod::default(),
        }
    }
}

/// The optical flow estimator of pre-processing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowBackend {
    /// Our TV-L1 (`crate::prep::flow::TvL1`), settings in `flow`.
    #[default]
    Tvl1,
    /// FlowNet2 (Ilg et al. 2017) with NVIDIA flownet2-pytorch's weights, `flownet2.weights`.
    Flownet2,
}

/// `features.flownet2`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowNet2Params {
    /// flownet2-pytorch's `FlowNet2_checkpoint.pth.tar` (relative to the working directory).
    /// Its content digest, not the path, enters the node key.
    pub weights: String,
}

/// Everything `features` computes for one clip (also what `predict` runs on new clips).
pub struct Prepared {
    pub onset: Frame,
    pub apex: Frame,
    pub shape: Vec<usize>,
    pub x: Vec<f32>,
}

impl FeatureParams {
    pub fn estimator(&self) -> Result<Arc<dyn FlowEstimator>> {
        let est: Arc<dyn FlowEstimator> = match self.flow_backend {
            FlowBackend::Tvl1 => Arc::new(TvL1::new(self.flow.clone())),
            FlowBackend::Flownet2 => FlowNet2Flow::shared(Path::new(&self.flownet2.weights))?,
        };
        Ok(est)
    }

    /// Refuses a FlowNet2 backend without a readable checkpoint of the right names and shapes
    /// (reads the file's tensor table, not its weights).
    pub fn check_weights(&self) -> Result<()> {
        if self.flow_backend != FlowBackend::Flownet2 {
            return Ok(());
        }
        let w = &self.flownet2.weights;
        anyhow::ensure!(
            !w.is_empty(),
            "`flow_backend = \"flownet2\"` needs `flownet2.weights`, the path of flownet2-pytorch's FlowNet2_checkpoint.pth.tar"
        );
        anyhow::ensure!(
            Path::new(w).is_file(),
            "`flownet2.weights`: no file {w} (from {})",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        );
        let ck = crate::flownet2::Checkpoint::open(w)?;
        ck.check(&crate::flownet2::param_specs(&Default::default())?)
            .with_context(|| format!("`flownet2.weights` = {w} is not a FlowNet2 checkpoint"))
    }

    /// Crop and resize a clip's two frames; `names` (the frame files, say) name them in errors.
    pub fn crop_pair(
        &self,
        onset: Frame,
        apex: Frame,
        names: &[String; 2],
    ) -> Result<(Frame, Frame)> {
        if self.detect_face {
            let mut fc = self.face.clone();
            fc.size = self.size;
            let mut v = fc.crop_sample(&[onset, apex], names)?;
            let apex = v.pop().unwrap();
            Ok((v.pop().unwrap(), apex))
        } else {
            Ok((
                resize(&onset, self.size, self.size),
                resize(&apex, self.size, self.size),
            ))
        }
    }

    /// The full per-clip pre-processing on already cropped frames.
    pub fn prepare(&self, onset: Frame, apex: Frame, phi: usize) -> Result<Prepared> {
        let est = self.estimator()?;
        let apex = if phi > 0 {
            Magnifier::new(self.magnify.clone(), est.clone()).magnify(&onset, &apex, phi as f32)?
        } else {
            apex
        };
        let interp = FlowInterpolator::new(est.clone(), self.consistency.clone());
        let frames = interp.interpolate(&onset, &apex, self.frames)?;
        let (shape, x) = fuse(&frames, est.as_ref(), FeatureMode::Both, self.flow_norm)?;
        Ok(Prepared {
            onset,
            apex,
            shape,
            x,
        })
    }
}

impl StageParams for FeatureParams {
    fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.frames >= 2, "`frames` must be at least 2");
        anyhow::ensure!(self.size >= 16, "`size` must be at least 16");
        self.check_weights()
    }
}

/// A `features` artifact's meta (the tensor `x` is the input, `onset` and `apex` the frames).
/// The parameters travel with the output: `bundle` records them for `predict`, and which
/// estimator (for FlowNet2: with the weights' digest) made the flows. No frame paths: the node
/// is keyed by the frames' content, so the same clip found under another folder shares this
/// output, which must not name either folder.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeaturesMeta {
    pub id: String,
    pub phi: usize,
    #[serde(default)]
    pub flow_estimator: String,
    pub params: FeatureParams,
}
