//! `afe`: action-specialised feature extractor prior learning (paper Sec. 3.3.3): CA-I3D classifier on
//! the fold's motion-magnified, class-balanced training set. A heavy stage; it never sees the
//! fold's test subject.

use anyhow::Result;
use candle_nn::VarMap;
use mpfnet_api::{Artifact, Ctx, InputDecl, Stage};
use serde_json::{json, Value};

use super::common::{defaults_of, validate_as};
use super::dataset::{fold_phi, IndexInfo};
use super::train::{
    curve_png, device, factory, fold_of, load_set, model_cfg, progress_fn, skipped_final,
    subjects_of, weights_to_artifact, EncoderParams, ServiceCheckpoints,
};
use crate::train::data::SampleSet;
use crate::train::encoder::EncoderFactory;

pub type AfeParams = EncoderParams<crate::train::afe::AfeConfig>;

pub struct Afe;

impl Stage for Afe {
    fn kind(&self) -> &'static str {
        "afe"
    }
    fn version(&self) -> &'static str {
        // 2: no `resumed_from` in the log (a resumed node's bytes equal an uninterrupted run's)
        "2"
    }
    fn code(&self) -> String {
        super::code_of("afe")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("afe")
    }
    fn about(&self) -> &'static str {
        "AFE prior learning: CA-I3D classifier on the fold's motion-magnified, class-balanced training set"
    }
    fn defaults(&self) -> Value {
        defaults_of::<AfeParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<AfeParams>(p)
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[
            InputDecl::required("features", "features[*] of every sample (phi = 0)"),
            InputDecl::required(
                "magnified",
                "features[*] over the balance axis (sample@phi)",
            ),
            InputDecl::required("balance", "the balance stage (per-fold phi ranges)"),
            InputDecl::required("dataset", "the dataset index"),
        ];
        I
    }
    fn heavy(&self) -> bool {
        true
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let p: AfeParams = ctx.params_as()?;
        let fold = fold_of(ctx)?;
        if fold.test.is_empty() && !p.final_model {
            return Ok(skipped_final(&fold));
        }
        let info = IndexInfo::from_artifact(&ctx.input("dataset")?.one()?.load()?)?;
        let balance = ctx.input("balance")?.one()?.load()?;
        let phi = fold_phi(&balance, &fold.test_subject)?;
        let class_of = info.class_of();
        // the original plus one magnified copy per phi in 1..=phi_max of its class (paper Sec. 3.3.3)
        let mut originals = Vec::new();
        let mut magnified = Vec::new();
        for id in &fold.train {
            originals.push((id.clone(), id.clone()));
            for f in 1..=phi[class_of[id.as_str()]] {
                magnified.push((format!("{id}@{f}"), id.clone()));
            }
        }
        let a = load_set(ctx.input("features")?, &originals, &info, p.channels, ctx)?;
        let b = load_set(ctx.input("magnified")?, &magnified, &info, p.channels, ctx)?;
        let set = SampleSet::new(
            [a.data, b.data].concat(),
            a.shape,
            [a.labels, b.labels].concat(),
            [a.subjects, b.subjects].concat(),
            [a.ids, b.ids].concat(),
            info.classes.len(),
        )?;
        let counts = set.class_counts(&set.all_indices());
        let dev = device(ctx.device)?;
        let cfg = model_cfg(&p.model, p.channels);
        let map = VarMap::new();
        let log = crate::train::afe::train_afe(
            &factory(&cfg) as &EncoderFactory,
            &map,
            &set,
            &p.train,
            ctx.seed,
            &dev,
            &mut progress_fn(ctx),
            &mut ServiceCheckpoints(ctx.services),
        )?;
        let mut art = Artifact::with_meta(json!({
            "model": cfg, "channels": p.channels, "log": log, "fold": fold.test_subject,
            "phi_max": phi, "class_counts_after_balancing": counts, "train_samples": set.len(),
            "trained_subjects": subjects_of(&set, &set.all_indices()),
        }));
        // the classification head is not part of the AFE encoder the meta stage reuses
        weights_to_artifact(&map, "afe.", &mut art)?;
        art.files.insert(
            "afe_curve.png".into(),
            curve_png(&log, &format!("AFE, fold {}", fold.test_subject))?,
        );
        Ok(art)
    }
}
