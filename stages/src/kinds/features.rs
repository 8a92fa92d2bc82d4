//! `features`: one sample (or one magnified copy) -> the 5 x (L-1) x H x W input tensor:
//! face crop, optional motion magnification of the apex, frame interpolation to L frames, TV-L1
//! flow and frame differences between consecutive frames (paper Sec. 3.2, 4.2). The flow backend is
//! TV-L1 (default) or FlowNet2 with flownet2-pytorch's checkpoint (`flow_backend`, `flownet2`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use mpfnet_api::{Array, Artifact, BadInputExt, Ctx, InputDecl, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::{defaults_of, validate_as};
use crate::flownet2::FlowNet2Flow;
use crate::prep::face::FaceCropper;
use crate::prep::features::{fuse, FeatureMode, FlowNorm};
use crate::prep::flow::{FlowEstimator, FlowField, TvL1, TvL1Params};
use crate::prep::image::{load_frame, resize, Frame};
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

fn frame_array(f: &Frame) -> Result<Array> {
    let rgb = f.to_rgb();
    Array::u8(
        vec![rgb.height, rgb.width, 3],
        crate::prep::image::to_u8(&rgb),
    )
}

fn array_frame(a: &Array) -> Result<Frame> {
    let Array::U8 { shape, data } = a else {
        anyhow::bail!("expected a U8 image")
    };
    Frame::from_vec(
        shape[1],
        shape[0],
        shape[2],
        data.iter().map(|&v| v as f32 / 255.0).collect(),
    )
}

/// PNG bytes of a frame.
pub fn png(f: &Frame) -> Result<Vec<u8>> {
    let rgb = f.to_rgb();
    let img = image::RgbImage::from_raw(
        rgb.width as u32,
        rgb.height as u32,
        crate::prep::image::to_u8(&rgb),
    )
    .context("image buffer")?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

pub struct Features;

impl Stage for Features {
    fn kind(&self) -> &'static str {
        "features"
    }
    fn version(&self) -> &'static str {
        // 3: the flow backend (TV-L1 or FlowNet2) recorded; no frame paths in the metadata
        "3"
    }
    fn code(&self) -> String {
        super::code_of("features")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("features")
    }
    fn about(&self) -> &'static str {
        "crop, (magnify,) interpolate to L frames, TV-L1 or FlowNet2 flow + frame difference: a 5 x (L-1) x H x W tensor"
    }
    fn defaults(&self) -> Value {
        defaults_of::<FeatureParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<FeatureParams>(p)?;
        let p: FeatureParams = serde_json::from_value(p.clone())?;
        anyhow::ensure!(p.frames >= 2, "`frames` must be at least 2");
        anyhow::ensure!(p.size >= 16, "`size` must be at least 16");
        p.check_weights()?;
        Ok(())
    }
    fn file_params(&self, p: &Value) -> Vec<String> {
        // the checkpoint's content keys the node, not its path
        if p.get("flow_backend").and_then(|v| v.as_str()) == Some("flownet2") {
            vec!["/flownet2/weights".into()]
        } else {
            Vec::new()
        }
    }
    fn inputs(&self) -> &'static [InputDecl] {
        &[]
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let p: FeatureParams = ctx.params_as()?;
        let item = ctx.item()?;
        let path = |k: &str| -> Result<String> {
            item.attrs[k]
                .as_str()
                .map(String::from)
                .with_context(|| format!("axis item {} has no `{k}` path", item.id))
        };
        let (onset_p, apex_p) = (path("onset")?, path("apex")?);
        // an unreadable frame or a face not found is the data's fault (exit status 2)
        let onset = load_frame(&onset_p).bad_input()?;
        let apex = load_frame(&apex_p).bad_input()?;
        let (onset, apex) = p
            .crop_pair(onset, apex, &[onset_p.clone(), apex_p.clone()])
            .bad_input()?;
        let phi = item.attrs.get("phi").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        let prep = p.prepare(onset, apex, phi)?;
        let mut art = Artifact::with_meta(
            // the parameters travel with the output: `bundle` records them for `predict`, and
            // which estimator (for FlowNet2: with the weights' digest) made the flows. No frame
            // paths: the node is keyed by the frames' content, so the same clip found under
            // another folder shares this output, which must not name either folder.
            json!({ "id": item.id, "phi": phi, "flow_estimator": p.estimator()?.name(), "params": p }),
        );
        art.insert("x", Array::f32(prep.shape, prep.x)?);
        art.insert("onset", frame_array(&prep.onset)?);
        art.insert("apex", frame_array(&prep.apex)?);
        Ok(art)
    }
    fn render_png(&self, art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
        let onset = array_frame(art.tensor("onset")?)?;
        let apex = array_frame(art.tensor("apex")?)?;
        let x = art.tensor("x")?;
        let (s, data) = (x.shape().to_vec(), x.as_f32()?);
        let (t, h, w) = (s[1], s[2], s[3]);
        let plane = |c: usize, k: usize| &data[(c * t + k) * h * w..(c * t + k + 1) * h * w];
        let mut flows = Vec::new();
        let mut diffs = Vec::new();
        for k in 0..t {
            let flow = FlowField {
                width: w,
                height: h,
                u: plane(0, k).to_vec(),
                v: plane(1, k).to_vec(),
            };
            flows.push(crate::prep::viz::flow_to_rgb(&flow, Some(1.0)));
            let mut d = Frame::new(w, h, 3);
            for c in 0..3 {
                for (i, &v) in plane(2 + c, k).iter().enumerate() {
                    d.data[i * 3 + c] = v;
                }
            }
            diffs.push(crate::prep::viz::diff_to_rgb(&d, 8.0));
        }
        let sheet = crate::prep::viz::contact_sheet(
            &[vec![onset.clone(), apex.clone()], flows.clone(), diffs],
            &["onset/apex".into(), "flow".into(), "diff x8".into()],
        );
        Ok(vec![
            ("onset.png".into(), png(&onset)?),
            ("apex.png".into(), png(&apex)?),
            ("flow_mid.png".into(), png(&flows[t / 2])?),
            ("sheet.png".into(), png(&sheet)?),
        ])
    }
}
