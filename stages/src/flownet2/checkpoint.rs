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
use candle_core::{DType, Device, Shape, Tensor};
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

/// Where a checkpoint's tensors are: a zip archive (candle's reader) or a legacy file.
enum Source {
    Zip(candle_core::pickle::PthTensors),
    Legacy {
        infos: Vec<TensorInfo>,
        /// storage key -> (byte offset of its data in the file, bytes)
        storages: HashMap<String, (u64, u64)>,
    },
}

/// A checkpoint's parameter table: names (with `module.` stripped when every key has it) and
/// shapes, read without the weights.
pub struct Checkpoint {
    path: std::path::PathBuf,
    source: Source,
    /// our name -> name in the file
    names: BTreeMap<String, String>,
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
        let source = if &head == b"PK" {
            let pth = candle_core::pickle::PthTensors::new(path, Some("state_dict"))
                .or_else(|_| candle_core::pickle::PthTensors::new(path, None))
                .with_context(|| {
                    format!("{}: not a readable PyTorch checkpoint", path.display())
                })?;
            Source::Zip(pth)
        } else {
            read_legacy(path)
                .with_context(|| format!("{}: not a readable PyTorch checkpoint", path.display()))?
        };
        let infos: Vec<(String, Vec<usize>)> = match &source {
            Source::Zip(p) => p
                .tensor_infos()
                .values()
                .map(|t| (t.name.clone(), t.layout.dims().to_vec()))
                .collect(),
            Source::Legacy { infos, .. } => infos
                .iter()
                .map(|t| (t.name.clone(), t.layout.dims().to_vec()))
                .collect(),
        };
        if infos.is_empty() {
            bail!(
                "{}: no tensors found (expected a state dict, or a dict with `state_dict`)",
                path.display()
            );
        }
        let strip = infos.iter().all(|(n, _)| n.starts_with("module."));
        let mut names = BTreeMap::new();
        let mut shapes = HashMap::new();
        for (n, s) in infos {
            let ours = if strip {
                n["module.".len()..].to_string()
            } else {
                n.clone()
            };
            shapes.insert(ours.clone(), s);
            names.insert(ours, n);
        }
        Ok(Self {
            path: path.to_path_buf(),
            source,
            names,
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
        if let Some(extra) = self.names.keys().find(|n| !known.contains(n.as_str())) {
            bail!("FlowNet2 checkpoint {p}: unexpected parameter `{extra}` (not part of FlowNet2)");
        }
        Ok(())
    }

    /// Every tensor of `specs`, as f32 on `dev`.
    pub fn tensors(&self, specs: &[ParamSpec], dev: &Device) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        match &self.source {
            Source::Zip(pth) => {
                for (name, _) in specs {
                    let t = pth
                        .get(&self.names[name])?
                        .with_context(|| format!("{}: `{name}` unreadable", self.path.display()))?;
                    out.insert(name.clone(), t.to_dtype(DType::F32)?.to_device(dev)?);
                }
            }
            Source::Legacy { infos, storages } => {
                let by_name: HashMap<&str, &TensorInfo> =
                    infos.iter().map(|t| (t.name.as_str(), t)).collect();
                let mut f = BufReader::new(std::fs::File::open(&self.path)?);
                for (name, _) in specs {
                    let info = by_name[self.names[name].as_str()];
                    let t = legacy_tensor(&mut f, info, storages)
                        .with_context(|| format!("{}: reading `{name}`", self.path.display()))?;
                    out.insert(name.clone(), t.to_dtype(DType::F32)?.to_device(dev)?);
                }
            }
        }
        Ok(out)
    }
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

fn read_legacy(path: &Path) -> Result<Source> {
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
    Ok(Source::Legacy { infos, storages })
}

fn short(o: &Object) -> String {
    let s = format!("{o:?}");
    s.chars().take(80).collect()
}

fn storage_key(t: &TensorInfo) -> &str {
    t.path.trim_start_matches('/')
}

fn legacy_tensor<R: Read + Seek>(
    f: &mut R,
    t: &TensorInfo,
    storages: &HashMap<String, (u64, u64)>,
) -> Result<Tensor> {
    let (pos, bytes) = *storages
        .get(storage_key(t))
        .with_context(|| format!("storage {} not in the file", t.path))?;
    if !t.layout.is_contiguous() {
        bail!("non-contiguous tensor {:?}", t.layout);
    }
    let n = t.layout.shape().elem_count() * t.dtype.size_in_bytes();
    let start = t.layout.start_offset() as u64;
    if start + n as u64 > bytes {
        bail!("tensor extends past its storage");
    }
    f.seek(SeekFrom::Start(pos + start))?;
    let mut buf = vec![0u8; n];
    f.read_exact(&mut buf)?;
    Ok(Tensor::from_raw_buffer(
        &buf,
        t.dtype,
        t.layout.dims(),
        &Device::Cpu,
    )?)
}
