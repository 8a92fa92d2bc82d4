//! Deterministic safetensors encoding: equal tensors and metadata always give
//! byte-identical files, hence equal digests.
//!
//! Layout (per the safetensors spec): u64 LE header length, a JSON header
//! padded with spaces to a multiple of 8 bytes, then the tensor data. The
//! header is canonical (keys sorted, compact). Data is laid out by element
//! size, largest first, then by name, so every tensor is aligned to its
//! element size (as the reference implementation does) and the order is
//! still a pure function of the input.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use crate::{Digest, Store};

/// Largest header accepted when decoding (the reference reader's limit).
const MAX_HEADER: u64 = 100_000_000;

/// Element types supported here (a subset of safetensors').
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// 32-bit float.
    F32,
    /// 64-bit float.
    F64,
    /// Unsigned byte.
    U8,
    /// 64-bit signed integer.
    I64,
    /// 32-bit unsigned integer.
    U32,
    /// 32-bit signed integer.
    I32,
    /// IEEE half float (raw bits).
    F16,
    /// bfloat16 (raw bits).
    BF16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 => 1,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F32 | Dtype::U32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }

    /// The safetensors name ("F32", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::U8 => "U8",
            Dtype::I64 => "I64",
            Dtype::U32 => "U32",
            Dtype::I32 => "I32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "U8" => Dtype::U8,
            "I64" => Dtype::I64,
            "U32" => Dtype::U32,
            "I32" => Dtype::I32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            other => bail!("unsupported safetensors dtype {other:?}"),
        })
    }
}

/// A Rust element type with a safetensors dtype.
pub trait Element: Copy {
    /// The matching dtype.
    const DTYPE: Dtype;
    /// Appends the little-endian bytes.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads from exactly `DTYPE.size()` little-endian bytes.
    fn read_le(b: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $d:ident) => {
        impl Element for $t {
            const DTYPE: Dtype = Dtype::$d;
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().expect("element size"))
            }
        }
    };
}
element!(f32, F32);
element!(f64, F64);
element!(u8, U8);
element!(i64, I64);
element!(u32, U32);
element!(i32, I32);

/// Values as little-endian bytes (the layout of a safetensors tensor).
pub fn to_le_bytes<T: Element>(values: &[T]) -> Vec<u8> {
    let mut data = Vec::with_capacity(values.len() * T::DTYPE.size());
    for v in values {
        v.write_le(&mut data);
    }
    data
}

/// Values from little-endian bytes; a trailing partial element is ignored.
pub fn from_le_bytes<T: Element>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(T::DTYPE.size())
        .map(T::read_le)
        .collect()
}

/// One named tensor: dtype, shape and little-endian data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Unique name within a file.
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Dimensions, row-major (empty for a scalar).
    pub shape: Vec<usize>,
    /// Little-endian element bytes (`shape` product times `dtype.size()`).
    pub data: Vec<u8>,
}

impl TensorEntry {
    /// A tensor from typed values (row-major).
    pub fn from_slice<T: Element>(name: &str, shape: &[usize], values: &[T]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        ensure!(
            numel == values.len(),
            "tensor {name:?}: shape {shape:?} needs {numel} values, got {}",
            values.len()
        );
        Ok(TensorEntry {
            name: name.to_string(),
            dtype: T::DTYPE,
            shape: shape.to_vec(),
            data: to_le_bytes(values),
        })
    }

    /// The values, if the dtype is `T`'s.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        ensure!(
            self.dtype == T::DTYPE,
            "tensor {:?} is {}, not {}",
            self.name,
            self.dtype,
            T::DTYPE
        );
        Ok(from_le_bytes(&self.data))
    }

    fn expected_len(&self) -> Result<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |a, &d| a.checked_mul(d))
            .with_context(|| format!("tensor {:?}: shape {:?} overflows", self.name, self.shape))
    }
}

#[derive(Serialize, Deserialize)]
struct Info {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

#[derive(Serialize)]
#[serde(untagged)]
enum HeaderItem<'a> {
    Meta(&'a BTreeMap<String, String>),
    Tensor(Info),
}

/// Encodes tensors and string metadata as a safetensors file. Deterministic:
/// the same input (in any order) gives the same bytes. Errors on duplicate or
/// reserved names and on data whose length does not match dtype and shape.
pub fn encode(entries: &[TensorEntry], metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
    let mut order: Vec<&TensorEntry> = entries.iter().collect();
    order.sort_by(|a, b| {
        b.dtype
            .size()
            .cmp(&a.dtype.size())
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut header: BTreeMap<&str, HeaderItem> = BTreeMap::new();
    if !metadata.is_empty() {
        header.insert("__metadata__", HeaderItem::Meta(metadata));
    }
    let mut offset = 0u64;
    for e in &order {
        ensure!(
            e.name != "__metadata__",
            "tensor name \"__metadata__\" is reserved"
        );
        let len = e.expected_len()?;
        ensure!(
            e.data.len() == len,
            "tensor {:?}: {} {:?} needs {len} bytes, got {}",
            e.name,
            e.dtype,
            e.shape,
            e.data.len()
        );
        let info = Info {
            dtype: e.dtype.as_str().to_string(),
            shape: e.shape.clone(),
            data_offsets: [offset, offset + len as u64],
        };
        if header.insert(&e.name, HeaderItem::Tensor(info)).is_some() {
            bail!("duplicate tensor name {:?}", e.name);
        }
        offset += len as u64;
    }
    let mut json = serde_json::to_vec(&header).context("serializing safetensors header")?;
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset as usize);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for e in &order {
        out.extend_from_slice(&e.data);
    }
    Ok(out)
}

/// Tensors (sorted by name) and metadata of a decoded file.
pub type Decoded = (Vec<TensorEntry>, BTreeMap<String, String>);

/// Decodes a safetensors file (ours or any conforming writer's) of the
/// supported dtypes. Tensors come back sorted by name. Truncated or garbled
/// input is a clear error, never a panic.
pub fn decode(bytes: &[u8]) -> Result<Decoded> {
    ensure!(
        bytes.len() >= 8,
        "safetensors: truncated, {} bytes is shorter than the 8-byte header length",
        bytes.len()
    );
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    ensure!(
        n <= MAX_HEADER,
        "safetensors: header length {n} is implausible"
    );
    ensure!(
        8 + n <= bytes.len() as u64,
        "safetensors: truncated, header says {n} bytes but only {} follow",
        bytes.len() - 8
    );
    let header = std::str::from_utf8(&bytes[8..8 + n as usize])
        .context("safetensors: header is not UTF-8")?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(header).context("safetensors: header is not a JSON object")?;
    let data = &bytes[8 + n as usize..];
    let mut metadata = BTreeMap::new();
    let mut spans = Vec::new();
    for (name, v) in header {
        if name == "__metadata__" {
            metadata = serde_json::from_value(v)
                .context("safetensors: __metadata__ is not a map of strings")?;
            continue;
        }
        let info: Info = serde_json::from_value(v)
            .with_context(|| format!("safetensors: bad header entry for tensor {name:?}"))?;
        let dtype: Dtype = info
            .dtype
            .parse()
            .with_context(|| format!("safetensors: tensor {name:?}"))?;
        let [begin, end] = info.data_offsets;
        let mut e = TensorEntry {
            name,
            dtype,
            shape: info.shape,
            data: Vec::new(),
        };
        let len = e.expected_len()? as u64;
        ensure!(
            begin <= end && end - begin == len,
            "safetensors: tensor {:?} ({dtype} {:?}) needs {len} bytes, data_offsets are [{begin}, {end}]",
            e.name,
            e.shape
        );
        ensure!(
            end <= data.len() as u64,
            "safetensors: truncated, tensor {:?} ends at {end} but the data has {} bytes",
            e.name,
            data.len()
        );
        e.data = data[begin as usize..end as usize].to_vec();
        spans.push((begin, end, e));
    }
    // The spec requires the tensors to tile the data exactly.
    spans.sort_by_key(|s| (s.0, s.1));
    let mut pos = 0u64;
    for (begin, end, e) in &spans {
        ensure!(
            *begin == pos,
            "safetensors: tensor {:?} starts at {begin}, expected {pos} (overlap or gap)",
            e.name
        );
        pos = *end;
    }
    ensure!(
        pos == data.len() as u64,
        "safetensors: {} trailing data bytes after the last tensor",
        data.len() as u64 - pos
    );
    let mut entries: Vec<TensorEntry> = spans.into_iter().map(|s| s.2).collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((entries, metadata))
}

impl Store {
    /// Encodes tensors deterministically ([`encode`]) and stores them as a blob.
    pub fn put_tensors(
        &self,
        entries: &[TensorEntry],
        metadata: &BTreeMap<String, String>,
    ) -> Result<Digest> {
        self.put_blob(&encode(entries, metadata)?)
    }

    /// Reads and decodes a tensors blob; `Ok(None)` on a miss (or a corrupt
    /// blob, see [`Store::get_blob`]).
    pub fn get_tensors(&self, d: &Digest) -> Result<Option<Decoded>> {
        match self.get_blob(d)? {
            Some(bytes) => {
                Ok(Some(decode(&bytes).with_context(|| {
                    format!("blob {d} is not a safetensors file")
                })?))
            }
            None => Ok(None),
        }
    }
}
