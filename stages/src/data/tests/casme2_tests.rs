use super::casme2_fixture;
use crate::data::casme2::{self, Layout, Options};
use crate::data::fixtures::{write_csv, write_xlsx, Cell};
use crate::data::{FaultPolicy, Task};

/// The cropped-layout fixture with its coding sheet as `CASME2-coding-x.xlsx`.
fn cropped_xlsx_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let rows = casme2_fixture(dir.path(), Layout::Cropped, "jpg");
    write_xlsx(&dir.path().join("CASME2-coding-x.xlsx"), "Sheet1", &rows).unwrap();
    dir
}

fn rows_of(idx: &crate::data::DatasetIndex) -> Vec<(usize, String)> {
    idx.faults
        .iter()
        .map(|f| (f.row, f.field.clone()))
        .collect()
}

#[test]
fn xlsx_cropped_sde_counts_and_faults() {
    let dir = tempfile::tempdir().unwrap();
    let rows = casme2_fixture(dir.path(), Layout::Cropped, "jpg");
    let sheet = dir.path().join("CASME2-coding-20140508.xlsx");
    write_xlsx(&sheet, "Sheet1", &rows).unwrap();
    let idx = casme2::load(&Options::new(dir.path(), Layout::Cropped)).unwrap();
    assert_eq!(
        idx.classes,
        ["happiness", "surprise", "disgust", "repression", "others"]
    );
    assert_eq!(idx.class_counts(), [1, 1, 1, 0, 2]);
    let per_subject: Vec<(String, usize)> = idx
        .subject_class_counts()
        .into_iter()
        .map(|(s, c)| (s, c.iter().sum()))
        .collect();
    assert_eq!(
        per_subject,
        [
            ("sub01".into(), 1),
            ("sub02".into(), 1),
            ("sub03".into(), 3)
        ]
    );
    assert_eq!(
        rows_of(&idx),
        [
            (3, "ApexFrame".to_string()),
            (4, "ApexFrame".to_string()),
            (6, "ApexFrame".to_string()),
            (7, "Estimated Emotion".to_string()),
            (11, "Filename".to_string()),
        ]
    );
    assert!(idx
        .faults
        .iter()
        .all(|f| f.sheet.as_deref() == Some("Sheet1")));
    let s = idx.get("casme2/sub01/EP01_01").unwrap();
    assert_eq!(
        (s.onset_frame, s.apex_frame, s.offset_frame),
        (10, 15, Some(20))
    );
    assert!(s
        .onset_path
        .ends_with("Cropped/sub01/EP01_01/reg_img10.jpg"));
    assert!(s.apex_path.ends_with("Cropped/sub01/EP01_01/reg_img15.jpg"));
    assert_eq!(s.emotion, "happiness");
    // The blank row 12 is skipped without shifting row numbers.
    assert!(idx.get("casme2/sub03/EP05_01").is_some());
    let shown = idx.faults[0].to_string();
    assert!(
        shown.starts_with(&format!(
            "{}, sheet Sheet1, row 3, field ApexFrame: apex missing",
            sheet.display()
        )),
        "{shown}"
    );
    assert!(idx.faults[1]
        .message
        .contains("outside onset..offset 10..20"));
    assert!(idx.faults[2].message.contains("frame 14 not found"));
    assert!(idx.faults[3].message.contains("\"joy\""));
}

#[test]
fn fail_policy_lists_every_fault() {
    let dir = cropped_xlsx_fixture();
    let mut o = Options::new(dir.path(), Layout::Cropped);
    o.policy = FaultPolicy::Fail;
    let e = format!("{:#}", casme2::load(&o).unwrap_err());
    for r in [3, 4, 6, 7, 11] {
        assert!(
            e.contains(&format!("row {r},")),
            "row {r} missing from: {e}"
        );
    }
    assert!(
        !e.contains("row 9,"),
        "dropped emotion reported as a fault: {e}"
    );
}

#[test]
fn cde_relabels_and_drops() {
    let dir = cropped_xlsx_fixture();
    let mut o = Options::new(dir.path(), Layout::Cropped);
    o.task = Task::Cde;
    let idx = casme2::load(&o).unwrap();
    assert_eq!(idx.classes, ["negative", "positive", "surprise"]);
    assert_eq!(idx.class_counts(), [1, 1, 1]);
    assert_eq!(idx.faults.len(), 5);
    assert_eq!(idx.get("casme2/sub02/EP01_01").unwrap().emotion, "disgust");
}

#[test]
fn csv_raw_png_matches_xlsx() {
    let dir = tempfile::tempdir().unwrap();
    let rows = casme2_fixture(dir.path(), Layout::Raw, "png");
    let text: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| match c {
                    Cell::Str(s) => s.clone(),
                    Cell::Num(v) => format!("{v}"),
                    Cell::Empty => String::new(),
                })
                .collect()
        })
        .collect();
    write_csv(&dir.path().join("CASME2-coding-20140508.csv"), &text).unwrap();
    let idx = casme2::load(&Options::new(dir.path(), Layout::Raw)).unwrap();
    assert_eq!(idx.class_counts(), [1, 1, 1, 0, 2]);
    assert_eq!(
        idx.faults.iter().map(|f| f.row).collect::<Vec<_>>(),
        [3, 4, 6, 7, 11]
    );
    assert!(idx.faults.iter().all(|f| f.sheet.is_none()));
    let s = idx.get("casme2/sub03/EP01_01").unwrap();
    assert!(s
        .onset_path
        .ends_with("CASME2_RAW_selected/sub03/EP01_01/img5.png"));
    // The cropped layout is absent: a clear error naming the folder.
    let e = casme2::load(&Options::new(dir.path(), Layout::Cropped)).unwrap_err();
    assert!(format!("{e:#}").contains("Cropped"), "{e:#}");
}

#[test]
fn missing_root_and_sheet_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("nowhere");
    let e = format!(
        "{:#}",
        casme2::load(&Options::new(&gone, Layout::Cropped)).unwrap_err()
    );
    assert!(
        e.contains("CASME II root not found") && e.contains("nowhere"),
        "{e}"
    );
    std::fs::create_dir_all(dir.path().join("Cropped")).unwrap();
    let e = format!(
        "{:#}",
        casme2::load(&Options::new(dir.path(), Layout::Cropped)).unwrap_err()
    );
    assert!(e.contains("no CASME II coding sheet"), "{e}");
    let mut o = Options::new(dir.path(), Layout::Cropped);
    o.sheet = Some(dir.path().join("missing.xlsx"));
    let e = format!("{:#}", casme2::load(&o).unwrap_err());
    assert!(e.contains("missing.xlsx"), "{e}");
}

#[test]
fn user_class_map_overrides() {
    let dir = cropped_xlsx_fixture();
    let mut map = std::collections::BTreeMap::new();
    map.insert("happiness".to_string(), "pos".to_string());
    map.insert("others".to_string(), "rest".to_string());
    let mut o = Options::new(dir.path(), Layout::Cropped);
    o.class_map = Some(crate::data::ClassMap::user(
        &map,
        &["fear".into(), "joy".into()],
    ));
    let idx = casme2::load(&o).unwrap();
    assert_eq!(idx.classes, ["pos", "rest"]);
    assert_eq!(idx.class_counts(), [1, 2]);
    // surprise / disgust are now unknown emotions (faults), joy is dropped.
    let unknown: Vec<usize> = idx
        .faults
        .iter()
        .filter(|f| f.field == "Estimated Emotion")
        .map(|f| f.row)
        .collect();
    assert_eq!(unknown, [3, 4, 5, 6, 10]);
}

/// A row whose apex is its onset has no motion for the method to learn from (MEGC2019's
/// CASME II part leaves it out): a fault naming the row and the ApexFrame field.
#[test]
fn apex_equal_to_onset_is_a_fault() {
    use crate::data::fixtures::{casme2_frames, casme2_header, casme2_row, tiny_frame};
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_frame("jpg", 8, 100, 2).unwrap();
    let mut rows = vec![casme2_header()];
    for (k, apex) in [(1u32, 15u32), (2, 10)] {
        let name = format!("EP0{k}_01");
        rows.push(casme2_row(1, &name, 10, apex.into(), 20, "disgust"));
        casme2_frames(
            dir.path(),
            Layout::Cropped,
            ("sub01", &name),
            10..=20,
            "jpg",
            &bytes,
        )
        .unwrap();
    }
    write_xlsx(
        &dir.path().join("CASME2-coding-20140508.xlsx"),
        "Sheet1",
        &rows,
    )
    .unwrap();
    let idx = casme2::load(&Options::new(dir.path(), Layout::Cropped)).unwrap();
    assert_eq!(idx.samples.len(), 1);
    assert_eq!(rows_of(&idx), [(3, "ApexFrame".to_string())]);
    assert!(
        idx.faults[0].message.contains("equals onset"),
        "{}",
        idx.faults[0]
    );
}
