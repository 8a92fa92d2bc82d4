//! `features`: one sample (or one magnified copy) -> the 5 x (L-1) x H x W input tensor:
//! face crop, optional motion magnification of the apex, frame interpolation to L frames, TV-L1
//! flow and frame differences between consecutive frames (paper Sec. 3.2, 4.2). The flow backend is
//! TV-L1 (default) or FlowNet2 with flownet2-pytorch's checkpoint (`flow_backend`, `flownet2`).

use anyhow::{Context, Result};
use mpfnet_api::{Array, Artifact, BadInputExt, Ctx, TypedStage};

use super::artifacts::ClipAttrs;
pub use super::preprocess::{FeatureParams, FeaturesMeta, FlowBackend, FlowNet2Params, Prepared};
use crate::prep::flow::FlowField;
use crate::prep::image::{load_frame, Frame};

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

impl TypedStage for Features {
    // 3: the flow backend (TV-L1 or FlowNet2) recorded; no frame paths in the metadata
    const VERSION: &'static str = "3";
    const KIND: &'static str = "features";
    const ABOUT: &'static str = "crop, (magnify,) interpolate to L frames, TV-L1 or FlowNet2 flow + frame difference: a 5 x (L-1) x H x W tensor";
    type Params = FeatureParams;
    type Claims = super::Claims;
    fn files_in(&self, p: &FeatureParams) -> Vec<String> {
        // the checkpoint's content keys the node, not its path
        if p.flow_backend == FlowBackend::Flownet2 {
            vec!["/flownet2/weights".into()]
        } else {
            Vec::new()
        }
    }
    fn compute(&self, p: &FeatureParams, ctx: &Ctx) -> Result<Artifact> {
        let item = ctx.item()?;
        let clip = ClipAttrs::of(item)?;
        let path = |p: &std::path::Path| -> Result<String> {
            p.to_str().map(String::from).with_context(|| {
                format!("axis item {}: path {} is not UTF-8", item.id, p.display())
            })
        };
        let (onset_p, apex_p) = (path(&clip.onset)?, path(&clip.apex)?);
        // an unreadable frame or a face not found is the data's fault (exit status 2)
        let onset = load_frame(&onset_p).bad_input()?;
        let apex = load_frame(&apex_p).bad_input()?;
        let (onset, apex) = p
            .crop_pair(onset, apex, &[onset_p.clone(), apex_p.clone()])
            .bad_input()?;
        let prep = p.prepare(onset, apex, clip.phi)?;
        let meta = FeaturesMeta {
            id: item.id.clone(),
            phi: clip.phi,
            flow_estimator: p.estimator()?.name(),
            params: p.clone(),
        };
        let mut art = Artifact::with_meta(serde_json::to_value(meta)?);
        art.insert("x", Array::f32(prep.shape, prep.x)?);
        art.insert("onset", frame_array(&prep.onset)?);
        art.insert("apex", frame_array(&prep.apex)?);
        Ok(art)
    }
    fn pngs(&self, art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
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
