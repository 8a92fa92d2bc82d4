//! `gfe`: general feature extractor prior learning (paper Sec. 3.3.2): CA-I3D trained with a triplet
//! loss on the fold's training subjects. A heavy stage; it never sees the fold's test subject.

use anyhow::Result;
use candle_nn::VarMap;
use mpfnet_api::{Artifact, Ctx, InputDecl, Stage};
use serde_json::{json, Value};

use super::common::{defaults_of, validate_as};
use super::dataset::IndexInfo;
use super::train::{
    curve_png, device, factory, fold_of, load_set, model_cfg, progress_fn, skipped_final,
    weights_to_artifact, EncoderParams, ServiceCheckpoints,
};
use crate::train::encoder::EncoderFactory;

pub type GfeParams = EncoderParams<crate::train::triplet::GfeConfig>;

pub struct Gfe;

impl Stage for Gfe {
    fn kind(&self) -> &'static str {
        "gfe"
    }
    fn version(&self) -> &'static str {
        // 2: no `resumed_from` in the log (a resumed node's bytes equal an uninterrupted run's)
        "2"
    }
    fn code(&self) -> String {
        super::code_of("gfe")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("gfe")
    }
    fn about(&self) -> &'static str {
        "GFE prior learning: CA-I3D trained with a triplet loss on the fold's training subjects"
    }
    fn defaults(&self) -> Value {
        defaults_of::<GfeParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<GfeParams>(p)
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[
            InputDecl::required("features", "features[*] of every sample"),
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
        let p: GfeParams = ctx.params_as()?;
        let fold = fold_of(ctx)?;
        if fold.test.is_empty() && !p.final_model {
            return Ok(skipped_final(&fold));
        }
        let info = IndexInfo::from_artifact(&ctx.input("dataset")?.one()?.load()?)?;
        let wanted: Vec<(String, String)> =
            fold.train.iter().map(|i| (i.clone(), i.clone())).collect();
        let set = load_set(ctx.input("features")?, &wanted, &info, p.channels, ctx)?;
        let dev = device(ctx.device)?;
        let cfg = model_cfg(&p.model, p.channels);
        let map = VarMap::new();
        let log = crate::train::triplet::train_gfe(
            &factory(&cfg) as &EncoderFactory,
            &map,
            &set,
            &p.train,
            ctx.seed,
            &dev,
            &mut progress_fn(ctx),
            &mut ServiceCheckpoints(ctx.services),
        )?;
        let mut art = Artifact::with_meta(
            json!({ "model": cfg, "channels": p.channels, "log": log, "fold": fold.test_subject, "train_samples": set.len(),
                "trained_subjects": super::train::subjects_of(&set, &set.all_indices()) }),
        );
        weights_to_artifact(&map, "gfe.", &mut art)?;
        art.files.insert(
            "gfe_curve.png".into(),
            curve_png(&log, &format!("GFE triplet, fold {}", fold.test_subject))?,
        );
        Ok(art)
    }
}
