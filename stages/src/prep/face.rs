//! Face crop (paper Sec. 3.2) with the SeetaFace frontal detector (`rustface`, BSD-2; the model ships
//! in `assets/`, see `assets/LICENSE-rustface`). The face is found on the onset frame only and
//! the same square box is cut from every frame of the sample, so the crop adds no motion.

use crate::prep::image::{crop_clamped, resize, to_gray, Frame};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

static MODEL_BYTES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/seeta_fd_frontal_v1.0.bin"
));

fn model() -> &'static rustface::Model {
    static MODEL: OnceLock<rustface::Model> = OnceLock::new();
    MODEL.get_or_init(|| rustface::read_model(MODEL_BYTES).expect("bundled SeetaFace model parses"))
}

/// A detected face in frame pixels.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaceBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
    pub score: f64,
}

/// A square crop region in frame pixels (may reach outside the frame; the border is repeated).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CropBox {
    pub x: isize,
    pub y: isize,
    pub side: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaceCropper {
    /// Added on each side, as a fraction of the detected box's side.
    pub margin: f32,
    /// Output side in pixels.
    pub size: usize,
    /// Smallest face side to look for, in pixels of the original frame (>= 20).
    pub min_face: u32,
    /// Detection runs on a copy shrunk so its longer side is at most this (speed on SAMM's
    /// 2040x1088 frames); boxes are mapped back to full resolution.
    pub detect_max_side: usize,
    /// SeetaFace score threshold (its README suggests 2.0).
    pub score_thresh: f64,
}

impl Default for FaceCropper {
    fn default() -> Self {
        Self {
            margin: 0.1,
            size: 128,
            min_face: 40,
            detect_max_side: 640,
            score_thresh: 2.0,
        }
    }
}

impl FaceCropper {
    /// All faces in `frame`, largest first.
    pub fn detect(&self, frame: &Frame) -> Vec<FaceBox> {
        let long = frame.width.max(frame.height);
        let s = if long > self.detect_max_side && self.detect_max_side > 0 {
            self.detect_max_side as f32 / long as f32
        } else {
            1.0
        };
        let g = to_gray(frame);
        let g = if s < 1.0 {
            resize(
                &g,
                ((frame.width as f32 * s).round() as usize).max(1),
                ((frame.height as f32 * s).round() as usize).max(1),
            )
        } else {
            g
        };
        let bytes: Vec<u8> = g
            .data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
            .collect();
        let mut det = rustface::create_detector_with_model(model().clone());
        det.set_min_face_size(((self.min_face as f32 * s).round() as u32).max(20));
        det.set_score_thresh(self.score_thresh);
        det.set_pyramid_scale_factor(0.8);
        det.set_slide_window_step(4, 4);
        let img = rustface::ImageData::new(&bytes, g.width as u32, g.height as u32);
        let mut faces: Vec<FaceBox> = det
            .detect(&img)
            .into_iter()
            .map(|f| {
                let b = f.bbox();
                FaceBox {
                    x: b.x() as f32 / s,
                    y: b.y() as f32 / s,
                    width: b.width() as f32 / s,
                    height: b.height() as f32 / s,
                    score: f.score(),
                }
            })
            .collect();
        faces.sort_by(|a, b| (b.width * b.height).total_cmp(&(a.width * a.height)));
        faces
    }

    /// The square box (largest face plus margin) for a sample, from its onset frame; `name`
    /// identifies the frame in the error.
    pub fn face_box(&self, onset: &Frame, name: &str) -> Result<CropBox> {
        let faces = self.detect(onset);
        let Some(f) = faces.first() else {
            bail!(
                "no face found in frame {name} ({}x{})",
                onset.width,
                onset.height
            );
        };
        let side = f.width.max(f.height) * (1.0 + 2.0 * self.margin);
        let (cx, cy) = (f.x + f.width / 2.0, f.y + f.height / 2.0);
        Ok(CropBox {
            x: (cx - side / 2.0).round() as isize,
            y: (cy - side / 2.0).round() as isize,
            side: side.round().max(1.0) as usize,
        })
    }

    /// Cuts `b` from `frame` and resizes it to `size` x `size`.
    pub fn crop(&self, frame: &Frame, b: &CropBox) -> Frame {
        resize(
            &crop_clamped(frame, b.x, b.y, b.side, b.side),
            self.size,
            self.size,
        )
    }

    /// Crops every frame of a sample with the box found on `frames[0]` (the onset).
    /// `names[k]` names frame k in errors (e.g. its file path).
    pub fn crop_sample(&self, frames: &[Frame], names: &[String]) -> Result<Vec<Frame>> {
        let Some(onset) = frames.first() else {
            bail!("crop_sample: no frames");
        };
        let name = |k: usize| names.get(k).cloned().unwrap_or_else(|| format!("#{k}"));
        let b = self.face_box(onset, &name(0))?;
        frames
            .iter()
            .enumerate()
            .map(|(k, f)| {
                if f.width != onset.width || f.height != onset.height {
                    bail!(
                        "frame {} is {}x{}, the onset is {}x{}",
                        name(k),
                        f.width,
                        f.height,
                        onset.width,
                        onset.height
                    );
                }
                Ok(self.crop(f, &b))
            })
            .collect::<Result<Vec<_>>>()
            .context("face crop")
    }
}
