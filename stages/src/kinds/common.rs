//! Helpers shared by the stage kinds: item keys, array conversions.

use mpfnet_api::Array;

/// blake3 of several strings, length-prefixed (item keys).
pub fn key_of(parts: &[&str]) -> String {
    let mut h = mpfnet_cache::PartsHasher::new();
    for p in parts {
        h.part(p.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

pub fn i64_array(data: Vec<i64>) -> Array {
    let n = data.len();
    Array::I64 {
        shape: vec![n],
        data,
    }
}

#[cfg(test)]
mod defaults_tests {
    use crate::kinds::features::FeatureParams;

    #[test]
    fn f32_defaults_print_as_written_and_parse_to_the_same_value() {
        let d = mpfnet_api::defaults_json::<FeatureParams>();
        let text = d.to_string();
        assert!(text.contains("\"lambda\":0.15"), "{text}");
        assert!(!text.contains("0.15000000596"), "{text}");
        let back: FeatureParams = serde_json::from_value(d).unwrap();
        assert_eq!(back.flow.lambda, FeatureParams::default().flow.lambda);
    }
}
