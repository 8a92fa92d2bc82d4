//! `dataset`: index a dataset folder; declares the sample axis that the per-sample stages fan
//! out over.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use mpfnet_api::{Artifact, AxisItem, BadInputExt, Ctx, StageParams, TypedStage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::artifacts::{ClipAttrs, IndexInfo, SampleInfo};
use super::common::{i64_array, key_of};
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

impl StageParams for DatasetParams {
    fn validate(&self) -> Result<()> {
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
}

impl DatasetParams {
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
        self.validate()?;
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

impl TypedStage for Dataset {
    const KIND: &'static str = "dataset";
    const VERSION: &'static str = "1";
    const ABOUT: &'static str = "index a dataset (CASME II, SAMM, SMIC-HS, MEGC2019-CD, manifest, synthetic): one axis item per sample";
    const VOLATILE: bool = true;
    type Params = DatasetParams;
    type Claims = super::Claims;
    fn compute(&self, p: &DatasetParams, ctx: &Ctx) -> Result<Artifact> {
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
            let attrs = ClipAttrs {
                subject: s.subject.clone(),
                class: s.class,
                emotion: s.emotion.clone(),
                onset: s.onset_path.clone(),
                apex: s.apex_path.clone(),
                phi: 0,
                sample: None,
            };
            axis.push(AxisItem {
                id: s.id.clone(),
                key: key_of(&[&digests[2 * i], &digests[2 * i + 1]]),
                attrs: serde_json::to_value(attrs)?,
            });
        }
        let meta = IndexInfo {
            name: index.name.clone(),
            classes: index.classes.clone(),
            class_counts: index.class_counts(),
            subjects: index.subjects(),
            samples: index
                .samples
                .iter()
                .map(|s| SampleInfo {
                    id: s.id.clone(),
                    subject: s.subject.clone(),
                    class: s.class,
                    emotion: s.emotion.clone(),
                })
                .collect(),
            faults: index.faults.iter().map(|f| f.to_string()).collect(),
        };
        let mut art = Artifact::with_meta(serde_json::to_value(meta)?);
        art.insert(
            "labels",
            i64_array(index.samples.iter().map(|s| s.class as i64).collect()),
        );
        art.axis = Some(axis);
        Ok(art)
    }
}
