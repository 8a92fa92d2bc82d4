//! Loading flownet2-pytorch checkpoints (`FlowNet2_checkpoint.pth.tar`: a `torch.save`d dict
//! whose `state_dict` holds the weights) as they are, no conversion step:
//!
//! - the zip format of PyTorch >= 1.6 through candle's own reader (`candle_core::pickle`);
//! - the legacy format (PyTorch < 1.6, `_use_new_zipfile_serialization=False`, what the
//!   published checkpoints of 2017-2018 are): five pickles in a row (magic number, protocol,
//!   system info, the object with storages as persistent ids, the storage keys), then every
//!   storage as an int64 element count and its raw little-endian bytes. The pickles are read
//!   with candle's `Stack`; the storages here.
//!
//! Before any weight is read, the names and shapes are checked against the model's (see
//! [`param_specs`]): the first missing or mis-shaped parameter is named in the error.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{DType, Device, Layout, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::nets::{FlowNet2, FlowNet2Config};

/// A parameter's name (the state dict key) and shape.
pub type ParamSpec = (String, Vec<usize>);

/// Records what a model asks its `VarBuilder` for, without allocating anything.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<ParamSpec>>>);

impl SimpleBackend for Recorder {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.0
            .lock()
            .unwrap()
            .push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("recorder: unchecked access to {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The parameters FlowNet2 at `cfg` has, in the order the original builds its modules.
pub fn param_specs(cfg: &FlowNet2Config) -> Result<Vec<ParamSpec>> {
    let rec = Recorder::default();
    let vb = VarBuilder::from_backend(Box::new(rec.clone()), DType::F32, Device::Cpu);
    FlowNet2::new(vb, cfg)?;
    let v = rec.0.lock().unwrap().clone();
    Ok(v)
}

/// Where a checkpoint's storages are: entries of a zip archive, or byte ranges of a legacy file.
enum Source {
    Zip,
    Legacy {
        /// storage key -> (byte offset of its data in the file, bytes)
        storages: HashMap<String, (u64, u64)>,
    },
}

/// A checkpoint's parameter table: names (with `module.` stripped when every key has it) and
/// shapes, read without the weights.
pub struct Checkpoint {
    path: std::path::PathBuf,
    source: Source,
    /// our name -> the tensor as the file describes it (its name there, storage and layout)
    infos: BTreeMap<String, TensorInfo>,
    shapes: HashMap<String, Vec<usize>>,
}

impl Checkpoint {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut f = std::fs::File::open(path)
            .with_context(|| format!("cannot open FlowNet2 checkpoint {}", path.display()))?;
        let mut head = [0u8; 2];
        f.read_exact(&mut head)
            .with_context(|| format!("{}: too short for a PyTorch checkpoint", path.display()))?;
        let (source, infos) = if &head == b"PK" {
            // candle's reader parses the pickle; the bytes are read here, strides and all
            let pth = candle_core::pickle::PthTensors::new(path, Some("state_dict"))
                .or_else(|_| candle_core::pickle::PthTensors::new(path, None))
                .with_context(|| {
                    format!("{}: not a readable PyTorch checkpoint", path.display())
                })?;
            let infos = pth.tensor_infos().values().cloned().collect();
            (Source::Zip, infos)
        } else {
            read_legacy(path)
                .with_context(|| format!("{}: not a readable PyTorch checkpoint", path.display()))?
        };
        if infos.is_empty() {
            bail!(
                "{}: no tensors found (expected a state dict, or a dict with `state_dict`)",
                path.display()
            );
        }
        let strip = infos.iter().all(|t| t.name.starts_with("module."));
        let mut by_name = BTreeMap::new();
        let mut shapes = HashMap::new();
        for t in infos {
            let ours = match strip {
                true => t.name["module.".len()..].to_string(),
                false => t.name.clone(),
            };
            shapes.insert(ours.clone(), t.layout.dims().to_vec());
            by_name.insert(ours, t);
        }
        Ok(Self {
            path: path.to_path_buf(),
            source,
            infos: by_name,
            shapes,
        })
    }

    /// Names and shapes of the tensors in the file.
    pub fn shapes(&self) -> &HashMap<String, Vec<usize>> {
        &self.shapes
    }

    /// Refuses a checkpoint that does not fit `specs`, naming the first (in module order)
    /// missing or mis-shaped parameter, else the first unexpected one.
    pub fn check(&self, specs: &[ParamSpec]) -> Result<()> {
        let p = self.path.display();
        for (name, shape) in specs {
            match self.shapes.get(name) {
                None => bail!(
                    "FlowNet2 checkpoint {p}: missing parameter `{name}` (shape {shape:?}); \
                     {} of the {} parameters FlowNet2 needs are missing",
                    specs.iter().filter(|(n, _)| !self.shapes.contains_key(n)).count(),
                    specs.len()
                ),
                Some(s) if s != shape => bail!(
                    "FlowNet2 checkpoint {p}: parameter `{name}` has shape {s:?}, expected {shape:?}"
                ),
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> =
            specs.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(extra) = self.infos.keys().find(|n| !known.contains(n.as_str())) {
            bail!("FlowNet2 checkpoint {p}: unexpected parameter `{extra}` (not part of FlowNet2)");
        }
        // every view must lie inside its storage, so that reading the weights cannot fail later
        for (name, _) in specs {
            let t = &self.infos[name];
            let (first, len) = span(&t.layout, t.dtype);
            let have = self.storage_bytes(t);
            if first + len > have {
                bail!(
                    "FlowNet2 checkpoint {p}: parameter `{name}` reaches byte {} of its storage \
                     `{}`, which holds {have}",
                    first + len,
                    t.path
                );
            }
        }
        Ok(())
    }

    /// Bytes of the storage behind `t`, as the file declares them.
    fn storage_bytes(&self, t: &TensorInfo) -> u64 {
        match &self.source {
            Source::Zip => (t.storage_size * t.dtype.size_in_bytes()) as u64,
            Source::Legacy { storages } => storages.get(storage_key(t)).map_or(0, |s| s.1),
        }
    }

    /// Every tensor of `specs`, as f32 on `dev`. Views are gathered through their strides and
    /// offset (a tensor saved as a slice, a transpose or an `expand` reads as its values).
    pub fn tensors(&self, specs: &[ParamSpec], dev: &Device) -> Result<HashMap<String, Tensor>> {
        let mut file = BufReader::new(std::fs::File::open(&self.path)?);
        let mut zip = match self.source {
            Source::Zip => Some(zip::ZipArchive::new(BufReader::new(std::fs::File::open(
                &self.path,
            )?))?),
            Source::Legacy { .. } => None,
        };
        let mut out = HashMap::new();
        for (name, _) in specs {
            let t = self
                .read(&self.infos[name], &mut file, zip.as_mut())
                .with_context(|| format!("{}: reading `{name}`", self.path.display()))?;
            out.insert(name.clone(), t.to_dtype(DType::F32)?.to_device(dev)?);
        }
        Ok(out)
    }

    /// One tensor: the bytes of its span, from the legacy file or the archive, gathered.
    fn read(
        &self,
        t: &TensorInfo,
        file: &mut BufReader<std::fs::File>,
        zip: Option<&mut zip::ZipArchive<BufReader<std::fs::File>>>,
    ) -> Result<Tensor> {
        let (first, len) = span(&t.layout, t.dtype);
        let mut buf = vec![0u8; len as usize];
        match (&self.source, zip) {
            (Source::Legacy { storages }, _) => {
                let (pos, _) = storages
                    .get(storage_key(t))
                    .with_context(|| format!("storage {} not in the file", t.path))?;
                file.seek(SeekFrom::Start(pos + first))?;
                file.read_exact(&mut buf)?;
            }
            (Source::Zip, Some(z)) => {
                let mut r = z.by_name(&t.path)?;
                std::io::copy(&mut r.by_ref().take(first), &mut std::io::sink())?;
                r.read_exact(&mut buf)?;
            }
            (Source::Zip, None) => bail!("the archive of {} is not open", self.path.display()),
        }
        gather(&buf, t.dtype, &t.layout)
    }
}

/// The bytes of its storage that a view touches: (first byte, length), from the view's offset to
/// its furthest element.
fn span(l: &Layout, dtype: DType) -> (u64, u64) {
    let size = dtype.size_in_bytes() as u64;
    if l.shape().elem_count() == 0 {
        return (0, 0);
    }
    let last: usize = l
        .dims()
        .iter()
        .zip(l.stride())
        .map(|(d, s)| (d - 1) * s)
        .sum();
    (l.start_offset() as u64 * size, (last as u64 + 1) * size)
}

/// The tensor a strided view describes, from the bytes of its span (see [`span`]): element
/// `i` of the result is the element at `sum(index_k * stride_k)` of the span.
pub(crate) fn gather(span: &[u8], dtype: DType, layout: &Layout) -> Result<Tensor> {
    let dims = layout.dims();
    let size = dtype.size_in_bytes();
    let n = layout.shape().elem_count();
    if layout.is_contiguous() {
        return Ok(Tensor::from_raw_buffer(
            &span[..n * size],
            dtype,
            dims,
            &Device::Cpu,
        )?);
    }
    let stride = layout.stride();
    let mut out = Vec::with_capacity(n * size);
    let mut index = vec![0usize; dims.len()];
    let mut at = 0usize;
    for _ in 0..n {
        out.extend_from_slice(&span[at * size..(at + 1) * size]);
        // odometer over the dims, last fastest, keeping `at` = sum(index * stride)
        for k in (0..dims.len()).rev() {
            index[k] += 1;
            at += stride[k];
            if index[k] < dims[k] {
                break;
            }
            at -= index[k] * stride[k];
            index[k] = 0;
        }
    }
    Ok(Tensor::from_raw_buffer(&out, dtype, dims, &Device::Cpu)?)
}

/// Loads FlowNet2 at `cfg` from a checkpoint, refusing one whose names or shapes differ.
pub fn load(path: impl AsRef<Path>, cfg: &FlowNet2Config, dev: &Device) -> Result<FlowNet2> {
    let ck = Checkpoint::open(path)?;
    let specs = param_specs(cfg)?;
    ck.check(&specs)?;
    let map = ck.tensors(&specs, dev)?;
    Ok(FlowNet2::new(
        VarBuilder::from_tensors(map, DType::F32, dev),
        cfg,
    )?)
}

/// The pickle of the legacy magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
const LEGACY_MAGIC: [u8; 15] = [
    0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
];

fn read_pickle<R: BufRead>(r: &mut R) -> Result<Object> {
    let mut st = Stack::empty();
    st.read_loop(r)?;
    Ok(st.finalize()?)
}

fn read_legacy(path: &Path) -> Result<(Source, Vec<TensorInfo>)> {
    let mut f = BufReader::new(std::fs::File::open(path)?);
    let mut magic = [0u8; 15];
    f.read_exact(&mut magic)?;
    if magic != LEGACY_MAGIC {
        bail!("neither a zip archive nor PyTorch's legacy serialisation (bad magic number)");
    }
    let protocol = read_pickle(&mut f)?;
    if protocol != Object::Int(1001) {
        bail!("unsupported legacy protocol {protocol:?}");
    }
    let _sys_info = read_pickle(&mut f)?;
    let obj = read_pickle(&mut f)?;
    let keys = match read_pickle(&mut f)? {
        Object::List(v) => v
            .into_iter()
            .map(|k| {
                k.unicode()
                    .map_err(|o| anyhow::anyhow!("storage key {o:?}"))
            })
            .collect::<Result<Vec<String>>>()?,
        o => bail!("expected the list of storage keys, got {o:?}"),
    };
    let dict = match obj {
        Object::Dict(kv) => {
            let has_sd = kv
                .iter()
                .any(|(k, _)| *k == Object::Unicode("state_dict".into()));
            if has_sd {
                match kv
                    .into_iter()
                    .find(|(k, _)| *k == Object::Unicode("state_dict".into()))
                {
                    Some((_, Object::Dict(sd))) => sd,
                    _ => bail!("`state_dict` is not a dict"),
                }
            } else {
                kv
            }
        }
        o => bail!("expected a dict, got {}", short(&o)),
    };
    let mut infos = Vec::new();
    for (name, value) in dict {
        if let Some(info) = value.into_tensor_info(name, Path::new(""))? {
            infos.push(info);
        }
    }
    // element sizes per storage key, from the tensors that use them
    let mut elem: HashMap<String, usize> = HashMap::new();
    for t in &infos {
        elem.insert(storage_key(t).to_string(), t.dtype.size_in_bytes());
    }
    let mut storages = HashMap::new();
    let mut pos = f.stream_position()?;
    let len = f.get_ref().metadata()?.len();
    for k in keys {
        let mut n = [0u8; 8];
        f.read_exact(&mut n)
            .with_context(|| format!("storage {k}: truncated file"))?;
        let numel = u64::from_le_bytes(n);
        let size = *elem.get(&k).unwrap_or(&4) as u64;
        let bytes = numel
            .checked_mul(size)
            .with_context(|| format!("storage {k}: bad size"))?;
        pos += 8;
        if pos + bytes > len {
            bail!(
                "storage {k}: truncated file ({} bytes missing)",
                pos + bytes - len
            );
        }
        storages.insert(k, (pos, bytes));
        pos += bytes;
        f.seek(SeekFrom::Start(pos))?;
    }
    Ok((Source::Legacy { storages }, infos))
}

fn short(o: &Object) -> String {
    let s = format!("{o:?}");
    s.chars().take(80).collect()
}

fn storage_key(t: &TensorInfo) -> &str {
    t.path.trim_start_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view's values, read from its storage's bytes the way a checkpoint is read.
    fn via_storage(base: &Tensor, view: &Tensor) -> Vec<f32> {
        let values: Vec<f32> = base.flatten_all().unwrap().to_vec1().unwrap();
        let bytes = mpfnet_cache::tensors::to_le_bytes(&values);
        let (first, len) = span(view.layout(), DType::F32);
        let span = &bytes[first as usize..(first + len) as usize];
        gather(span, DType::F32, view.layout())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn strided_views_read_as_their_values() {
        let base = Tensor::arange(0f32, 60., &Device::Cpu)
            .unwrap()
            .reshape((3, 4, 5))
            .unwrap();
        let views = [
            base.clone(),
            base.narrow(0, 1, 2).unwrap(), // offset, contiguous
            base.transpose(0, 2).unwrap(), // permuted
            base.narrow(2, 1, 3).unwrap().transpose(0, 1).unwrap(), // offset and strides
            base.narrow(1, 3, 1).unwrap().narrow(2, 4, 1).unwrap(), // the last element
            base.narrow(0, 2, 1)
                .unwrap()
                .narrow(1, 0, 1)
                .unwrap()
                .broadcast_as((2, 3, 4, 5))
                .unwrap(), // stride 0, as `expand` saves
        ];
        for v in &views {
            let want: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(via_storage(&base, v), want, "{:?}", v.layout());
        }
    }
}
