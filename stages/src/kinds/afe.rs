//! `afe`: action-specialised feature extractor prior learning (paper Sec. 3.3.3): CA-I3D classifier on
//! the fold's motion-magnified, class-balanced training set. A heavy stage; it never sees the
//! fold's test subject.

use anyhow::Result;
use mpfnet_api::{Artifact, Ctx, InputDecl, TypedStage};

use super::artifacts::{fold_phi, Balancing, FoldInfo, IndexInfo};
use super::train::{curves_of, load_set, train_encoder, EncoderJob, EncoderParams, AFE_CURVE};
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
    type Claims = super::Claims;
    fn compute(&self, p: &AfeParams, ctx: &Ctx) -> Result<Artifact> {
        train_encoder(
            ctx,
            p,
            |fold, info| balanced_job(p, ctx, fold, info),
            |factory, map, set, cx| {
                crate::train::afe::train_classifier(factory, map, set, &p.train, cx)
            },
        )
    }
    fn pngs(&self, art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
        curves_of(art, "afe", AFE_CURVE)
    }
}

/// The fold's training set: each sample plus one magnified copy per phi in 1..=phi_max of its
/// class (paper Sec. 3.3.3), with the balancing recorded.
fn balanced_job(p: &AfeParams, ctx: &Ctx, fold: &FoldInfo, info: &IndexInfo) -> Result<EncoderJob> {
    let balance = ctx.input("balance")?.one()?.load()?;
    let phi = fold_phi(&balance, &fold.test_subject)?;
    let class_of = info.class_of();
    let mut originals = Vec::new();
    let mut magnified = Vec::new();
    for id in &fold.train {
        originals.push((id.clone(), id.clone()));
        for f in 1..=phi[class_of[id.as_str()]] {
            magnified.push((format!("{id}@{f}"), id.clone()));
        }
    }
    let a = load_set(ctx.input("features")?, &originals, info, p.channels, ctx)?;
    let b = load_set(ctx.input("magnified")?, &magnified, info, p.channels, ctx)?;
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
    Ok(EncoderJob {
        tag: "afe",
        title: AFE_CURVE,
        set,
        balancing: Some(balancing),
    })
}
