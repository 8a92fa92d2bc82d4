//! `afe`: action-specialised feature extractor prior learning (paper Sec. 3.3.3): CA-I3D classifier on
//! the fold's motion-magnified, class-balanced training set. A heavy stage; it never sees the
//! fold's test subject.

use anyhow::Result;
use mpfnet_api::{Artifact, Ctx, InputDecl, TypedStage};

use super::artifacts::{fold_phi, meta_artifact, Balancing, IndexInfo};
use super::train::{
    curves_of, fold_of, load_set, skipped_final, train_encoder, EncoderJob, EncoderParams,
    AFE_CURVE,
};
use crate::train::data::SampleSet;

pub type AfeParams = EncoderParams<crate::train::afe::AfeConfig>;

pub struct Afe;

impl TypedStage for Afe {
    const KIND: &'static str = "afe";
    // 2: no `resumed_from` in the log (a resumed node's bytes equal an uninterrupted run's)
    const VERSION: &'static str = "2";
    const ABOUT: &'static str = "AFE prior learning: CA-I3D classifier on the fold's motion-magnified, class-balanced training set";
    const INPUTS: &'static [InputDecl] = &[
        InputDecl::required("features", "features[*] of every sample (phi = 0)"),
        InputDecl::required(
            "magnified",
            "features[*] over the balance axis (sample@phi)",
        ),
        InputDecl::required("balance", "the balance stage (per-fold phi ranges)"),
        InputDecl::required("dataset", "the dataset index"),
    ];
    const HEAVY: bool = true;
    const USES_SEED: bool = true;
    type Params = AfeParams;
    fn sources(&self) -> Vec<(String, String)> {
        super::code_files_for(Self::KIND)
    }
    fn compute(&self, p: &AfeParams, ctx: &Ctx) -> Result<Artifact> {
        let fold = fold_of(ctx)?;
        if fold.test.is_empty() && !p.final_model {
            return meta_artifact(&skipped_final(&fold));
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
        let balancing = Balancing {
            phi_max: phi,
            class_counts_after_balancing: set.class_counts(&set.all_indices()),
        };
        let job = EncoderJob {
            tag: "afe",
            title: AFE_CURVE,
            set,
            balancing: Some(balancing),
        };
        train_encoder(ctx, p, &fold, job, |factory, map, set, cx| {
            crate::train::afe::train_classifier(factory, map, set, &p.train, cx)
        })
    }
    fn pngs(&self, art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
        curves_of(art, "afe", AFE_CURVE)
    }
}
