//! Pictures for reports and debugging: flow in the Middlebury colour coding (Baker et al. 2011),
//! frame differences as a heat map, and labelled contact sheets (built-in 3x5 pixel font).

use crate::prep::flow::FlowField;
use crate::prep::image::{resize, Frame};

/// The Middlebury colour wheel: 55 hues (red, yellow, green, cyan, blue, magenta segments of
/// 15, 6, 4, 11, 13, 6 steps), RGB in [0, 1].
fn colour_wheel() -> Vec<[f32; 3]> {
    let (ry, yg, gc, cb, bm, mr) = (15, 6, 4, 11, 13, 6);
    let mut w = Vec::with_capacity(55);
    let f = |i: usize, n: usize| i as f32 / n as f32;
    for i in 0..ry {
        w.push([1.0, f(i, ry), 0.0]);
    }
    for i in 0..yg {
        w.push([1.0 - f(i, yg), 1.0, 0.0]);
    }
    for i in 0..gc {
        w.push([0.0, 1.0, f(i, gc)]);
    }
    for i in 0..cb {
        w.push([0.0, 1.0 - f(i, cb), 1.0]);
    }
    for i in 0..bm {
        w.push([f(i, bm), 0.0, 1.0]);
    }
    for i in 0..mr {
        w.push([1.0, 0.0, 1.0 - f(i, mr)]);
    }
    w
}

/// Flow as colour: hue is the direction, saturation the length relative to `max_mag`
/// (default: the field's largest vector); longer vectors are darkened. Zero flow is white.
pub fn flow_to_rgb(flow: &FlowField, max_mag: Option<f32>) -> Frame {
    let wheel = colour_wheel();
    let n = wheel.len();
    let maxm = max_mag.unwrap_or_else(|| flow.max_magnitude()).max(1e-6);
    let mut out = Frame::new(flow.width, flow.height, 3);
    for i in 0..flow.u.len() {
        let (u, v) = (flow.u[i], flow.v[i]);
        let rad = u.hypot(v) / maxm;
        let a = (-v).atan2(-u) / std::f32::consts::PI;
        let fk = (a + 1.0) / 2.0 * (n - 1) as f32;
        let k0 = (fk.floor() as usize).min(n - 1);
        let k1 = (k0 + 1) % n;
        let f = fk - k0 as f32;
        for (c, o) in out.data[i * 3..i * 3 + 3].iter_mut().enumerate() {
            let col = (1.0 - f) * wheel[k0][c] + f * wheel[k1][c];
            *o = if rad <= 1.0 {
                1.0 - rad * (1.0 - col)
            } else {
                col * 0.75
            };
        }
    }
    out
}

/// Absolute difference (mean over channels, times `gain`) as a black-red-yellow-white heat map.
pub fn diff_to_rgb(diff: &Frame, gain: f32) -> Frame {
    let mut out = Frame::new(diff.width, diff.height, 3);
    for (i, px) in diff.data.chunks_exact(diff.channels).enumerate() {
        let m = (px.iter().map(|v| v.abs()).sum::<f32>() / diff.channels as f32 * gain)
            .clamp(0.0, 1.0)
            * 3.0;
        out.data[i * 3] = m.min(1.0);
        out.data[i * 3 + 1] = (m - 1.0).clamp(0.0, 1.0);
        out.data[i * 3 + 2] = (m - 2.0).clamp(0.0, 1.0);
    }
    out
}

/// One glyph of the 3x5 font: five rows, bit 2 is the left column.
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        ' ' => [0, 0, 0, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '=' => [0, 7, 0, 7, 0],
        ':' => [0, 2, 0, 2, 0],
        '_' => [0, 0, 0, 0, 7],
        '/' => [1, 1, 2, 4, 4],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        _ => [7, 1, 2, 0, 2],
    }
}

/// Pixel scale of the label font (3x5 glyphs drawn as 6x10).
const FONT_SCALE: usize = 2;
const GLYPH_W: usize = 4 * FONT_SCALE;
const GLYPH_H: usize = 6 * FONT_SCALE;

/// Draws `text` in white with its top-left corner at (x, y); characters outside are clipped.
pub fn draw_text(f: &mut Frame, x: usize, y: usize, text: &str, colour: [f32; 3]) {
    for (k, ch) in text.chars().enumerate() {
        let g = glyph(ch);
        for (r, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) == 0 {
                    continue;
                }
                for dy in 0..FONT_SCALE {
                    for dx in 0..FONT_SCALE {
                        let px = x + k * GLYPH_W + col * FONT_SCALE + dx;
                        let py = y + r * FONT_SCALE + dy;
                        if px < f.width && py < f.height {
                            for (c, &v) in colour.iter().enumerate().take(f.channels) {
                                f.set(px, py, c, v);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A grid of frames (one `Vec` per row), each cell resized to the largest frame's size and
/// converted to RGB, with `labels[r]` written left of row r (missing labels: none) and a
/// 2-pixel dark grey gutter.
pub fn contact_sheet(rows: &[Vec<Frame>], labels: &[String]) -> Frame {
    const PAD: usize = 2;
    let cw = rows.iter().flatten().map(|f| f.width).max().unwrap_or(1);
    let ch = rows.iter().flatten().map(|f| f.height).max().unwrap_or(1);
    let ncols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let label_w = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .map_or(0, |n| n * GLYPH_W + 2 * PAD);
    let width = label_w + ncols * (cw + PAD) + PAD;
    let height = rows.len() * (ch + PAD) + PAD;
    let mut out = Frame::new(width.max(1), height.max(1), 3);
    out.data.iter_mut().for_each(|v| *v = 0.15);
    for (r, row) in rows.iter().enumerate() {
        let y0 = PAD + r * (ch + PAD);
        if let Some(l) = labels.get(r) {
            let ty = y0 + ch.saturating_sub(GLYPH_H) / 2;
            draw_text(&mut out, PAD, ty, l, [1.0, 1.0, 1.0]);
        }
        for (c, f) in row.iter().enumerate() {
            let cell = resize(&f.to_rgb(), cw, ch);
            let x0 = label_w + PAD + c * (cw + PAD);
            for y in 0..ch {
                let src = &cell.data[y * cw * 3..(y + 1) * cw * 3];
                let d0 = ((y0 + y) * width + x0) * 3;
                out.data[d0..d0 + cw * 3].copy_from_slice(src);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_colours_follow_middlebury() {
        let mut f = FlowField::zeros(4, 1);
        f.u = vec![1.0, -1.0, 0.0, 0.0];
        f.v = vec![0.0, 0.0, 1.0, 0.0];
        let c = flow_to_rgb(&f, Some(1.0));
        let px = |i: usize| [c.data[i * 3], c.data[i * 3 + 1], c.data[i * 3 + 2]];
        // +x is red, -x is cyan-ish, +y (down) is green-ish-yellow, zero is white.
        assert_eq!(px(0), [1.0, 0.0, 0.0]);
        let left = px(1);
        assert!(left[0] < 0.2 && left[1] > 0.7 && left[2] > 0.7, "{left:?}");
        let down = px(2);
        assert!(down[1] > 0.7 && down[2] < 0.2, "{down:?}");
        assert_eq!(px(3), [1.0, 1.0, 1.0]);
    }

    #[test]
    fn contact_sheet_places_cells_and_labels() {
        let mut a = Frame::new(8, 6, 3);
        a.data.iter_mut().for_each(|v| *v = 1.0);
        let b = Frame::new(8, 6, 1);
        let s = contact_sheet(&[vec![a.clone(), b], vec![a]], &["AB".to_string()]);
        let label_w = 2 * GLYPH_W + 4;
        assert_eq!(s.width, label_w + 2 * (8 + 2) + 2);
        assert_eq!(s.height, 2 * (6 + 2) + 2);
        // First cell is white, second black.
        assert_eq!(s.get(label_w + 2, 2, 0), 1.0);
        assert_eq!(s.get(label_w + 2 + 10, 2, 0), 0.0);
        // Some label pixel is white.
        let lit = (0..label_w).any(|x| (0..8).any(|y| s.get(x, y, 0) == 1.0));
        assert!(lit);
    }
}
