//! PNG figures with plotters' bitmap backend. Text uses DejaVu Sans Mono, embedded in the binary
//! (`font/`, Bitstream Vera licence), so no system font is needed.
use crate::eval::embed2d::{project, Projection};
use crate::eval::gradcam::Cam;
use crate::eval::metrics::Confusion;
use crate::train::progress::TrainLog;
use anyhow::{anyhow, bail, Context, Result};
use plotters::chart::SeriesLabelStyle;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("font/DejaVuSansMono.ttf");
static REGISTER: Once = Once::new();

fn fonts() {
    REGISTER.call_once(|| {
        for fam in ["sans-serif", "serif", "monospace"] {
            for st in [
                FontStyle::Normal,
                FontStyle::Bold,
                FontStyle::Italic,
                FontStyle::Oblique,
            ] {
                // the embedded font is valid; a failure would only leave text undrawn
                let _ = plotters::style::register_font(fam, st, FONT);
            }
        }
    });
}

fn err<E: std::fmt::Display>(what: &str, path: &Path) -> impl FnOnce(E) -> anyhow::Error {
    let (what, path) = (what.to_string(), path.display().to_string());
    move |e| anyhow!("{what} {path}: {e}")
}

pub const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Heat map of a confusion matrix, rows = true class, columns = predicted; each cell shows its
/// count and its share of the row.
pub fn confusion_png(c: &Confusion, names: &[String], title: &str, path: &Path) -> Result<()> {
    fonts();
    let n = c.n_classes;
    if names.len() != n {
        bail!("confusion_png: {} names for {n} classes", names.len());
    }
    let cell = 90i32;
    let (left, top) = (130i32, 60i32);
    let size = (
        (left + cell * n as i32 + 20) as u32,
        (top + cell * n as i32 + 60) as u32,
    );
    let root = canvas(path, size)?;
    let font = ("sans-serif", 15).into_font();
    root.draw(&Text::new(
        title.to_string(),
        (10, 10),
        ("sans-serif", 18).into_font(),
    ))
    .map_err(err("drawing", path))?;
    for (r, name) in names.iter().enumerate() {
        let row_total = c.support(r).max(1) as f64;
        for k in 0..n {
            let share = c.m[r][k] as f64 / row_total;
            let (x0, y0) = (left + k as i32 * cell, top + r as i32 * cell);
            let shade = (255.0 * (1.0 - 0.85 * share)) as u8;
            let fill = RGBColor(shade, shade, 255);
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + cell, y0 + cell)],
                fill.filled(),
            ))
            .map_err(err("drawing", path))?;
            root.draw(&Rectangle::new(
                [(x0, y0), (x0 + cell, y0 + cell)],
                BLACK.stroke_width(1),
            ))
            .map_err(err("drawing", path))?;
            let txt_col = if share > 0.55 { WHITE } else { BLACK };
            let label = format!("{}\n{:.0}%", c.m[r][k], 100.0 * share);
            for (i, line) in label.lines().enumerate() {
                let st = font.clone().color(&txt_col);
                root.draw(&Text::new(
                    line.to_string(),
                    (x0 + 12, y0 + 22 + 24 * i as i32),
                    st,
                ))
                .map_err(err("drawing", path))?;
            }
        }
        root.draw(&Text::new(
            short(name, 12),
            (8, top + r as i32 * cell + cell / 2 - 8),
            font.clone(),
        ))
        .map_err(err("drawing", path))?;
        root.draw(&Text::new(
            short(name, 9),
            (left + r as i32 * cell + 4, top + n as i32 * cell + 8),
            font.clone(),
        ))
        .map_err(err("drawing", path))?;
    }
    root.draw(&Text::new(
        "rows: true, columns: predicted".to_string(),
        (left, top + n as i32 * cell + 32),
        font,
    ))
    .map_err(err("drawing", path))?;
    root.present().map_err(err("writing", path))
}

/// A white bitmap of `size` pixels, written to `path` on `present`.
fn canvas(path: &Path, size: (u32, u32)) -> Result<DrawingArea<BitMapBackend<'_>, Shift>> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(err("drawing", path))?;
    Ok(root)
}

/// A chart on `area` with the figures' title style and margin.
fn titled<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut b = ChartBuilder::on(area);
    b.caption(title, ("sans-serif", 18)).margin(12);
    b
}

fn short(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// (epoch from 1, value) for each log entry that has the value `f` reads.
fn per_epoch(
    log: &TrainLog,
    f: impl Fn(&crate::train::progress::EpochLog) -> Option<f64>,
) -> Vec<(f64, f64)> {
    log.entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| f(e).map(|v| (i as f64 + 1.0, v)))
        .collect()
}

/// A legend mark: a short line in `colour`, 2 px wide.
fn legend_line(colour: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
}

/// The figures' legend: a mostly opaque white box with a black border.
fn legend_box<'a, 'b, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    ch: &'b mut ChartContext<'a, DB, CT>,
) -> SeriesLabelStyle<'a, 'b, DB, CT> {
    let mut style = ch.configure_series_labels();
    style.background_style(WHITE.mix(0.85)).border_style(BLACK);
    style
}

/// Loss (left axis) and accuracy (right axis, and validation accuracy where logged) per epoch.
pub fn curve_png(log: &TrainLog, title: &str, path: &Path) -> Result<()> {
    fonts();
    if log.entries.is_empty() {
        bail!("curve_png: empty log for {}", path.display());
    }
    let xs = log.entries.len() as f64;
    let lmax = log
        .entries
        .iter()
        .map(|e| e.loss)
        .fold(f64::MIN, f64::max)
        .max(1e-9)
        * 1.05;
    let root = canvas(path, (720, 420))?;
    let mut ch = titled(&root, title)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .right_y_label_area_size(56)
        .build_cartesian_2d(0f64..xs, 0f64..lmax)
        .map_err(err("drawing", path))?
        .set_secondary_coord(0f64..xs, 0f64..1.02);
    ch.configure_mesh()
        .x_desc("epoch / step")
        .y_desc("loss")
        .draw()
        .map_err(err("drawing", path))?;
    ch.configure_secondary_axes()
        .y_desc("accuracy")
        .draw()
        .map_err(err("drawing", path))?;
    let loss = per_epoch(log, |e| Some(e.loss));
    ch.draw_series(LineSeries::new(loss, PALETTE[3].stroke_width(2)))
        .map_err(err("drawing", path))?
        .label("loss")
        .legend(legend_line(PALETTE[3]));
    let acc = per_epoch(log, |e| e.acc);
    ch.draw_secondary_series(LineSeries::new(acc, PALETTE[0].stroke_width(2)))
        .map_err(err("drawing", path))?
        .label("train acc")
        .legend(legend_line(PALETTE[0]));
    let val = per_epoch(log, |e| e.val_acc);
    if !val.is_empty() {
        ch.draw_secondary_series(LineSeries::new(val, PALETTE[2].stroke_width(2)))
            .map_err(err("drawing", path))?
            .label("val acc")
            .legend(legend_line(PALETTE[2]));
    }
    legend_box(&mut ch).draw().map_err(err("drawing", path))?;
    root.present().map_err(err("writing", path))
}

/// Scatter of embeddings projected by PCA or t-SNE, coloured by class.
pub fn embedding_png(
    emb: &[Vec<f32>],
    proj: &Projection,
    labels: &[usize],
    names: &[String],
    title: &str,
    path: &Path,
) -> Result<()> {
    fonts();
    if emb.len() != labels.len() {
        bail!(
            "embedding_png: {} embeddings, {} labels",
            emb.len(),
            labels.len()
        );
    }
    let pts = project(emb, proj).context("embedding_png")?;
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in &pts {
        (x0, x1, y0, y1) = (x0.min(p[0]), x1.max(p[0]), y0.min(p[1]), y1.max(p[1]));
    }
    let pad = |a: f32, b: f32| ((b - a).abs() * 0.08).max(1e-3);
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let root = canvas(path, (560, 520))?;
    let mut ch = titled(&root, title)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d((x0 - px)..(x1 + px), (y0 - py)..(y1 + py))
        .map_err(err("drawing", path))?;
    let (xd, yd) = match proj {
        Projection::Pca => ("PC1", "PC2"),
        Projection::Tsne(_) => ("t-SNE 1", "t-SNE 2"),
    };
    ch.configure_mesh()
        .x_desc(xd)
        .y_desc(yd)
        .draw()
        .map_err(err("drawing", path))?;
    for (c, name) in names.iter().enumerate() {
        let col = PALETTE[c % PALETTE.len()];
        let series = pts
            .iter()
            .zip(labels)
            .filter(|(_, &l)| l == c)
            .map(|(p, _)| Circle::new((p[0], p[1]), 4, col.filled()));
        ch.draw_series(series)
            .map_err(err("drawing", path))?
            .label(name.as_str())
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, col.filled()));
    }
    legend_box(&mut ch).draw().map_err(err("drawing", path))?;
    root.present().map_err(err("writing", path))
}

/// Jet-like colour map for v in [0, 1].
pub fn jet(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0);
    let r = (1.5 - (4.0 * v - 3.0).abs()).clamp(0.0, 1.0);
    let g = (1.5 - (4.0 * v - 2.0).abs()).clamp(0.0, 1.0);
    let b = (1.5 - (4.0 * v - 1.0).abs()).clamp(0.0, 1.0);
    [r, g, b]
}

/// One input frame for a Grad-CAM figure: row-major `h` x `w` values, frame `index` of `frames`.
pub struct Frame<'a> {
    pub values: &'a [f32],
    pub h: usize,
    pub w: usize,
    pub index: usize,
    pub frames: usize,
}

/// The frame (grey, min-max scaled) beside the frame overlaid with the CAM (alpha 0.5), each pixel
/// drawn as a `zoom` x `zoom` block.
pub fn gradcam_png(fr: &Frame, cam: &Cam, title: &str, zoom: u32, path: &Path) -> Result<()> {
    fonts();
    let (frame, h, w) = (fr.values, fr.h, fr.w);
    if frame.len() != h * w {
        bail!(
            "gradcam_png: frame has {} values, expected {h}x{w}",
            frame.len()
        );
    }
    let heat = cam.frame(fr.index, fr.frames, h, w);
    let (lo, hi) = frame
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let span = (hi - lo).max(1e-12);
    let z = zoom.max(1) as i32;
    let (pw, ph) = (w as i32 * z, h as i32 * z);
    let root = canvas(path, ((2 * pw + 30) as u32, (ph + 40) as u32))?;
    root.draw(&Text::new(
        title.to_string(),
        (10, 8),
        ("sans-serif", 16).into_font(),
    ))
    .map_err(err("drawing", path))?;
    for y in 0..h {
        for x in 0..w {
            let g = (frame[y * w + x] - lo) / span;
            let j = jet(heat[y * w + x]);
            let over = [
                0.5 * g + 0.5 * j[0],
                0.5 * g + 0.5 * j[1],
                0.5 * g + 0.5 * j[2],
            ];
            let to = |c: f32| (c * 255.0).round() as u8;
            let (x0, y0) = (10 + x as i32 * z, 30 + y as i32 * z);
            let grey = RGBColor(to(g), to(g), to(g));
            let col = RGBColor(to(over[0]), to(over[1]), to(over[2]));
            root.draw(&Rectangle::new([(x0, y0), (x0 + z, y0 + z)], grey.filled()))
                .map_err(err("drawing", path))?;
            root.draw(&Rectangle::new(
                [(x0 + pw + 10, y0), (x0 + pw + 10 + z, y0 + z)],
                col.filled(),
            ))
            .map_err(err("drawing", path))?;
        }
    }
    root.present().map_err(err("writing", path))
}

/// One training stage's curves over folds: loss (top) and training accuracy (bottom) per epoch
/// or step, a line per fold (validation accuracy, where logged, as dots of the fold's colour).
pub fn fold_curves_png(curves: &[(String, TrainLog)], title: &str, path: &Path) -> Result<()> {
    fonts();
    let curves: Vec<&(String, TrainLog)> = curves
        .iter()
        .filter(|(_, l)| !l.entries.is_empty())
        .collect();
    if curves.is_empty() {
        bail!("fold_curves_png: no curve for {}", path.display());
    }
    let xs = curves
        .iter()
        .map(|(_, l)| l.entries.len())
        .max()
        .unwrap_or(1) as f64;
    let lmax = curves
        .iter()
        .flat_map(|(_, l)| l.entries.iter().map(|e| e.loss))
        .filter(|v| v.is_finite())
        .fold(1e-9, f64::max)
        * 1.05;
    let root = canvas(path, (820, 640))?;
    let root = root
        .titled(title, ("sans-serif", 18))
        .map_err(err("drawing", path))?;
    let (top, bottom) = root.split_vertically(300);
    let color = |k: usize| {
        let c = PALETTE[k % PALETTE.len()];
        // past 8 folds the palette repeats; a lighter shade tells the repeats apart
        if (k / PALETTE.len()) % 2 == 1 {
            RGBColor(
                ((c.0 as u16 + 255) / 2) as u8,
                ((c.1 as u16 + 255) / 2) as u8,
                ((c.2 as u16 + 255) / 2) as u8,
            )
        } else {
            c
        }
    };
    let mut ch = ChartBuilder::on(&top)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xs, 0f64..lmax)
        .map_err(err("drawing", path))?;
    ch.configure_mesh()
        .y_desc("loss")
        .draw()
        .map_err(err("drawing", path))?;
    for (k, (fold, log)) in curves.iter().enumerate() {
        let pts = log
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i as f64 + 1.0, e.loss));
        let c = color(k);
        ch.draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err("drawing", path))?
            .label(fold.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c.stroke_width(2)));
    }
    if curves.len() <= 16 {
        legend_box(&mut ch)
            .label_font(("sans-serif", 11))
            .draw()
            .map_err(err("drawing", path))?;
    }
    let mut ch = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..xs, 0f64..1.02)
        .map_err(err("drawing", path))?;
    ch.configure_mesh()
        .x_desc("epoch / step")
        .y_desc("train acc (dots: val acc)")
        .draw()
        .map_err(err("drawing", path))?;
    for (k, (_, log)) in curves.iter().enumerate() {
        let c = color(k);
        let acc: Vec<(f64, f64)> = log
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.acc.map(|a| (i as f64 + 1.0, a)))
            .collect();
        ch.draw_series(LineSeries::new(acc, c.stroke_width(1)))
            .map_err(err("drawing", path))?;
        let val = log
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.val_acc.map(|a| (i as f64 + 1.0, a)));
        ch.draw_series(val.map(|p| Circle::new(p, 3, c.filled())))
            .map_err(err("drawing", path))?;
    }
    root.present().map_err(err("writing", path))
}
