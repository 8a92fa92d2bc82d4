//! In-memory sample sets and seeded batch assembly.
use anyhow::{bail, Context, Result};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;

/// Samples of one shape `[C, T, H, W]`, stored in one flat buffer, sample-major.
#[derive(Debug, Clone)]
pub struct SampleSet {
    pub data: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<usize>,
    pub subjects: Vec<String>,
    pub ids: Vec<String>,
    pub n_classes: usize,
    /// The whole set on an accelerator, uploaded by the first batch asked for there: a fold's
    /// training tensors cross to the device once and every batch is gathered on it.
    resident: OnceLock<Resident>,
}

/// A set's samples `[N, C, T, H, W]` and labels `[N]` (u32) on one device.
#[derive(Debug, Clone)]
struct Resident {
    samples: Tensor,
    labels: Tensor,
}

impl SampleSet {
    pub fn new(
        data: Vec<f32>,
        shape: [usize; 4],
        labels: Vec<usize>,
        subjects: Vec<String>,
        ids: Vec<String>,
        n_classes: usize,
    ) -> Result<Self> {
        let n = labels.len();
        let per: usize = shape.iter().product();
        if per == 0 {
            bail!("SampleSet: empty sample shape {shape:?}");
        }
        if data.len() != n * per {
            bail!(
                "SampleSet: data has {} values, {n} samples of {shape:?} need {}",
                data.len(),
                n * per
            );
        }
        if subjects.len() != n || ids.len() != n {
            bail!(
                "SampleSet: {n} labels but {} subjects and {} ids",
                subjects.len(),
                ids.len()
            );
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l >= n_classes) {
            bail!(
                "SampleSet: sample {} ({}) has label {l} >= n_classes {n_classes}",
                i,
                ids[i]
            );
        }
        Ok(Self {
            data,
            shape,
            labels,
            subjects,
            ids,
            n_classes,
            resident: OnceLock::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn sample_len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.data[i * n..(i + 1) * n]
    }

    /// `[B, C, T, H, W]` tensor of the samples `idx`, in that order: copied from host memory on
    /// the CPU, gathered from the resident set on any other device.
    pub fn batch(&self, idx: &[usize], dev: &Device) -> Result<Tensor> {
        if !dev.is_cpu() {
            return self.resident_batch(idx, dev);
        }
        let mut buf = Vec::with_capacity(idx.len() * self.sample_len());
        for &i in idx {
            if i >= self.len() {
                bail!("SampleSet::batch: index {i} out of {} samples", self.len());
            }
            buf.extend_from_slice(self.sample(i));
        }
        let [c, t, h, w] = self.shape;
        Tensor::from_vec(buf, (idx.len(), c, t, h, w), dev).context("SampleSet::batch")
    }

    pub fn labels_of(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter().map(|&i| self.labels[i]).collect()
    }

    /// The batch gathered on `dev` from the whole set uploaded there once (what [`Self::batch`]
    /// does off the CPU; on the CPU it gives the same values, which the tests check).
    pub fn resident_batch(&self, idx: &[usize], dev: &Device) -> Result<Tensor> {
        let r = self.resident(dev)?;
        Ok(r.samples.index_select(&self.index_tensor(idx, dev)?, 0)?)
    }

    /// Whether the set has been uploaded to a device.
    pub fn is_resident(&self) -> bool {
        self.resident.get().is_some()
    }

    fn resident(&self, dev: &Device) -> Result<Resident> {
        if let Some(r) = self
            .resident
            .get()
            .filter(|r| r.samples.device().same_device(dev))
        {
            return Ok(r.clone());
        }
        let [c, t, h, w] = self.shape;
        let labels: Vec<u32> = self.labels.iter().map(|&l| l as u32).collect();
        let r = Resident {
            samples: Tensor::from_slice(&self.data, (self.len(), c, t, h, w), dev)
                .context("SampleSet: uploading the set")?,
            labels: Tensor::new(labels, dev)?,
        };
        // a set asked for on a second device is uploaded again, not cached
        let _ = self.resident.set(r.clone());
        Ok(r)
    }

    fn index_tensor(&self, idx: &[usize], dev: &Device) -> Result<Tensor> {
        if let Some(&i) = idx.iter().find(|&&i| i >= self.len()) {
            bail!("SampleSet::batch: index {i} out of {} samples", self.len());
        }
        let idx: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        Ok(Tensor::new(idx, dev)?)
    }

    /// Labels as a u32 tensor `[B]` (gathered on the device like [`Self::batch`]).
    pub fn labels_tensor(&self, idx: &[usize], dev: &Device) -> Result<Tensor> {
        if !dev.is_cpu() {
            let r = self.resident(dev)?;
            return Ok(r.labels.index_select(&self.index_tensor(idx, dev)?, 0)?);
        }
        let l: Vec<u32> = idx.iter().map(|&i| self.labels[i] as u32).collect();
        Ok(Tensor::new(l, dev)?)
    }

    /// A new set holding the samples `idx`.
    pub fn subset(&self, idx: &[usize]) -> Result<SampleSet> {
        let mut data = Vec::with_capacity(idx.len() * self.sample_len());
        for &i in idx {
            if i >= self.len() {
                bail!("SampleSet::subset: index {i} out of {} samples", self.len());
            }
            data.extend_from_slice(self.sample(i));
        }
        SampleSet::new(
            data,
            self.shape,
            self.labels_of(idx),
            idx.iter().map(|&i| self.subjects[i].clone()).collect(),
            idx.iter().map(|&i| self.ids[i].clone()).collect(),
            self.n_classes,
        )
    }

    /// Indices of the samples whose subject satisfies `keep`.
    pub fn indices_where(&self, keep: impl Fn(&str) -> bool) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| keep(&self.subjects[i]))
            .collect()
    }

    pub fn all_indices(&self) -> Vec<usize> {
        (0..self.len()).collect()
    }

    /// Per class, the indices of `pool` with that label (in pool order).
    pub fn by_class(&self, pool: &[usize]) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.n_classes];
        for &i in pool {
            out[self.labels[i]].push(i);
        }
        out
    }

    /// Sample counts per class over `pool`.
    pub fn class_counts(&self, pool: &[usize]) -> Vec<usize> {
        self.by_class(pool).iter().map(|v| v.len()).collect()
    }
}

/// Shuffles `pool` and cuts it into batches of `batch`; a last batch of one sample is merged into
/// the previous one (batch statistics and triplets need at least two samples).
pub fn shuffled_batches(pool: &[usize], batch: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
    let mut order = pool.to_vec();
    order.shuffle(rng);
    let batch = batch.max(1);
    let mut out: Vec<Vec<usize>> = order.chunks(batch).map(|c| c.to_vec()).collect();
    if out.len() > 1 && out.last().map(|b| b.len()) == Some(1) {
        let last = out.pop().unwrap();
        out.last_mut().unwrap().extend(last);
    }
    out
}
