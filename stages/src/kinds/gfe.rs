//! `gfe`: general feature extractor prior learning (paper Sec. 3.3.2): CA-I3D trained with a triplet
//! loss on the fold's training subjects. A heavy stage; it never sees the fold's test subject.

use anyhow::Result;
use mpfnet_api::{Artifact, Ctx, InputDecl, TypedStage};

use super::train::{curves_of, load_set, train_encoder, EncoderJob, EncoderParams, GFE_CURVE};

pub type GfeParams = EncoderParams<crate::train::triplet::GfeConfig>;

pub struct Gfe;

impl TypedStage for Gfe {
    const KIND: &'static str = "gfe";
    // 2: no `resumed_from` in the log (a resumed node's bytes equal an uninterrupted run's)
    const VERSION: &'static str = "2";
    const ABOUT: &'static str =
        "GFE prior learning: CA-I3D trained with a triplet loss on the fold's training subjects";
    const INPUTS: &'static [InputDecl] = &[
        InputDecl::required("features", "features[*] of every sample"),
        InputDecl::required("dataset", "the dataset index"),
    ];
    const HEAVY: bool = true;
    const USES_SEED: bool = true;
    type Params = GfeParams;
    type Claims = super::Claims;
    fn compute(&self, p: &GfeParams, ctx: &Ctx) -> Result<Artifact> {
        train_encoder(
            ctx,
            p,
            |fold, info| {
                let wanted: Vec<(String, String)> =
                    fold.train.iter().map(|i| (i.clone(), i.clone())).collect();
                Ok(EncoderJob {
                    tag: "gfe",
                    title: GFE_CURVE,
                    set: load_set(ctx.input("features")?, &wanted, info, p.channels, ctx)?,
                    balancing: None,
                })
            },
            |factory, map, set, cx| {
                crate::train::triplet::train_gfe(factory, map, set, &p.train, cx)
            },
        )
    }
    fn pngs(&self, art: &Artifact) -> Result<Vec<(String, Vec<u8>)>> {
        curves_of(art, "gfe", GFE_CURVE)
    }
}
