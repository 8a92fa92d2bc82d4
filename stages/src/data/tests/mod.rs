//! Tests over small fixture trees written by the tests themselves.

mod casme2_tests;
mod folds_tests;
mod other_loaders;
mod synth_tests;

use crate::data::fixtures::*;
use std::path::Path;

/// The CASME II fixture: 11 data rows, five of them faulty, one dropped (fear), one blank row.
/// Returns the sheet rows (for the CSV variant).
pub(super) fn casme2_fixture(
    root: &Path,
    layout: crate::data::casme2::Layout,
    ext: &str,
) -> Vec<Vec<Cell>> {
    let bytes = tiny_frame(ext, 8, 90, 2).unwrap();
    let r =
        |s: u32, f: &str, on: u32, ap: Cell, off: u32, e: &str| casme2_row(s, f, on, ap, off, e);
    let rows = vec![
        casme2_header(),
        r(1, "EP01_01", 10, 15.into(), 20, "happiness"), // row 2 ok
        r(1, "EP02_01", 30, "/".into(), 40, "surprise"), // row 3 apex "/"
        r(1, "EP03_01", 10, 25.into(), 20, "disgust"),   // row 4 apex out of range
        r(2, "EP01_01", 10, 14.into(), 20, "disgust"),   // row 5 ok
        r(2, "EP02_01", 10, 14.into(), 20, "repression"), // row 6 apex frame missing
        r(2, "EP03_01", 10, 14.into(), 20, "joy"),       // row 7 unknown emotion
        r(3, "EP01_01", 5, 8.into(), 12, "others"),      // row 8 ok
        r(3, "EP02_01", 5, 8.into(), 12, "fear"),        // row 9 dropped (SDE and CDE)
        r(3, "EP03_01", 5, 8.into(), 12, "surprise"),    // row 10 ok
        r(3, "EP04_01", 5, 8.into(), 12, "happiness"),   // row 11 no folder
        vec![],                                          // row 12 blank
        r(3, "EP05_01", 5, 8.into(), 12, "others"),      // row 13 ok
    ];
    let frames = |s: &str, f: &str, a: u32, b: u32| {
        casme2_frames(root, layout, (s, f), a..=b, ext, &bytes).unwrap()
    };
    frames("sub01", "EP01_01", 10, 20);
    frames("sub01", "EP02_01", 30, 40);
    frames("sub01", "EP03_01", 10, 20);
    frames("sub02", "EP01_01", 10, 20);
    let d = frames("sub02", "EP02_01", 10, 20);
    std::fs::remove_file(d.join(format!("{}14.{ext}", layout.prefix()))).unwrap();
    frames("sub02", "EP03_01", 10, 20);
    for f in ["EP01_01", "EP02_01", "EP03_01", "EP05_01"] {
        frames("sub03", f, 5, 12);
    }
    rows
}
