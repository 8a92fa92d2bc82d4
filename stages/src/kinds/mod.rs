//! Stage kinds: each wraps domain algorithms as a pure `Stage`.

use mpfnet_api::Registry;

mod source {
    include!(concat!(env!("OUT_DIR"), "/source_digests.rs"));
}

/// Fingerprint of the source files under the given prefixes (paths relative to `src/`).
pub fn code(prefixes: &[&str]) -> String {
    mpfnet_api::code_fingerprint(source::SOURCE_DIGESTS, prefixes)
}

pub fn source_files() -> impl Iterator<Item = &'static str> {
    source::SOURCE_DIGESTS.iter().map(|(p, _)| *p)
}

pub fn registry() -> Registry {
    Registry::new()
}
