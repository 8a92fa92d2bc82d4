//! Pre-processing (paper Sec. 3.2, 4.2): face crop, optical flow (TV-L1), frame interpolation, flow and
//! difference fusion, motion magnification and pictures. Pure algorithms on in-memory frames:
//! no I/O beyond `image::{load_frame, save_png}`, no caching; deterministic, rayon-parallel.
pub mod face;
pub mod features;
pub mod flow;
pub mod image;
pub mod interp;
pub mod magnify;
pub mod pattern;
pub mod viz;
