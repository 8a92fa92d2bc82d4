//! `balance`: per-fold class balancing (paper Sec. 3.3.3); declares the axis of magnified
//! copies, one item per (sample, phi) that any fold needs.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use mpfnet_api::{Artifact, AxisItem, Ctx, InputDecl, StageParams, TypedStage};
use serde::{Deserialize, Serialize};

use super::artifacts::{BalanceMeta, ClipAttrs, FoldBalance, FoldInfo, IndexInfo};
use super::common::key_of;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BalanceParams {
    /// phi range of the majority class; rarer classes get wider ranges (paper Sec. 3.3.3).
    pub base_phi: usize,
    /// Largest magnification factor (faces distort above 15).
    pub cap: usize,
}

impl Default for BalanceParams {
    fn default() -> Self {
        BalanceParams {
            base_phi: 4,
            cap: 14,
        }
    }
}

impl StageParams for BalanceParams {}

pub struct Balance;

impl TypedStage for Balance {
    const KIND: &'static str = "balance";
    const VERSION: &'static str = "1";
    const ABOUT: &'static str = "per-fold class balancing: phi ranges from each fold's training counts; one axis item per (sample, phi) any fold needs";
    const INPUTS: &'static [InputDecl] = &[
        InputDecl::required("dataset", "a `dataset` stage"),
        InputDecl::required("folds", "a `folds` stage"),
    ];
    type Params = BalanceParams;
    type Claims = super::Claims;
    fn compute(&self, p: &BalanceParams, ctx: &Ctx) -> Result<Artifact> {
        let ds = ctx.input("dataset")?.one()?.load()?;
        let folds = ctx.input("folds")?.one()?.load()?;
        let info = IndexInfo::from_artifact(&ds)?;
        let class_of = info.class_of();
        let items: BTreeMap<&str, &AxisItem> = ds
            .axis
            .as_ref()
            .context("dataset has no axis")?
            .iter()
            .map(|i| (i.id.as_str(), i))
            .collect();
        let mut need: BTreeMap<String, usize> = BTreeMap::new();
        let mut per_fold = BTreeMap::new();
        for f in folds.axis.as_ref().context("folds has no axis")? {
            let fi = FoldInfo::from_item(f)?;
            let mut counts = vec![0usize; info.classes.len()];
            for id in &fi.train {
                counts[class_of[id.as_str()]] += 1;
            }
            let phi = crate::prep::magnify::phi_max_per_class(&counts, p.base_phi, p.cap);
            for id in &fi.train {
                let m = need.entry(id.clone()).or_default();
                *m = (*m).max(phi[class_of[id.as_str()]]);
            }
            let produced: Vec<usize> = counts.iter().zip(&phi).map(|(n, f)| n * (f + 1)).collect();
            per_fold.insert(
                fi.test_subject.clone(),
                FoldBalance {
                    counts,
                    phi_max: phi,
                    produced,
                },
            );
        }
        let mut axis = Vec::new();
        for (id, max_phi) in &need {
            let it = items[id.as_str()];
            let clip = ClipAttrs::of(it)?;
            for phi in 1..=*max_phi {
                let attrs = ClipAttrs {
                    phi,
                    sample: Some(id.clone()),
                    ..clip.clone()
                };
                axis.push(AxisItem {
                    id: format!("{id}@{phi}"),
                    key: key_of(&[&it.key, &phi.to_string()]),
                    attrs: serde_json::to_value(attrs)?,
                });
            }
        }
        let meta = BalanceMeta {
            folds: per_fold,
            classes: info.classes,
            items: axis.len(),
        };
        let mut art = Artifact::with_meta(serde_json::to_value(meta)?);
        art.axis = Some(axis);
        Ok(art)
    }
}
