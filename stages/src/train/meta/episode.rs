//! N-way K-shot episode sampling (paper Sec. 3.4-3.5). Support: K samples per class; queries: up to
//! `n_query` of the class's remaining samples (0: all of them); support and query never overlap
//! and every index comes from the given pool. A class with fewer than K+1 samples in the pool gives
//! K' = n-1 supports and one query; a class with fewer than 2 samples is left out of episodes.
use anyhow::{bail, Result};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// the classes of the episode's ways, ascending
    pub classes: Vec<usize>,
    /// per way, support sample indices
    pub support: Vec<Vec<usize>>,
    /// per way, query sample indices
    pub query: Vec<Vec<usize>>,
}

impl Episode {
    /// Support indices way-major, then query indices way-major, and each query's way.
    pub fn flat(&self) -> (Vec<usize>, Vec<usize>, Vec<u32>) {
        let s: Vec<usize> = self.support.iter().flatten().copied().collect();
        let q: Vec<usize> = self.query.iter().flatten().copied().collect();
        let qy = self
            .query
            .iter()
            .enumerate()
            .flat_map(|(w, v)| std::iter::repeat_n(w as u32, v.len()))
            .collect();
        (s, q, qy)
    }
}

/// Samples an episode from `by_class` (per class, indices of the training pool).
/// `n_way` None: every class that has at least two samples.
pub fn sample_episode(
    by_class: &[Vec<usize>],
    n_way: Option<usize>,
    k_shot: usize,
    n_query: usize,
    rng: &mut impl Rng,
) -> Result<Episode> {
    let eligible: Vec<usize> = (0..by_class.len())
        .filter(|&c| by_class[c].len() >= 2)
        .collect();
    let want = n_way.unwrap_or(eligible.len()).min(eligible.len());
    if want < 2 {
        bail!(
            "episode: need two classes with at least two samples each, have {}",
            eligible.len()
        );
    }
    let mut classes: Vec<usize> = eligible.choose_multiple(rng, want).copied().collect();
    classes.sort_unstable();
    let (mut support, mut query) = (Vec::new(), Vec::new());
    for &c in &classes {
        let mut idx = by_class[c].clone();
        idx.shuffle(rng);
        let k = k_shot.clamp(1, idx.len() - 1);
        let rest = idx.len() - k;
        let q = if n_query == 0 {
            rest
        } else {
            n_query.min(rest)
        };
        support.push(idx[..k].to_vec());
        query.push(idx[k..k + q].to_vec());
    }
    Ok(Episode {
        classes,
        support,
        query,
    })
}
