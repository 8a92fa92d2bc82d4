//! A contact sheet of the whole pre-processing on a real face (from the fixture photo) with a
//! synthetic smooth "expression" motion: crop, magnification, interpolation, flow, differences.
//!   cargo run --release --example prep_sheet [-- out.png]
use anyhow::Result;
use mpfnet_stages::prep::face::FaceCropper;
use mpfnet_stages::prep::features::{fuse, FeatureMode, FlowNorm};
use mpfnet_stages::prep::flow::{FlowEstimator, FlowField, TvL1};
use mpfnet_stages::prep::image::{crop, load_frame, save_png, Frame};
use mpfnet_stages::prep::interp::{ConsistencyParams, FlowInterpolator, FrameInterpolator};
use mpfnet_stages::prep::magnify::{Magnifier, MagnifyMethod};
use mpfnet_stages::prep::pattern::{smooth_field, warp_lanczos3};
use mpfnet_stages::prep::viz::{contact_sheet, diff_to_rgb, flow_to_rgb};
use std::sync::Arc;

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/prep_sheet.png".into());
    let photo = mpfnet_stages::prep::pattern::remove_colour_marks(&load_frame(
        "tests/fixtures/rustface_test.png",
    )?);
    let region = crop(&photo, 783, 170, 224, 224)?;
    let fc = FaceCropper::default();
    let onset = fc
        .crop_sample(&[region], &["photo region".into()])?
        .remove(0);
    let motion = smooth_field(128, 128, 1.0, 4);
    let apex = warp_lanczos3(&onset, &motion);
    let est: Arc<dyn FlowEstimator> = Arc::new(TvL1::default());
    let lag = Magnifier::new(MagnifyMethod::Lagrangian, est.clone());
    let eul = Magnifier::new(MagnifyMethod::eulerian_default(), est.clone());
    let phis = [1.0, 4.0, 8.0, 14.0];
    let mut row_lag = vec![onset.clone(), apex.clone()];
    row_lag.extend(lag.magnify_many(&onset, &apex, &phis)?);
    let mut row_eul = vec![onset.clone(), apex.clone()];
    row_eul.extend(eul.magnify_many(&onset, &apex, &phis)?);
    let vfi = FlowInterpolator::new(est.clone(), ConsistencyParams::default());
    let frames = vfi.interpolate(&onset, &row_lag[5], 11)?;
    let (shape, data) = fuse(&frames, est.as_ref(), FeatureMode::Both, FlowNorm::Raw)?;
    let (t, hw) = (shape[1], 128 * 128);
    let flows: Vec<Frame> = (0..t)
        .map(|k| {
            let f = FlowField {
                width: 128,
                height: 128,
                u: data[k * hw..(k + 1) * hw].to_vec(),
                v: data[(t + k) * hw..(t + k + 1) * hw].to_vec(),
            };
            flow_to_rgb(&f, Some(1.0))
        })
        .collect();
    let diffs: Vec<Frame> = (0..t)
        .map(|k| {
            let mut d = Frame::new(128, 128, 3);
            for c in 0..3 {
                for i in 0..hw {
                    d.data[i * 3 + c] = data[((2 + c) * t + k) * hw + i];
                }
            }
            diff_to_rgb(&d, 8.0)
        })
        .collect();
    let sheet = contact_sheet(
        &[row_lag, row_eul, frames, flows, diffs],
        &[
            "LAGR 1 4 8 14".into(),
            "EULER".into(),
            "L=11 PHI 14".into(),
            "FLOW".into(),
            "DIFF X8".into(),
        ],
    );
    save_png(&sheet, &out)?;
    println!("wrote {out} ({}x{})", sheet.width, sheet.height);
    Ok(())
}
