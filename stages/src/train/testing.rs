//! A small real encoder for tests and examples: the T frames are folded into channels, one 3x3
//! conv + ReLU gives the feature map [B, F, 1, H, W]; the head averages it over space and applies a
//! Linear(F -> D). Stateless in train mode (no BN, no dropout).
use crate::train::data::SampleSet;
use crate::train::encoder::{Encoder, EncoderFactory};
use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Module, VarBuilder};

#[derive(Debug, Clone, Copy)]
pub struct StandInConfig {
    pub in_channels: usize,
    pub frames: usize,
    pub features: usize,
    pub dim: usize,
}

pub struct StandIn {
    conv: Conv2d,
    lin: Linear,
    cin: usize,
}

impl StandIn {
    pub fn new(vb: VarBuilder, cfg: StandInConfig, extra_in_channels: usize) -> Result<Self> {
        let cin = (cfg.in_channels + extra_in_channels) * cfg.frames;
        let conv = candle_nn::conv2d(
            cin,
            cfg.features,
            3,
            Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
            vb.pp("conv"),
        )?;
        let lin = candle_nn::linear(cfg.features, cfg.dim, vb.pp("lin"))?;
        Ok(Self { conv, lin, cin })
    }
}

impl Encoder for StandIn {
    fn feature_map(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        let (b, _, _, h, w) = x.dims5()?;
        let y = self
            .conv
            .forward(&x.reshape((b, self.cin, h, w))?)?
            .relu()?;
        y.unsqueeze(2)
    }

    fn head(&self, fm: &Tensor) -> Result<Tensor> {
        self.lin.forward(&fm.mean((2, 3, 4))?)
    }
}

pub fn stand_in_factory(cfg: StandInConfig) -> Box<EncoderFactory<'static>> {
    Box::new(move |vb, extra| Ok(Box::new(StandIn::new(vb, cfg, extra)?) as Box<dyn Encoder>))
}

/// Gaussian blobs shaped [C, T, H, W]: class c has mean `sep` on the c-th of `n_classes` blocks of
/// the flattened sample and 0 elsewhere, unit noise everywhere; subjects cycle over `n_subjects`.
pub fn blobs(
    n_per_class: usize,
    n_classes: usize,
    shape: [usize; 4],
    sep: f32,
    n_subjects: usize,
    seed: u64,
) -> anyhow::Result<SampleSet> {
    use rand::Rng;
    let mut rng = crate::train::rng::rng_for(seed, &[99]);
    let per: usize = shape.iter().product();
    let block = per / n_classes;
    let (mut data, mut labels, mut subjects, mut ids) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n_per_class * n_classes {
        let c = i % n_classes;
        for j in 0..per {
            let u1: f32 = 1.0 - rng.random::<f32>();
            let u2: f32 = rng.random::<f32>();
            let noise = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
            let mean = if j / block == c { sep } else { 0.0 };
            data.push(mean + noise);
        }
        labels.push(c);
        subjects.push(format!("s{}", (i / n_classes) % n_subjects));
        ids.push(format!("x{i}"));
    }
    SampleSet::new(data, shape, labels, subjects, ids, n_classes)
}
