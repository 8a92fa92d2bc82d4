//! SMIC-HS: no sheet; `HS/s1/micro/negative/s1_ne_01/*.bmp`, labels from the folders, onset =
//! first frame, offset = last frame, apex chosen by an [`ApexRule`].

use crate::data::frames::{list_frames, sub_dirs};
use crate::data::index::{map_entries, Entry, Origin};
use crate::data::{ClassMap, DatasetIndex, DatasetKind, FaultPolicy, Task};
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const NAME: &str = "smic";

/// SMIC has no apex annotation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApexRule {
    /// The middle frame of the clip (reads nothing).
    #[default]
    Middle,
    /// The frame whose mean absolute grey difference from the onset, on a copy downsampled to
    /// about 64 px wide, is largest. A cheap proxy for "largest optical-flow magnitude from
    /// onset": it responds to the same motion but also to lighting changes and is not a flow
    /// estimate. Reads every frame of the clip.
    MaxMotion,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// The `HS` folder, or a folder containing it.
    pub root: PathBuf,
    pub apex: ApexRule,
    pub task: Task,
    pub class_map: Option<ClassMap>,
    pub policy: FaultPolicy,
}

impl Options {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            apex: ApexRule::Middle,
            task: Task::Sde,
            class_map: None,
            policy: FaultPolicy::Skip,
        }
    }
}

/// `s01`, `S1`, `1` -> `s1` (the folders' spelling).
pub fn normalise_subject(s: &str) -> Option<String> {
    crate::data::sheet::subject_number(s, "s", |n| format!("s{n}"))
}

/// Grey image downsampled by box averaging to about 64 px wide.
fn small_grey(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let img = image::open(path)
        .with_context(|| format!("reading frame {}", path.display()))?
        .into_luma8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    let f = (w / 64).max(1);
    let (sw, sh) = (w / f, h / f);
    let mut out = vec![0f32; sw * sh];
    let raw = img.as_raw();
    for y in 0..sh * f {
        for x in 0..sw * f {
            out[(y / f) * sw + x / f] += raw[y * w + x] as f32;
        }
    }
    let norm = 1.0 / (f * f) as f32;
    out.iter_mut().for_each(|v| *v *= norm);
    Ok((sw, sh, out))
}

/// Index (into `frames`) of the frame most different from the first one.
pub fn max_motion_apex(frames: &[PathBuf]) -> Result<usize> {
    let (w0, h0, first) = small_grey(&frames[0])?;
    let mut best = (0usize, -1f32);
    for (i, p) in frames.iter().enumerate().skip(1) {
        let (w, h, g) = small_grey(p)?;
        anyhow::ensure!(
            (w, h) == (w0, h0),
            "frame {} has another size than the onset",
            p.display()
        );
        let d = g
            .iter()
            .zip(&first)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / g.len() as f32;
        if d > best.1 {
            best = (i, d);
        }
    }
    Ok(best.0)
}

fn hs_root(root: &Path) -> Result<PathBuf> {
    if !root.is_dir() {
        bail!("SMIC root not found: {}", root.display());
    }
    let hs = root.join("HS");
    Ok(if hs.is_dir() { hs } else { root.to_path_buf() })
}

pub fn scan(opts: &Options) -> Result<Vec<Entry>> {
    let hs = hs_root(&opts.root)?;
    // (subject, emotion, sample name, folder)
    let mut found = Vec::new();
    for (subj_name, subj_dir) in
        sub_dirs(&hs).with_context(|| format!("listing {}", hs.display()))?
    {
        let Some(subject) = normalise_subject(&subj_name) else {
            continue;
        };
        let micro = subj_dir.join("micro");
        if !micro.is_dir() {
            continue;
        }
        for (emotion, emo_dir) in sub_dirs(&micro)? {
            for (sample, dir) in sub_dirs(&emo_dir)? {
                found.push((subject.clone(), emotion.clone(), sample, dir));
            }
        }
    }
    if found.is_empty() {
        bail!(
            "no SMIC samples under {} (expected s1/micro/<emotion>/<sample>/*.bmp)",
            hs.display()
        );
    }
    let rule = opts.apex;
    found
        .into_par_iter()
        .map(|(subject, emotion, filename, dir)| {
            let origin = Origin {
                file: dir.clone(),
                sheet: None,
                row: 0,
            };
            let mut faults = Vec::new();
            let frames = list_frames(&dir).with_context(|| format!("listing {}", dir.display()))?;
            let (mut onset, mut apex, mut offset) = (None, None, None);
            if frames.len() < 2 {
                faults.push(origin.fault(
                    "frames",
                    format!("{} numbered frame(s); need at least 2", frames.len()),
                ));
            } else {
                let paths: Vec<PathBuf> = frames.iter().map(|f| f.1.clone()).collect();
                let a = match rule {
                    ApexRule::Middle => frames.len() / 2,
                    ApexRule::MaxMotion => match max_motion_apex(&paths) {
                        Ok(a) => a,
                        Err(e) => {
                            faults.push(origin.fault("frames", format!("{e:#}")));
                            frames.len() / 2
                        }
                    },
                };
                onset = Some(frames[0].clone());
                apex = Some(frames[a].clone());
                offset = frames.last().map(|f| f.0);
            }
            Ok(Entry {
                dataset: NAME.to_string(),
                subject,
                filename,
                emotion,
                emotion_field: "folder".into(),
                onset_frame: onset.as_ref().map_or(0, |f| f.0),
                apex_frame: apex.as_ref().map_or(0, |f| f.0),
                offset_frame: offset,
                onset_path: onset.map(|f| f.1).unwrap_or_default(),
                apex_path: apex.map(|f| f.1).unwrap_or_default(),
                frame_dir: dir,
                origin,
                faults,
            })
        })
        .collect()
}

pub fn load(opts: &Options) -> Result<DatasetIndex> {
    let entries = scan(opts)?;
    let map = ClassMap::chosen_or_default(opts.class_map.as_ref(), DatasetKind::Smic, opts.task);
    map_entries(NAME, &entries, &map, opts.policy)
}
