//! The encoder interface the training code is written against (CA-I3D implements it).
use crate::model::layers::BnMomentum;
use candle_core::Tensor;

pub trait Encoder {
    /// [B, C, T, H, W] -> last convolutional feature map [B, C', T', H', W']
    fn feature_map(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;
    /// feature map -> embedding [B, D]
    fn head(&self, fm: &Tensor) -> candle_core::Result<Tensor>;
    fn embed(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.head(&self.feature_map(x, train)?)
    }
    /// The handle behind its BatchNorm layers' momentum (precise BN); None without BatchNorm.
    fn bn_momentum(&self) -> Option<BnMomentum> {
        None
    }
}

/// builds an encoder whose variables live in `vb`; extra_in_channels widens its input (cascade)
pub type EncoderFactory<'a> = dyn Fn(
        candle_nn::VarBuilder,
        usize, /*extra_in_channels*/
    ) -> candle_core::Result<Box<dyn Encoder>>
    + 'a;
