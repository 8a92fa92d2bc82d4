//! `dataset`, `folds`, `balance`: the discovery stages. They declare the axes that the per-sample
//! and per-fold stages fan out over.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mpfnet_api::{Artifact, AxisItem, BadInputExt, Ctx, InputDecl, Stage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::{defaults_of, i64_array, key_of, validate_as};
use crate::data::{
    self, casme2, manifest, megc, samm, smic, ClassMap, DatasetIndex, FaultPolicy, Task,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthParams {
    pub subjects: usize,
    pub seed: u64,
    pub samples_min: usize,
    pub samples_max: usize,
    pub size: u32,
}

impl Default for SynthParams {
    fn default() -> Self {
        let d = data::synth::SynthConfig::default();
        SynthParams {
            subjects: d.subjects,
            seed: d.seed,
            samples_min: d.samples_per_subject.0,
            samples_max: d.samples_per_subject.1,
            size: d.size,
        }
    }
}

impl SynthParams {
    pub fn config(&self) -> data::synth::SynthConfig {
        data::synth::SynthConfig {
            seed: self.seed,
            subjects: self.subjects,
            samples_per_subject: (self.samples_min, self.samples_max),
            size: self.size,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatasetParams {
    /// casme2 | samm | smic | megc2019 | manifest | synthetic
    pub format: String,
    /// Dataset root (CASME II/SAMM/SMIC folder, the manifest or MEGC csv for those formats),
    /// relative to the directory mpfnet runs in.
    pub root: String,
    /// Coding sheet; empty: found in the root.
    pub sheet: String,
    /// CASME II frame layout: cropped | raw.
    pub layout: String,
    /// sde | cde
    pub task: String,
    /// emotion -> class name; empty: the task's default map.
    pub class_map: BTreeMap<String, String>,
    /// Emotions left out of the task (with a user class map).
    pub dropped: Vec<String>,
    /// skip | fail: what a faulty annotation row does.
    pub on_fault: String,
    /// SMIC apex stand-in: middle | max_motion
    pub apex: String,
    /// MEGC2019-CD: the three dataset roots.
    pub casme2_root: String,
    pub samm_root: String,
    pub smic_root: String,
    /// The synthetic dataset (written to `root` when missing or made with other settings).
    pub synth: SynthParams,
}

impl Default for DatasetParams {
    fn default() -> Self {
        DatasetParams {
            format: "synthetic".into(),
            root: "data/synth".into(),
            sheet: String::new(),
            layout: "cropped".into(),
            task: "cde".into(),
            class_map: BTreeMap::new(),
            dropped: Vec::new(),
            on_fault: "skip".into(),
            apex: "middle".into(),
            casme2_root: String::new(),
            samm_root: String::new(),
            smic_root: String::new(),
            synth: SynthParams::default(),
        }
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(field: &str, v: &str) -> Result<T> {
    serde_json::from_value(Value::String(v.into()))
        .map_err(|_| anyhow::anyhow!("`{field}` = {v:?} is not a valid choice"))
}

fn opt_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

impl DatasetParams {
    pub fn check(&self) -> Result<()> {
        const FORMATS: [&str; 6] = [
            "casme2",
            "samm",
            "smic",
            "megc2019",
            "manifest",
            "synthetic",
        ];
        if !FORMATS.contains(&self.format.as_str()) {
            bail!("`format` = {:?}: expected one of {FORMATS:?}", self.format);
        }
        parse_enum::<Task>("task", &self.task)?;
        parse_enum::<FaultPolicy>("on_fault", &self.on_fault)?;
        parse_enum::<casme2::Layout>("layout", &self.layout)?;
        parse_enum::<smic::ApexRule>("apex", &self.apex)?;
        Ok(())
    }

    fn class_map(&self) -> Option<ClassMap> {
        (!self.class_map.is_empty()).then(|| {
            ClassMap::from_pairs(
                self.class_map.iter().map(|(e, c)| (e.as_str(), c.as_str())),
                self.dropped.iter().map(|s| s.as_str()),
            )
        })
    }

    /// Loads the index (writing the synthetic dataset first where asked).
    pub fn load(&self) -> Result<DatasetIndex> {
        self.check()?;
        let task: Task = parse_enum("task", &self.task)?;
        let policy: FaultPolicy = parse_enum("on_fault", &self.on_fault)?;
        let root = PathBuf::from(&self.root);
        let casme = |root: PathBuf| -> Result<casme2::Options> {
            let mut o = casme2::Options::new(root, parse_enum("layout", &self.layout)?);
            o.sheet = opt_path(&self.sheet);
            o.task = task;
            o.class_map = self.class_map();
            o.policy = policy;
            Ok(o)
        };
        match self.format.as_str() {
            "synthetic" => {
                ensure_synth(&root, &self.synth)?;
                casme2::load(&casme(root)?)
            }
            "casme2" => casme2::load(&casme(root)?),
            "samm" => {
                let mut o = samm::Options::new(root);
                o.sheet = opt_path(&self.sheet);
                o.task = task;
                o.class_map = self.class_map();
                o.policy = policy;
                samm::load(&o)
            }
            "smic" => {
                let mut o = smic::Options::new(root);
                o.apex = parse_enum("apex", &self.apex)?;
                o.task = task;
                o.class_map = self.class_map();
                o.policy = policy;
                smic::load(&o)
            }
            "manifest" => {
                let mut o = manifest::Options::new(root);
                o.task = task;
                o.class_map = self.class_map();
                o.policy = policy;
                manifest::load(&o)
            }
            "megc2019" => {
                let mut c2 = casme(PathBuf::from(&self.casme2_root))?;
                c2.sheet = None;
                let mut sm = samm::Options::new(&self.samm_root);
                sm.policy = policy;
                let mut sc = smic::Options::new(&self.smic_root);
                sc.apex = parse_enum("apex", &self.apex)?;
                sc.policy = policy;
                let o = megc::Options {
                    csv: root,
                    casme2: opt_path(&self.casme2_root).map(|_| c2),
                    samm: opt_path(&self.samm_root).map(|_| sm),
                    smic: opt_path(&self.smic_root).map(|_| sc),
                    policy,
                };
                megc::load(&o)
            }
            other => bail!("unknown dataset format {other:?}"),
        }
    }
}

/// Writes the synthetic dataset unless `root` already holds one made with the same settings.
///
/// Several processes may ask for the same `root` at once (runs sharing a data folder), so the
/// dataset is generated under a private name beside `root` and renamed into place: whoever
/// renames first wins, and a loser whose rename finds `root` already holding the same settings
/// has succeeded too (generation is deterministic). The private folder never outlives the call.
pub fn ensure_synth(root: &std::path::Path, p: &SynthParams) -> Result<()> {
    let want = serde_json::to_string_pretty(p)?;
    if synth_stamp_matches(root, &want) {
        return Ok(());
    }
    let private = |what: &str| {
        let mut name = root.file_name().unwrap_or_default().to_os_string();
        name.push(format!(
            ".{what}-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        root.with_file_name(name)
    };
    if root.exists() {
        // only ever replace a folder that we generated ourselves
        if !root.join("synth.json").exists() && std::fs::read_dir(root)?.next().is_some() {
            bail!("{} exists and is not a synthetic dataset written by mpfnet (no synth.json): refusing to overwrite it", root.display());
        }
        let stale = private("stale");
        match std::fs::rename(root, &stale) {
            Ok(()) => remove_dir_quietly(&stale),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "moving the stale synthetic dataset {} aside",
                        root.display()
                    )
                })
            }
        }
    }
    tracing::info!("writing the synthetic dataset to {}", root.display());
    let tmp = TempDir(private("tmp"));
    data::synth::generate(&p.config(), &tmp.0)?;
    std::fs::write(tmp.0.join("synth.json"), &want)?;
    match std::fs::rename(&tmp.0, root) {
        Ok(()) => Ok(()),
        // another process got there first: fine if it wrote what we would have
        Err(_) if synth_stamp_matches(root, &want) => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("moving the synthetic dataset into {}", root.display()))
        }
    }
}

fn synth_stamp_matches(root: &std::path::Path, want: &str) -> bool {
    std::fs::read_to_string(root.join("synth.json"))
        .ok()
        .as_deref()
        == Some(want)
}

fn remove_dir_quietly(dir: &std::path::Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("could not remove {}: {e}", dir.display());
        }
    }
}

/// A folder removed on drop (whether the call that made it succeeded, failed or unwound).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_dir_quietly(&self.0);
    }
}

pub struct Dataset;

impl Stage for Dataset {
    fn kind(&self) -> &'static str {
        "dataset"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn code(&self) -> String {
        super::code_of("dataset")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("dataset")
    }
    fn about(&self) -> &'static str {
        "index a dataset (CASME II, SAMM, SMIC-HS, MEGC2019-CD, manifest, synthetic): one axis item per sample"
    }
    fn defaults(&self) -> Value {
        defaults_of::<DatasetParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<DatasetParams>(p)?;
        serde_json::from_value::<DatasetParams>(p.clone())?.check()
    }
    fn inputs(&self) -> &'static [InputDecl] {
        &[]
    }
    fn volatile(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let p: DatasetParams = ctx.params_as()?;
        // what the data folder holds (a sheet, a frame) is the user's input: exit status 2
        let index = p.load().bad_input()?;
        if index.samples.is_empty() {
            return Err(anyhow::anyhow!(
                "dataset {} has no usable sample ({} faults)",
                p.root,
                index.faults.len()
            ))
            .bad_input();
        }
        for f in &index.faults {
            tracing::warn!("skipped: {f}");
        }
        let mut paths = Vec::with_capacity(index.samples.len() * 2);
        for s in &index.samples {
            paths.push(s.onset_path.clone());
            paths.push(s.apex_path.clone());
        }
        // content keys of the frames actually used, memoised on (path, size, mtime, inode)
        let digests = ctx.services.file_digests(&paths)?;
        let mut axis = Vec::with_capacity(index.samples.len());
        for (i, s) in index.samples.iter().enumerate() {
            axis.push(AxisItem {
                id: s.id.clone(),
                key: key_of(&[&digests[2 * i], &digests[2 * i + 1]]),
                attrs: json!({
                    "subject": s.subject,
                    "class": s.class,
                    "emotion": s.emotion,
                    "onset": s.onset_path,
                    "apex": s.apex_path,
                }),
            });
        }
        let counts = index.class_counts();
        let mut art = Artifact::with_meta(json!({
            "name": index.name,
            "classes": index.classes,
            "class_counts": counts,
            "subjects": index.subjects(),
            "samples": index.samples.iter().map(|s| json!({"id": s.id, "subject": s.subject, "class": s.class, "emotion": s.emotion})).collect::<Vec<_>>(),
            "faults": index.faults.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        }));
        art.insert(
            "labels",
            i64_array(index.samples.iter().map(|s| s.class as i64).collect()),
        );
        art.axis = Some(axis);
        Ok(art)
    }
}

/// The index as the training stages need it (from the `dataset` artifact's meta).
#[derive(Clone, Debug, Deserialize)]
pub struct IndexInfo {
    pub classes: Vec<String>,
    pub samples: Vec<SampleInfo>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct SampleInfo {
    pub id: String,
    pub subject: String,
    pub class: usize,
}

impl IndexInfo {
    pub fn from_artifact(a: &Artifact) -> Result<Self> {
        serde_json::from_value(a.meta.clone()).context("dataset artifact meta")
    }
    pub fn class_of(&self) -> BTreeMap<&str, usize> {
        self.samples
            .iter()
            .map(|s| (s.id.as_str(), s.class))
            .collect()
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FoldParams {
    /// Training subjects held out per fold for model selection (never the test subject).
    pub n_val: usize,
    /// 0: leave-one-subject-out; k > 0: subject-wise k-fold (`data::folds::kfold_folds`)
    pub k_folds: usize,
    /// Also emit the `final` split (every subject trains, none is tested) so the fold stages
    /// train a final model for `bundle`; evaluation ignores it.
    pub final_model: bool,
}

impl Default for FoldParams {
    fn default() -> Self {
        FoldParams {
            n_val: 2,
            k_folds: 0,
            final_model: false,
        }
    }
}

/// A fold as carried in axis item attrs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FoldInfo {
    pub index: usize,
    pub test_subject: String,
    pub train: Vec<String>,
    pub val: Vec<String>,
    pub test: Vec<String>,
}

impl FoldInfo {
    pub fn from_item(item: &AxisItem) -> Result<Self> {
        serde_json::from_value(item.attrs.clone()).context("fold axis item")
    }
}

pub struct Folds;

impl Stage for Folds {
    fn kind(&self) -> &'static str {
        "folds"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn code(&self) -> String {
        super::code_of("folds")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("folds")
    }
    fn about(&self) -> &'static str {
        "leave-one-subject-out folds with a seeded validation split of training subjects"
    }
    fn defaults(&self) -> Value {
        defaults_of::<FoldParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<FoldParams>(p)
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[InputDecl::required("dataset", "a `dataset` stage")];
        I
    }
    fn uses_seed(&self) -> bool {
        true
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let p: FoldParams = ctx.params_as()?;
        let ds = ctx.input("dataset")?.one()?.load()?;
        let info = IndexInfo::from_artifact(&ds)?;
        // rebuild a minimal index for the fold logic (it needs subjects and classes only)
        let index = DatasetIndex {
            name: String::new(),
            classes: info.classes.clone(),
            samples: info
                .samples
                .iter()
                .map(|s| data::Sample {
                    id: s.id.clone(),
                    dataset: String::new(),
                    subject: s.subject.clone(),
                    filename: String::new(),
                    emotion: String::new(),
                    class: s.class,
                    onset_frame: 0,
                    apex_frame: 0,
                    offset_frame: None,
                    onset_path: PathBuf::new(),
                    apex_path: PathBuf::new(),
                    frame_dir: PathBuf::new(),
                })
                .collect(),
            faults: Vec::new(),
        };
        let mut folds = match p.k_folds {
            0 => data::loso_folds(&index, p.n_val, ctx.seed),
            k => data::folds::kfold_folds(&index, k, p.n_val, ctx.seed),
        };
        if p.final_model {
            if index
                .subjects()
                .iter()
                .any(|s| s == data::folds::FINAL_FOLD)
            {
                bail!("a subject is named `{}`, the id of the final-model split: rename it or set final_model = false", data::folds::FINAL_FOLD);
            }
            folds.push(data::folds::final_split(&index, p.n_val, ctx.seed));
        }
        let ids = |v: &[usize]| {
            v.iter()
                .map(|&i| index.samples[i].id.clone())
                .collect::<Vec<_>>()
        };
        let mut axis = Vec::new();
        for f in &folds {
            let fi = FoldInfo {
                index: f.index,
                test_subject: f.test_subject.clone(),
                train: ids(&f.train),
                val: ids(&f.val),
                test: ids(&f.test),
            };
            let attrs = serde_json::to_value(&fi)?;
            axis.push(AxisItem {
                id: f.test_subject.clone(),
                key: key_of(&[&attrs.to_string()]),
                attrs,
            });
        }
        let mut art = Artifact::with_meta(
            json!({ "table": data::folds::fold_table(&index, &folds), "folds": folds.len() }),
        );
        art.axis = Some(axis);
        Ok(art)
    }
}

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

pub struct Balance;

impl Stage for Balance {
    fn kind(&self) -> &'static str {
        "balance"
    }
    fn version(&self) -> &'static str {
        "1"
    }
    fn code(&self) -> String {
        super::code_of("balance")
    }
    fn code_files(&self) -> Vec<(String, String)> {
        super::code_files_for("balance")
    }
    fn about(&self) -> &'static str {
        "per-fold class balancing: phi ranges from each fold's training counts; one axis item per (sample, phi) any fold needs"
    }
    fn defaults(&self) -> Value {
        defaults_of::<BalanceParams>()
    }
    fn validate(&self, p: &Value) -> Result<()> {
        validate_as::<BalanceParams>(p)
    }
    fn inputs(&self) -> &'static [InputDecl] {
        const I: &[InputDecl] = &[
            InputDecl::required("dataset", "a `dataset` stage"),
            InputDecl::required("folds", "a `folds` stage"),
        ];
        I
    }
    fn run(&self, ctx: &Ctx) -> Result<Artifact> {
        let p: BalanceParams = ctx.params_as()?;
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
        let mut per_fold = serde_json::Map::new();
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
                json!({"counts": counts, "phi_max": phi, "produced": produced}),
            );
        }
        let mut axis = Vec::new();
        for (id, max_phi) in &need {
            let it = items[id.as_str()];
            for phi in 1..=*max_phi {
                let mut attrs = it.attrs.clone();
                attrs["phi"] = json!(phi);
                attrs["sample"] = json!(id);
                axis.push(AxisItem {
                    id: format!("{id}@{phi}"),
                    key: key_of(&[&it.key, &phi.to_string()]),
                    attrs,
                });
            }
        }
        let mut art = Artifact::with_meta(
            json!({ "folds": per_fold, "classes": info.classes, "items": axis.len() }),
        );
        art.axis = Some(axis);
        Ok(art)
    }
}

/// Per-fold phi ranges from a `balance` artifact: class -> phi_max.
pub fn fold_phi(balance: &Artifact, fold: &str) -> Result<Vec<usize>> {
    let v = balance.meta["folds"]
        .get(fold)
        .with_context(|| format!("balance has no fold {fold}"))?;
    Ok(serde_json::from_value(v["phi_max"].clone())?)
}
