//! Deterministic safetensors: round trip, determinism, spec validity and
//! interop with the reference `safetensors` crate.

use std::collections::{BTreeMap, HashMap};

use mpfnet_cache::tensors::{decode, encode, Dtype, TensorEntry};
use mpfnet_cache::{Digest, Store};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;

fn sample() -> (Vec<TensorEntry>, BTreeMap<String, String>) {
    let f: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
    let entries = vec![
        TensorEntry::from_slice("weights", &[2, 3, 4], &f).unwrap(),
        TensorEntry::from_slice("labels", &[3], &[1u8, 0, 2]).unwrap(),
        TensorEntry::from_slice("ids", &[2, 2], &[-1i64, 5, 1 << 40, 0]).unwrap(),
        TensorEntry::from_slice("scalar", &[], &[2.5f64]).unwrap(),
        TensorEntry::from_slice("empty", &[0, 4], &[] as &[i32]).unwrap(),
        TensorEntry::from_slice("counts", &[2], &[7u32, 9]).unwrap(),
        TensorEntry {
            name: "half".into(),
            dtype: Dtype::F16,
            shape: vec![3],
            data: vec![0x00, 0x3c, 0x00, 0x40, 0x00, 0xc0], // 1, 2, -2
        },
        TensorEntry {
            name: "bhalf".into(),
            dtype: Dtype::BF16,
            shape: vec![1, 1],
            data: vec![0x80, 0x3f], // 1.0
        },
    ];
    let mut meta = BTreeMap::new();
    meta.insert("fold".to_string(), "3".to_string());
    meta.insert("dataset".to_string(), "set-a \"quoted\" ü".to_string());
    (entries, meta)
}

#[test]
fn round_trip_and_typed_access() {
    let (entries, meta) = sample();
    let bytes = encode(&entries, &meta).unwrap();
    let (back, meta2) = decode(&bytes).unwrap();
    assert_eq!(meta2, meta);
    let mut want = entries.clone();
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(back, want);
    let w = back.iter().find(|e| e.name == "weights").unwrap();
    assert_eq!(w.to_vec::<f32>().unwrap()[5], 5.0 * 0.5 - 3.0);
    assert!(w.to_vec::<f64>().is_err());
    assert!(TensorEntry::from_slice("x", &[2, 2], &[1.0f32]).is_err());
}

#[test]
fn encoding_is_deterministic_and_canonical() {
    let (entries, meta) = sample();
    let a = encode(&entries, &meta).unwrap();
    let mut rev = entries.clone();
    rev.reverse();
    let b = encode(&rev, &meta).unwrap();
    assert_eq!(a, b, "input order changed the bytes");
    assert_eq!(
        Digest::of(&a),
        Digest::of(&encode(&entries, &meta).unwrap())
    );
    // Header: 8-byte aligned, spaces only as padding, starts with '{'.
    let n = u64::from_le_bytes(a[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    let header = std::str::from_utf8(&a[8..8 + n]).unwrap();
    assert!(header.starts_with('{'));
    assert!(header.trim_end().ends_with('}'));
    // Every tensor is aligned to its element size within the data section.
    let st = SafeTensors::deserialize(&a).unwrap();
    let data_start = 8 + n;
    for (name, view) in st.tensors() {
        let off = view.data().as_ptr() as usize - a.as_ptr() as usize - data_start;
        let size = entries
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .dtype
            .size();
        assert_eq!(off % size, 0, "{name} misaligned");
    }
    // A changed value or metadata changes the bytes.
    let mut changed = entries.clone();
    changed[1].data[0] = 9;
    assert_ne!(encode(&changed, &meta).unwrap(), a);
    assert_ne!(encode(&entries, &BTreeMap::new()).unwrap(), a);
}

#[test]
fn encode_rejects_bad_input() {
    let t = TensorEntry::from_slice("a", &[2], &[1.0f32, 2.0]).unwrap();
    let dup = vec![t.clone(), t.clone()];
    assert!(encode(&dup, &BTreeMap::new())
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
    let mut short = t.clone();
    short.data.pop();
    assert!(encode(&[short], &BTreeMap::new()).is_err());
    let mut reserved = t;
    reserved.name = "__metadata__".into();
    assert!(encode(&[reserved], &BTreeMap::new()).is_err());
}

#[test]
fn decode_rejects_truncated_and_garbled_input() {
    let (entries, meta) = sample();
    let good = encode(&entries, &meta).unwrap();
    for cut in [0, 3, 8, 20, good.len() - 1] {
        let err = decode(&good[..cut]).unwrap_err();
        assert!(
            format!("{err:#}").contains("safetensors"),
            "cut {cut}: {err:#}"
        );
    }
    // Header length pointing past the end.
    let mut b = good.clone();
    b[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(decode(&b).is_err());
    // Garbled JSON.
    let mut b = good.clone();
    b[8] = b'[';
    assert!(decode(&b).is_err());
    // Unknown dtype / wrong offsets / trailing bytes.
    let header = |h: &str, data: &[u8]| {
        let mut h = h.as_bytes().to_vec();
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend(h);
        out.extend_from_slice(data);
        out
    };
    let ok = header(
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4],
    );
    assert!(decode(&ok).is_ok());
    let e = decode(&header(
        r#"{"x":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#,
        &[0; 8],
    ))
    .unwrap_err();
    assert!(format!("{e:#}").contains("C64"), "{e:#}");
    assert!(decode(&header(
        r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
        &[0; 4]
    ))
    .is_err());
    assert!(decode(&header(
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 8]
    ))
    .is_err());
    assert!(decode(&header(
        r#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        &[0; 4]
    ))
    .is_err());
    assert!(decode(&header(r#"{"__metadata__":{"a":1}}"#, &[])).is_err());
}

fn to_st_dtype(d: Dtype) -> safetensors::Dtype {
    match d {
        Dtype::F32 => safetensors::Dtype::F32,
        Dtype::F64 => safetensors::Dtype::F64,
        Dtype::U8 => safetensors::Dtype::U8,
        Dtype::I64 => safetensors::Dtype::I64,
        Dtype::U32 => safetensors::Dtype::U32,
        Dtype::I32 => safetensors::Dtype::I32,
        Dtype::F16 => safetensors::Dtype::F16,
        Dtype::BF16 => safetensors::Dtype::BF16,
    }
}

#[test]
fn reference_crate_reads_what_we_write() {
    let (entries, meta) = sample();
    let bytes = encode(&entries, &meta).unwrap();
    let st = SafeTensors::deserialize(&bytes).expect("reference reader rejected our file");
    assert_eq!(st.len(), entries.len());
    for e in &entries {
        let v = st.tensor(&e.name).unwrap();
        assert_eq!(v.dtype(), to_st_dtype(e.dtype), "{}", e.name);
        assert_eq!(v.shape(), &e.shape[..], "{}", e.name);
        assert_eq!(v.data(), &e.data[..], "{}", e.name);
    }
    let (_, m) = SafeTensors::read_metadata(&bytes).unwrap();
    let got: BTreeMap<String, String> = m.metadata().clone().unwrap().into_iter().collect();
    assert_eq!(got, meta);
}

#[test]
fn we_read_what_reference_crate_writes() {
    let (entries, meta) = sample();
    let views: Vec<(String, TensorView)> = entries
        .iter()
        .map(|e| {
            (
                e.name.clone(),
                TensorView::new(to_st_dtype(e.dtype), e.shape.clone(), &e.data).unwrap(),
            )
        })
        .collect();
    let info: HashMap<String, String> = meta.clone().into_iter().collect();
    let bytes = safetensors::serialize(views, Some(info)).unwrap();
    let (back, m) = decode(&bytes).unwrap();
    assert_eq!(m, meta);
    let mut want = entries;
    want.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(back, want);
}

#[test]
fn store_put_get_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let (entries, meta) = sample();
    let d = s.put_tensors(&entries, &meta).unwrap();
    let mut rev = entries.clone();
    rev.reverse();
    assert_eq!(
        s.put_tensors(&rev, &meta).unwrap(),
        d,
        "same tensors, new digest"
    );
    let (back, m) = s.get_tensors(&d).unwrap().unwrap();
    assert_eq!(m, meta);
    assert_eq!(back.len(), entries.len());
    let not_st = s.put_blob(b"plain bytes").unwrap();
    assert!(s.get_tensors(&not_st).is_err());
    assert!(s.get_tensors(&Digest::of(b"absent")).unwrap().is_none());
}
