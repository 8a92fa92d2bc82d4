use super::casme2_fixture;
use crate::data::casme2::{self, Layout};
use crate::data::fixtures::{tiny_frame, write_csv, write_xlsx, Cell};
use crate::data::smic::ApexRule;
use crate::data::{manifest, megc, samm, smic, FaultPolicy, Task};
use std::path::Path;

/// SAMM sheet with `preamble` rows before the header; frames in `root/SAMM`.
fn samm_fixture(root: &Path, preamble: usize) {
    let mut rows: Vec<Vec<Cell>> = (0..preamble)
        .map(|i| {
            if i == 0 {
                vec!["SAMM Micro-Movement Database".into()]
            } else if i % 3 == 0 {
                vec!["Notes:".into(), format!("line {i}").into()]
            } else {
                vec![]
            }
        })
        .collect();
    let header = [
        "Subject",
        "Filename",
        "Inducement Code",
        "Onset Frame",
        "Apex Frame",
        "Offset Frame",
        "Duration",
        "Micro",
        "Action Units",
        "Notes",
        "Estimated Emotion",
        "Objective Classes",
    ];
    rows.push(header.iter().map(|h| Cell::from(*h)).collect());
    let row = |s: Cell, f: &str, on: f64, ap: f64, off: f64, e: &str| -> Vec<Cell> {
        vec![
            s,
            f.into(),
            1.0.into(),
            on.into(),
            ap.into(),
            off.into(),
            (off - on + 1.0).into(),
            "Micro - 1/2".into(),
            "R12".into(),
            Cell::Empty,
            e.into(),
            1.0.into(),
        ]
    };
    rows.push(row(6.0.into(), "006_1_2", 5562.0, 5570.0, 5580.0, "Anger"));
    rows.push(row(
        "006".into(),
        "006_1_3",
        100.0,
        104.0,
        110.0,
        "Happiness",
    ));
    rows.push(row(7.0.into(), "007_5_1", 200.0, -1.0, 210.0, "Contempt"));
    rows.push(row(7.0.into(), "007_5_2", 300.0, 305.0, 310.0, "Other"));
    rows.push(row(7.0.into(), "007_6_1", 400.0, 405.0, 410.0, "Disgust"));
    std::fs::create_dir_all(root).unwrap();
    write_xlsx(&root.join("SAMM_Micro_FACS_Codes_v2.xlsx"), "xl", &rows).unwrap();
    let bytes = tiny_frame("jpg", 8, 60, 2).unwrap();
    let write = |s: &str, f: &str, a: u32, b: u32, digits: usize| {
        let d = root.join("SAMM").join(s).join(f);
        std::fs::create_dir_all(&d).unwrap();
        for n in a..=b {
            std::fs::write(d.join(format!("{s}_{n:0w$}.jpg", w = digits)), &bytes).unwrap();
        }
    };
    write("006", "006_1_2", 5562, 5580, 5);
    write("006", "006_1_3", 100, 110, 5);
    write("007", "007_5_1", 200, 210, 5);
    write("007", "007_5_2", 300, 310, 4); // another digit count: found by listing the folder
    write("007", "007_6_1", 400, 410, 5);
}

#[test]
fn samm_header_found_after_any_preamble() {
    for preamble in [13, 4] {
        let dir = tempfile::tempdir().unwrap();
        samm_fixture(dir.path(), preamble);
        let idx = samm::load(&samm::Options::new(dir.path())).unwrap();
        assert_eq!(
            idx.classes,
            ["Anger", "Contempt", "Happiness", "Surprise", "Other"]
        );
        assert_eq!(idx.class_counts(), [1, 0, 1, 0, 1]);
        assert_eq!(idx.subjects(), ["006", "007"]);
        let h = preamble + 1; // header row, 1-based
        assert_eq!(idx.faults.len(), 1);
        assert_eq!(
            (idx.faults[0].row, idx.faults[0].field.as_str()),
            (h + 3, "Apex Frame")
        );
        let s = idx.get("samm/006/006_1_2").unwrap();
        assert!(s.onset_path.ends_with("SAMM/006/006_1_2/006_05562.jpg"));
        assert!(s.apex_path.ends_with("SAMM/006/006_1_2/006_05570.jpg"));
        let s = idx.get("samm/007/007_5_2").unwrap();
        assert!(s.apex_path.ends_with("007_0305.jpg"));
        let mut o = samm::Options::new(dir.path());
        o.task = Task::Cde;
        let cde = samm::load(&o).unwrap();
        assert_eq!(cde.class_counts(), [2, 1, 0]); // Anger + Disgust, Happiness; Other dropped
        o.policy = FaultPolicy::Fail;
        let e = format!("{:#}", samm::load(&o).unwrap_err());
        assert!(e.contains(&format!("row {}", h + 3)), "{e}");
    }
    let e = samm::load(&samm::Options::new("/nonexistent/samm")).unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent/samm"));
}

/// SMIC-HS tree: s1 (negative, positive), s2 (surprise, negative with a motion peak at index 6),
/// s3 (an empty sample folder).
fn smic_fixture(root: &Path) {
    let hs = root.join("HS");
    let write = |s: &str, emo: &str, name: &str, blobs: &[u32]| {
        let d = hs.join(s).join("micro").join(emo).join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (k, b) in blobs.iter().enumerate() {
            let bytes = tiny_frame("bmp", 16, 40, *b).unwrap();
            std::fs::write(d.join(format!("image{:06}.bmp", 1000 + k)), bytes).unwrap();
        }
    };
    let flat = [0u32; 9];
    write("s1", "negative", "s1_ne_01", &flat);
    write("s1", "positive", "s1_po_01", &flat);
    write("s2", "surprise", "s2_sur_01", &flat);
    write("s2", "negative", "s2_ne_01", &[0, 1, 2, 3, 4, 6, 10, 4, 2]);
    std::fs::create_dir_all(hs.join("s3/micro/positive/s3_po_01")).unwrap();
}

#[test]
fn smic_labels_from_folders_and_apex_rules() {
    let dir = tempfile::tempdir().unwrap();
    smic_fixture(dir.path());
    let mut o = smic::Options::new(dir.path());
    let idx = smic::load(&o).unwrap();
    assert_eq!(idx.classes, ["negative", "positive", "surprise"]);
    assert_eq!(idx.class_counts(), [2, 1, 1]);
    assert_eq!(idx.subjects(), ["s1", "s2"]);
    assert_eq!(idx.faults.len(), 1);
    assert!(idx.faults[0].file.ends_with("s3_po_01"));
    let s = idx.get("smic/s2/s2_ne_01").unwrap();
    assert_eq!(
        (s.onset_frame, s.apex_frame, s.offset_frame),
        (1000, 1004, Some(1008))
    );
    o.apex = ApexRule::MaxMotion;
    let idx = smic::load(&o).unwrap();
    let s = idx.get("smic/s2/s2_ne_01").unwrap();
    assert_eq!(s.apex_frame, 1006);
    assert!(s.apex_path.ends_with("image001006.bmp"));
}

#[test]
fn megc_maps_subject_spellings_and_reports_faulty_rows() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let c2 = root.join("casme2");
    let rows = casme2_fixture(&c2, Layout::Cropped, "jpg");
    write_xlsx(&c2.join("CASME2-coding-20140508.xlsx"), "Sheet1", &rows).unwrap();
    samm_fixture(&root.join("samm"), 13);
    smic_fixture(&root.join("smic"));
    let csv = root.join("combined_3class_gt.csv");
    let lines = [
        "casme2,sub01,EP01_01,1", // ok
        "casme2,1,EP02_01,2",     // faulty in CASME II (apex "/")
        "samm,6,006_1_2,0",       // ok: 6 -> 006
        "samm,007,007_5_1,0",     // faulty in SAMM (apex -1)
        "smic,s01,s1_ne_01,0",    // ok: s01 -> s1
        "smic,s02,s02_sur_01,2",  // ok: filename spelled with s02
        "casme2,sub09,EP01_01,0", // no such sample
        "mmew,1,x,0",             // unknown dataset
    ];
    write_csv(
        &csv,
        &lines
            .iter()
            .map(|l| l.split(',').map(String::from).collect())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let opts = megc::Options {
        csv: csv.clone(),
        casme2: Some(casme2::Options::new(&c2, Layout::Cropped)),
        samm: Some(samm::Options::new(root.join("samm"))),
        smic: Some(smic::Options::new(root.join("smic"))),
        policy: FaultPolicy::Skip,
    };
    let idx = megc::load(&opts).unwrap();
    let ids: Vec<&str> = idx.samples.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "casme2/sub01/EP01_01",
            "samm/006/006_1_2",
            "smic/s1/s1_ne_01",
            "smic/s2/s2_sur_01"
        ]
    );
    assert_eq!(idx.class_counts(), [2, 1, 1]);
    assert_eq!(idx.subjects(), ["006", "s1", "s2", "sub01"]);
    let rows: Vec<usize> = idx.faults.iter().map(|f| f.row).collect();
    assert_eq!(rows, [2, 4, 7, 8]);
    assert!(idx.faults[0].message.contains("sample faulty in casme2"));
    assert!(idx.faults[0].message.contains("apex missing"));
    let s = idx.get("samm/006/006_1_2").unwrap();
    assert_eq!((s.onset_frame, s.apex_frame), (5562, 5570));
    let mut fail = opts.clone();
    fail.policy = FaultPolicy::Fail;
    assert!(megc::load(&fail).is_err());
    // A dataset named in the CSV without a root is a configuration error.
    let mut none = opts.clone();
    none.samm = None;
    let e = format!("{:#}", megc::load(&none).unwrap_err());
    assert!(e.contains("no SAMM root"), "{e}");
    for (raw, d, want) in [
        ("sub01", "casme2", "sub01"),
        ("3", "casme2", "sub03"),
        ("s01", "smic", "s1"),
        ("6", "samm", "006"),
        ("026", "samm", "026"),
    ] {
        assert_eq!(megc::normalise_subject(d, raw).as_deref(), Some(want));
    }
}

#[test]
fn manifest_paths_relative_to_csv() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mine");
    let bytes = tiny_frame("png", 8, 80, 2).unwrap();
    for (s, c) in [("p1", "c1"), ("p1", "c2"), ("p2", "c1")] {
        let d = root.join("frames").join(s).join(c);
        std::fs::create_dir_all(&d).unwrap();
        for n in [3, 7] {
            std::fs::write(d.join(format!("f{n:03}.png")), &bytes).unwrap();
        }
    }
    let rows = [
        "subject,sample,label,onset,apex",
        "p1,c1,pos,frames/p1/c1/f003.png,frames/p1/c1/f007.png",
        "p1,c2,neg,frames/p1/c2/f003.png,frames/p1/c2/f009.png",
        "p2,c1,neg,frames/p2/c1/f003.png,frames/p2/c1/f007.png",
    ];
    let csv = root.join("list.csv");
    std::fs::write(&csv, rows.join("\n")).unwrap();
    let idx = manifest::load(&manifest::Options::new(&csv)).unwrap();
    assert_eq!(idx.name, "list");
    assert_eq!(idx.classes, ["neg", "pos"]);
    assert_eq!(idx.class_counts(), [1, 1]);
    assert_eq!(idx.faults.len(), 1);
    assert_eq!(
        (idx.faults[0].row, idx.faults[0].field.as_str()),
        (3, "apex")
    );
    let s = idx.get("list/p1/c1").unwrap();
    assert_eq!((s.onset_frame, s.apex_frame), (3, 7));
    assert_eq!(s.frame_dir, root.join("frames/p1/c1"));
}
