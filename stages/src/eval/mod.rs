pub mod embed2d;
pub mod gradcam;
pub mod metrics;
pub mod plots;
pub mod report;

#[cfg(test)]
mod tests;
