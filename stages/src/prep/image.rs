//! Float frames (HWC interleaved, values in [0, 1]) and the basic image operations the
//! pre-processing needs: load/save, grey conversion, resizing and cropping.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// An image as `f32` samples in [0, 1], rows top to bottom, channels interleaved (HWC).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub data: Vec<f32>,
}

impl Frame {
    /// A black frame.
    pub fn new(width: usize, height: usize, channels: usize) -> Self {
        Self {
            width,
            height,
            channels,
            data: vec![0.0; width * height * channels],
        }
    }

    /// Wraps `data`, checking its length against the shape.
    pub fn from_vec(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Result<Self> {
        if channels != 1 && channels != 3 {
            bail!("frame must have 1 or 3 channels, got {channels}");
        }
        if data.len() != width * height * channels {
            bail!(
                "frame data has {} samples, expected {width}x{height}x{channels}",
                data.len()
            );
        }
        Ok(Self {
            width,
            height,
            channels,
            data,
        })
    }

    #[inline]
    pub fn get(&self, x: usize, y: usize, c: usize) -> f32 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    #[inline]
    pub fn set(&mut self, x: usize, y: usize, c: usize, v: f32) {
        self.data[(y * self.width + x) * self.channels + c] = v;
    }

    /// Sample with clamp-to-edge borders (integer coordinates may lie outside).
    #[inline]
    pub fn get_clamped(&self, x: isize, y: isize, c: usize) -> f32 {
        let x = x.clamp(0, self.width as isize - 1) as usize;
        let y = y.clamp(0, self.height as isize - 1) as usize;
        self.get(x, y, c)
    }

    /// Grey frames become three identical channels; RGB frames are cloned.
    pub fn to_rgb(&self) -> Frame {
        if self.channels == 3 {
            return self.clone();
        }
        let data = self.data.iter().flat_map(|&v| [v, v, v]).collect();
        Frame {
            width: self.width,
            height: self.height,
            channels: 3,
            data,
        }
    }

    /// One channel as a grey frame.
    pub fn channel(&self, c: usize) -> Frame {
        let data = self
            .data
            .chunks_exact(self.channels)
            .map(|p| p[c])
            .collect();
        Frame {
            width: self.width,
            height: self.height,
            channels: 1,
            data,
        }
    }

    pub fn same_shape(&self, other: &Frame) -> bool {
        self.width == other.width && self.height == other.height && self.channels == other.channels
    }
}

/// Loads a jpg/png/bmp file as an RGB frame (grey files are converted to 3 channels).
pub fn load_frame(path: impl AsRef<Path>) -> Result<Frame> {
    let path = path.as_ref();
    let img = image::open(path)
        .with_context(|| format!("cannot read image {}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let data = img
        .into_raw()
        .into_iter()
        .map(|v| v as f32 / 255.0)
        .collect();
    Frame::from_vec(w as usize, h as usize, 3, data)
        .with_context(|| format!("image {}", path.display()))
}

/// Quantises a frame to 8 bits (values clipped to [0, 1]).
pub fn to_u8(frame: &Frame) -> Vec<u8> {
    frame
        .data
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect()
}

/// Saves a grey or RGB frame as an 8-bit PNG.
pub fn save_png(frame: &Frame, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let color = match frame.channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        c => bail!("cannot save a {c}-channel frame to {}", path.display()),
    };
    image::save_buffer_with_format(
        path,
        &to_u8(frame),
        frame.width as u32,
        frame.height as u32,
        color,
        image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot write PNG {}", path.display()))
}

/// Luma (ITU-R BT.601 weights, as OpenCV's `cvtColor(RGB2GRAY)`); grey frames are cloned.
pub fn to_gray(frame: &Frame) -> Frame {
    if frame.channels == 1 {
        return frame.clone();
    }
    let data = frame
        .data
        .chunks_exact(3)
        .map(|p| 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2])
        .collect();
    Frame {
        width: frame.width,
        height: frame.height,
        channels: 1,
        data,
    }
}

/// Per output sample along one axis: the source indices and weights that make it.
/// Enlarging: bilinear with pixel centres aligned (as OpenCV `INTER_LINEAR`).
/// Shrinking: area averaging over the output pixel's footprint (as `INTER_AREA`), which
/// avoids the aliasing plain bilinear sampling gives when the scale drops below 1.
fn axis_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|i| {
            if scale <= 1.0 {
                let s = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(src - 1);
                let i1 = (i0 + 1).min(src - 1);
                let f = (s - i0 as f64) as f32;
                if i1 == i0 || f == 0.0 {
                    vec![(i0, 1.0)]
                } else {
                    vec![(i0, 1.0 - f), (i1, f)]
                }
            } else {
                let a = i as f64 * scale;
                let b = ((i + 1) as f64 * scale).min(src as f64);
                let mut w = Vec::new();
                let mut k = a.floor() as usize;
                while (k as f64) < b && k < src {
                    let lo = a.max(k as f64);
                    let hi = b.min(k as f64 + 1.0);
                    if hi > lo {
                        w.push((k, ((hi - lo) / (b - a)) as f32));
                    }
                    k += 1;
                }
                w
            }
        })
        .collect()
}

/// Resizes to `width` x `height`: bilinear when enlarging, area averaging when shrinking
/// (per axis, separable).
pub fn resize(frame: &Frame, width: usize, height: usize) -> Frame {
    assert!(width > 0 && height > 0, "resize to an empty frame");
    if frame.width == width && frame.height == height {
        return frame.clone();
    }
    let c = frame.channels;
    let wx = axis_weights(frame.width, width);
    let wy = axis_weights(frame.height, height);
    // Horizontal pass: frame.height rows x width.
    let mut tmp = vec![0.0f32; frame.height * width * c];
    for y in 0..frame.height {
        let src = &frame.data[y * frame.width * c..(y + 1) * frame.width * c];
        let dst = &mut tmp[y * width * c..(y + 1) * width * c];
        for (x, ws) in wx.iter().enumerate() {
            for ch in 0..c {
                dst[x * c + ch] = ws.iter().map(|&(k, w)| w * src[k * c + ch]).sum();
            }
        }
    }
    let mut out = Frame::new(width, height, c);
    let row = width * c;
    for (y, ws) in wy.iter().enumerate() {
        let dst = &mut out.data[y * row..(y + 1) * row];
        for &(k, w) in ws {
            let src = &tmp[k * row..(k + 1) * row];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += w * s;
            }
        }
    }
    out
}

/// Crops the rectangle at (`x`, `y`) of size `width` x `height`; it must lie inside the frame.
pub fn crop(frame: &Frame, x: usize, y: usize, width: usize, height: usize) -> Result<Frame> {
    if x + width > frame.width || y + height > frame.height || width == 0 || height == 0 {
        bail!(
            "crop {width}x{height} at ({x}, {y}) does not fit in a {}x{} frame",
            frame.width,
            frame.height
        );
    }
    Ok(crop_clamped(frame, x as isize, y as isize, width, height))
}

/// Crops a rectangle that may reach outside the frame; outside pixels repeat the border.
pub fn crop_clamped(frame: &Frame, x: isize, y: isize, width: usize, height: usize) -> Frame {
    let c = frame.channels;
    let mut out = Frame::new(width, height, c);
    for j in 0..height {
        for i in 0..width {
            for ch in 0..c {
                out.data[(j * width + i) * c + ch] =
                    frame.get_clamped(x + i as isize, y + j as isize, ch);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize) -> Frame {
        let mut f = Frame::new(w, h, 1);
        for y in 0..h {
            for x in 0..w {
                f.set(x, y, 0, (x + 2 * y) as f32 / (w + 2 * h) as f32);
            }
        }
        f
    }

    #[test]
    fn resize_halving_is_2x2_average() {
        let f = ramp(8, 6);
        let r = resize(&f, 4, 3);
        for y in 0..3 {
            for x in 0..4 {
                let avg = (f.get(2 * x, 2 * y, 0)
                    + f.get(2 * x + 1, 2 * y, 0)
                    + f.get(2 * x, 2 * y + 1, 0)
                    + f.get(2 * x + 1, 2 * y + 1, 0))
                    / 4.0;
                assert!((r.get(x, y, 0) - avg).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn resize_enlarging_keeps_linear_ramp_linear() {
        let f = ramp(8, 8);
        let r = resize(&f, 16, 16);
        // Interior samples of a linear ramp stay exactly on the ramp (pixel-centre aligned).
        let s = 1.0 / 24.0;
        for y in 2..14 {
            for x in 2..14 {
                let sx = (x as f32 + 0.5) / 2.0 - 0.5;
                let sy = (y as f32 + 0.5) / 2.0 - 0.5;
                assert!((r.get(x, y, 0) - (sx + 2.0 * sy) * s).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn png_round_trip_and_grey_to_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.png");
        let f = ramp(5, 4);
        save_png(&f, &p).unwrap();
        let back = load_frame(&p).unwrap();
        assert_eq!((back.width, back.height, back.channels), (5, 4, 3));
        for y in 0..4 {
            for x in 0..5 {
                for c in 0..3 {
                    assert!((back.get(x, y, c) - f.get(x, y, 0)).abs() <= 0.5 / 255.0 + 1e-6);
                }
            }
        }
        let err = load_frame(dir.path().join("missing.png")).unwrap_err();
        assert!(format!("{err:#}").contains("missing.png"));
    }

    #[test]
    fn crop_checks_bounds() {
        let f = ramp(6, 6);
        let c = crop(&f, 1, 2, 3, 2).unwrap();
        assert_eq!(c.get(0, 0, 0), f.get(1, 2, 0));
        assert_eq!(c.get(2, 1, 0), f.get(3, 3, 0));
        assert!(crop(&f, 4, 0, 3, 2).is_err());
        let cc = crop_clamped(&f, -2, -1, 3, 3);
        assert_eq!(cc.get(0, 0, 0), f.get(0, 0, 0));
    }
}
