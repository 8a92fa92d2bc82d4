//! Seeded randomness: every random choice derives from an explicit seed plus a stream path, so a
//! resumed run redraws exactly what the uninterrupted run drew (no RNG state to checkpoint).
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: decorrelates nearby integers.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of a string (stable across runs and platforms).
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A generator for `seed` and a stream path such as `[STREAM_GFE, epoch]`.
pub fn rng_for(seed: u64, stream: &[u64]) -> ChaCha8Rng {
    let s = stream.iter().fold(mix(seed), |acc, &x| mix(acc ^ mix(x)));
    ChaCha8Rng::seed_from_u64(s)
}

pub const STREAM_GFE: u64 = 1;
pub const STREAM_AFE: u64 = 2;
pub const STREAM_META: u64 = 3;
pub const STREAM_PREDICT: u64 = 4;
pub const STREAM_INIT: u64 = 5;

/// A seed for a sub-task (e.g. the initial weights of one stage), independent of other streams.
pub fn sub_seed(seed: u64, stream: u64) -> u64 {
    mix(mix(seed) ^ mix(stream.wrapping_mul(0xA24B_AED4_963E_E407)))
}
