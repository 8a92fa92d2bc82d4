//! Domain commands of the CLI: `mpfnet synth`.

use anyhow::Result;

use crate::data::{casme2, synth, Task};
use crate::kinds::dataset::SynthParams;

#[derive(clap::Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output folder (CASME II layout: Cropped/subNN/EPxx/reg_imgN.jpg + coding sheet)
    #[arg(long)]
    pub out: std::path::PathBuf,
    #[arg(long, default_value_t = SynthParams::default().subjects)]
    pub subjects: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long, default_value_t = SynthParams::default().samples_min)]
    pub samples_min: usize,
    #[arg(long, default_value_t = SynthParams::default().samples_max)]
    pub samples_max: usize,
    /// Frame side in pixels
    #[arg(long, default_value_t = SynthParams::default().size)]
    pub size: u32,
    /// Also report a simple LOSO baseline (nearest class mean of a coarse motion descriptor)
    #[arg(long)]
    pub baseline: bool,
}

pub fn synth(a: &SynthArgs) -> Result<()> {
    let p = SynthParams {
        subjects: a.subjects,
        seed: a.seed,
        samples_min: a.samples_min,
        samples_max: a.samples_max,
        size: a.size,
    };
    crate::kinds::dataset::ensure_synth(&a.out, &p)?;
    for task in [Task::Sde, Task::Cde] {
        let mut o = casme2::Options::new(&a.out, casme2::Layout::Cropped);
        o.task = task;
        let index = casme2::load(&o)?;
        let counts: Vec<String> = index
            .classes
            .iter()
            .zip(index.class_counts())
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!(
            "{:?}: {} samples, {} subjects: {}",
            task,
            index.samples.len(),
            index.subjects().len(),
            counts.join(", ")
        );
        if a.baseline {
            let r = synth::baseline::baseline_report(&index)?;
            println!(
                "  baseline (nearest class mean of an 8x8 onset-apex difference, LOSO): accuracy {:.3}, UAR {:.3}, majority class {:.3}",
                r.accuracy, r.uar, r.majority
            );
        }
    }
    println!("written to {}", a.out.display());
    Ok(())
}

/// `mpfnet predict`: classify new clips with a model bundle.
#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    /// A model bundle (`model.safetensors`, written by a pipeline's `bundle` stage)
    pub bundle: std::path::PathBuf,
    /// Clips: a folder of frames (onset = first, apex = middle, unless --onset/--apex say
    /// otherwise), or ONSET,APEX: two image paths separated by a comma
    #[arg(required = true)]
    pub clips: Vec<String>,
    /// Onset frame of folder clips: 0-based position in natural file-name order
    #[arg(long)]
    pub onset: Option<usize>,
    /// Apex frame of folder clips: 0-based position in natural file-name order
    #[arg(long)]
    pub apex: Option<usize>,
    /// Detect and crop the face first (rustface), for clips that are not registered face crops
    #[arg(long)]
    pub detect_face: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Write each clip's Grad-CAM heat map and middle optical flow as PNGs into this folder
    #[arg(long)]
    pub explain: Option<std::path::PathBuf>,
    /// Refuse the bundle unless it was made with this pipeline's `features` parameters
    #[arg(long)]
    pub pipeline: Option<std::path::PathBuf>,
    /// cpu or cuda:N
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// One clip's onset and apex image paths.
#[derive(Clone, Debug, PartialEq)]
pub struct Clip {
    pub name: String,
    pub onset: std::path::PathBuf,
    pub apex: std::path::PathBuf,
}

const IMAGE_EXT: &[&str] = &["png", "jpg", "jpeg", "bmp", "tif", "tiff"];

/// A clip argument: `DIR` (frames in natural order; onset/apex positions default to first and
/// middle) or `ONSET,APEX`.
pub fn resolve_clip(arg: &str, onset: Option<usize>, apex: Option<usize>) -> Result<Clip> {
    use mpfnet_api::BadInputExt;
    resolve_clip_inner(arg, onset, apex).bad_input()
}

fn resolve_clip_inner(arg: &str, onset: Option<usize>, apex: Option<usize>) -> Result<Clip> {
    use anyhow::{bail, Context};
    let p = std::path::Path::new(arg);
    if p.is_dir() {
        let mut frames: Vec<std::path::PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("clip {arg}: listing frames"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXT.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        frames.sort_by(|a, b| {
            crate::data::folds::natural_cmp(&a.display().to_string(), &b.display().to_string())
        });
        if frames.len() < 2 {
            bail!(
                "clip {arg}: a folder clip needs at least 2 frames ({IMAGE_EXT:?}), found {}",
                frames.len()
            );
        }
        let (o, a) = (onset.unwrap_or(0), apex.unwrap_or(frames.len() / 2));
        for (what, i) in [("--onset", o), ("--apex", a)] {
            if i >= frames.len() {
                bail!("clip {arg}: {what} {i} is past its {} frames", frames.len());
            }
        }
        if o == a {
            bail!("clip {arg}: onset and apex are the same frame ({o})");
        }
        return Ok(Clip {
            name: arg.to_string(),
            onset: frames[o].clone(),
            apex: frames[a].clone(),
        });
    }
    match arg.split_once(',') {
        Some((o, a)) => {
            for f in [o, a] {
                if !std::path::Path::new(f).is_file() {
                    bail!("clip {arg}: no image file {f}");
                }
            }
            Ok(Clip {
                name: arg.to_string(),
                onset: o.into(),
                apex: a.into(),
            })
        }
        None => bail!("clip {arg}: not a folder of frames, nor ONSET,APEX image paths"),
    }
}

/// One clip's class probabilities (bundle class order).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClipPrediction {
    pub clip: String,
    pub onset: String,
    pub apex: String,
    pub predicted: String,
    pub probs: Vec<f32>,
}

/// Prepares each clip exactly as the bundle's training data were and classifies it; with
/// `explain`, writes `<k>_gradcam.png` and `<k>_flow.png` per clip there. Stops at the first
/// clip that fails (see [`ClipClassifier::each`] for one result per clip).
pub fn predict_clips(
    pred: &crate::bundle::Predictor,
    clips: &[Clip],
    detect_face: bool,
    explain: Option<&std::path::Path>,
) -> Result<Vec<ClipPrediction>> {
    ClipClassifier::new(pred, detect_face, explain)
        .each(clips)
        .into_iter()
        .collect()
}

/// A bundle's model with the pre-processing its training data had (see [`predict_clips`]).
pub struct ClipClassifier<'a> {
    pred: &'a crate::bundle::Predictor,
    prep: crate::kinds::features::FeatureParams,
    explain: Option<&'a std::path::Path>,
}

impl<'a> ClipClassifier<'a> {
    pub fn new(
        pred: &'a crate::bundle::Predictor,
        detect_face: bool,
        explain: Option<&'a std::path::Path>,
    ) -> Self {
        let mut prep = pred.meta.preprocess.clone();
        prep.detect_face |= detect_face;
        ClipClassifier {
            pred,
            prep,
            explain,
        }
    }

    /// One result per clip: a bad clip (unreadable frame, no face found) is reported and the
    /// others still run.
    pub fn each(&self, clips: &[Clip]) -> Vec<Result<ClipPrediction>> {
        clips
            .iter()
            .enumerate()
            .map(|(k, c)| self.one(k, c))
            .collect()
    }

    fn one(&self, k: usize, c: &Clip) -> Result<ClipPrediction> {
        use anyhow::Context;
        use mpfnet_api::BadInputExt;
        let (pred, prep) = (self.pred, &self.prep);
        let ctx = || format!("clip {}", c.name);
        // what is wrong with the clip itself is the user's input; the rest is a failure of ours
        let onset = crate::prep::image::load_frame(&c.onset)
            .bad_input()
            .with_context(ctx)?;
        let apex = crate::prep::image::load_frame(&c.apex)
            .bad_input()
            .with_context(ctx)?;
        let names = [c.onset.display().to_string(), c.apex.display().to_string()];
        let (onset, apex) = prep
            .crop_pair(onset, apex, &names)
            .bad_input()
            .with_context(ctx)?;
        let p = prep.prepare(onset, apex, 0).with_context(ctx)?;
        let input = pred.input(&p.x, &p.shape).with_context(ctx)?;
        let probs = pred.classify(&input).with_context(ctx)?;
        let best = crate::train::meta::proto::argmax(&probs);
        if let Some(dir) = self.explain {
            std::fs::create_dir_all(dir).with_context(|| {
                format!("--explain {}: cannot create the folder", dir.display())
            })?;
            let cam = pred.grad_cam(&input, best).with_context(ctx)?;
            let title = format!("Grad-CAM {} -> {}", c.name, pred.meta.classes[best]);
            crate::eval::gradcam::overlay_png(
                &p.shape,
                &p.x,
                &cam,
                &title,
                &dir.join(format!("{k:03}_gradcam.png")),
            )?;
            let (t, h, w) = (p.shape[1], p.shape[2], p.shape[3]);
            let plane =
                |ch: usize| p.x[(ch * t + t / 2) * h * w..(ch * t + t / 2 + 1) * h * w].to_vec();
            let flow = crate::prep::flow::FlowField {
                width: w,
                height: h,
                u: plane(0),
                v: plane(1),
            };
            std::fs::write(
                dir.join(format!("{k:03}_flow.png")),
                crate::kinds::features::png(&crate::prep::viz::flow_to_rgb(&flow, None))?,
            )?;
        }
        Ok(ClipPrediction {
            clip: c.name.clone(),
            onset: c.onset.display().to_string(),
            apex: c.apex.display().to_string(),
            predicted: pred.meta.classes[best].clone(),
            probs,
        })
    }
}

/// `mpfnet predict`; `expect` = the `features` parameters of `--pipeline`, resolved by the CLI.
pub fn predict(a: &PredictArgs, expect: Option<&serde_json::Value>) -> Result<()> {
    use mpfnet_api::BadInputExt;
    crate::check_device(&a.device).bad_input()?;
    if let Some(d) = a.explain.as_deref().filter(|d| d.exists() && !d.is_dir()) {
        return Err(anyhow::anyhow!(
            "--explain {}: exists and is not a folder",
            d.display()
        ))
        .bad_input();
    }
    let t0 = std::time::Instant::now();
    let bundle = crate::bundle::Bundle::read(&a.bundle).bad_input()?;
    if let Some(e) = expect {
        bundle.check_preprocess(e).bad_input()?;
    }
    bundle.check_flow_estimator().bad_input()?;
    let dev = crate::kinds::train::device(&a.device)?;
    let pred = crate::bundle::Predictor::new(&bundle, &dev)
        .map_err(|e| e.context(format!("{}: unusable model bundle", a.bundle.display())))
        .bad_input()?;
    // every clip is tried: the bad ones are listed at the end, the good ones still printed
    let mut failed: Vec<anyhow::Error> = Vec::new();
    let mut clips = Vec::new();
    for c in &a.clips {
        match resolve_clip(c, a.onset, a.apex) {
            Ok(c) => clips.push(c),
            Err(e) => failed.push(e),
        }
    }
    let loaded = t0.elapsed().as_secs_f64();
    let t1 = std::time::Instant::now();
    let mut res = Vec::new();
    for r in ClipClassifier::new(&pred, a.detect_face, a.explain.as_deref()).each(&clips) {
        match r {
            Ok(p) => res.push(p),
            Err(e) => failed.push(e),
        }
    }
    let secs = t1.elapsed().as_secs_f64();
    let classes = &pred.meta.classes;
    if a.json {
        let rows: Vec<serde_json::Value> = res
            .iter()
            .map(|r| {
                let probs: serde_json::Map<String, serde_json::Value> = classes
                    .iter()
                    .zip(&r.probs)
                    .map(|(c, p)| (c.clone(), serde_json::json!(p)))
                    .collect();
                serde_json::json!({ "clip": r.clip, "onset": r.onset, "apex": r.apex, "predicted": r.predicted, "probs": probs })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let w = res.iter().map(|r| r.clip.len()).max().unwrap_or(4).max(4);
        let cw = classes.iter().map(|c| c.len()).max().unwrap_or(5).max(6);
        let head: String = classes.iter().map(|c| format!("  {c:>cw$}")).collect();
        println!("{:<w$}  {:<cw$}{head}", "clip", "predicted");
        for r in &res {
            let ps: String = r.probs.iter().map(|p| format!("  {p:>cw$.3}")).collect();
            println!("{:<w$}  {:<cw$}{ps}", r.clip, r.predicted);
        }
    }
    eprintln!(
        "{} ({}, {} classes): {} clip(s) in {secs:.2} s ({:.1} clips/s, pre-processing included; bundle loaded in {loaded:.2} s)",
        a.bundle.display(),
        pred.meta.label,
        classes.len(),
        res.len(),
        res.len() as f64 / secs.max(1e-9)
    );
    if let Some(d) = &a.explain {
        eprintln!("Grad-CAM and flow pictures in {}", d.display());
    }
    for e in &failed {
        eprintln!("error: {e:#}");
    }
    if failed.is_empty() {
        return Ok(());
    }
    let err = anyhow::anyhow!(
        "{} of {} clip(s) failed (listed above)",
        failed.len(),
        a.clips.len()
    );
    // the clips' own faults are the user's input (exit 2); anything else is ours (exit 1)
    if failed.iter().all(mpfnet_api::is_bad_input) {
        Err(err).bad_input()
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_resolve_from_folders_and_pairs_and_predict_identically_twice() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("synth");
        let p = SynthParams {
            subjects: 1,
            seed: 3,
            samples_min: 2,
            samples_max: 2,
            size: 48,
        };
        crate::kinds::dataset::ensure_synth(&root, &p).unwrap();
        let index = casme2::load(&casme2::Options::new(&root, casme2::Layout::Cropped)).unwrap();
        let s = &index.samples[0];
        let folder = s.frame_dir.display().to_string();
        let c = resolve_clip(&folder, None, None).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&s.frame_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort_by(|a, b| crate::data::folds::natural_cmp(a, b));
        assert!(
            c.onset.ends_with(&names[0]),
            "onset = first frame {}: {c:?}",
            names[0]
        );
        assert!(
            c.apex.ends_with(&names[names.len() / 2]),
            "apex = middle frame: {c:?}"
        );
        let pair = format!("{},{}", s.onset_path.display(), s.apex_path.display());
        let c2 = resolve_clip(&pair, None, None).unwrap();
        assert_eq!(c2.apex, s.apex_path);
        let e = resolve_clip(&folder, Some(0), Some(10_000))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--apex 10000"), "{e}");
        let e = resolve_clip("no/such/clip", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no/such/clip"), "{e}");

        let b = crate::bundle::tiny_example("c");
        let pred = crate::bundle::Predictor::new(&b, &candle_core::Device::Cpu).unwrap();
        let explain = dir.path().join("explain");
        let a = predict_clips(&pred, &[c.clone(), c2.clone()], false, Some(&explain)).unwrap();
        let again = predict_clips(&pred, &[c, c2], false, None).unwrap();
        assert_eq!(a, again, "predicting a clip twice gives identical output");
        assert!((a[0].probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        for f in ["000_gradcam.png", "000_flow.png", "001_gradcam.png"] {
            let bytes = std::fs::read(explain.join(f)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{f}");
        }
    }
}
