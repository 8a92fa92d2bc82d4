"""A PyTorch twin of FlowNet2 for the parity test of mpfnet's candle FlowNet2
(stages/src/flownet2/, stages/tests/flownet2.rs).

The architecture is that of NVIDIA's flownet2-pytorch (models.py: FlowNet2 with
batchNorm=False; networks/FlowNetC.py, FlowNetS.py, FlowNetSD.py, FlowNetFusion.py,
submodules.py), with the same module names (so the same state dict keys), written again here
with a width multiplier on every internal channel count and with the three CUDA extensions
(correlation, resample2d, channelnorm) as plain PyTorch following their kernels.

    python3 stages/bench/flownet2_twin.py            # writes stages/tests/fixtures/flownet2/
    python3 stages/bench/flownet2_twin.py --check-keys stages/tests/fixtures/flownet2/params_full_width.txt

Outputs (random weights, seed 0, width WIDTH, one 64x64 pair):
  twin.pth.tar         torch.save({'state_dict': ..., 'epoch': 0, 'arch': 'FlowNet2'}) (zip format)
  twin_legacy.pth.tar  the same dict in PyTorch's legacy (pre-1.6) serialisation, the format of
                       the published checkpoints
  twin_outputs.safetensors  the input [1, 3, 2, 64, 64] and every sub-network's output
  shapes_full.pth.tar, shapes_missing_key.pth.tar, shapes_wrong_shape.pth.tar
                       full-width state dicts of names and shapes only (every tensor a
                       stride-0 view of one element, so a few KB): as listed in
                       params_full_width.txt, then without `flownets_2.conv4_1.0.weight`, then
                       with `flownetfusion.predict_flow1.bias` of shape [3]
"""
import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

WIDTH = 1.0 / 64
SIZE = 64


def ch(c, width):
    # as FlowNet2Config::ch: round half away from zero, at least 1
    return max(1, int(math.floor(c * width + 0.5)))


def conv(cin, cout, k=3, s=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, (k - 1) // 2, bias=True), nn.LeakyReLU(0.1))


def i_conv(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=True))


def predict_flow(cin):
    return nn.Conv2d(cin, 2, 3, 1, 1, bias=True)


def deconv(cin, cout):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=True), nn.LeakyReLU(0.1))


def correlation(f1, f2, max_disp=20, stride2=2):
    # correlation_cuda_kernel.cu with kernel 1, stride1 1, pad = max displacement
    c, h, w = f1.shape[1:]
    r = max_disp // stride2
    p = F.pad(f2, (max_disp, max_disp, max_disp, max_disp))
    out = []
    for j in range(-r, r + 1):
        for i in range(-r, r + 1):
            y0, x0 = max_disp + j * stride2, max_disp + i * stride2
            out.append((f1 * p[:, :, y0:y0 + h, x0:x0 + w]).sum(1, keepdim=True))
    return torch.cat(out, 1) / c


def resample2d(img, flow):
    # resample2d_kernel.cu, bilinear: taps clamped to the image, weights from the raw position
    b, c, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=img.dtype), torch.arange(w, dtype=img.dtype),
                            indexing="ij")
    xf = xs + flow[:, 0]
    yf = ys + flow[:, 1]
    x0, y0 = torch.floor(xf), torch.floor(yf)
    al, be = (xf - x0).unsqueeze(1), (yf - y0).unsqueeze(1)
    xl = x0.clamp(0, w - 1).long()
    xr = (x0 + 1).clamp(0, w - 1).long()
    yt = y0.clamp(0, h - 1).long()
    yb = (y0 + 1).clamp(0, h - 1).long()
    flat = img.reshape(b, c, h * w)

    def tap(yy, xx):
        idx = (yy * w + xx).reshape(b, 1, h * w).expand(b, c, h * w)
        return flat.gather(2, idx).reshape(b, c, h, w)

    return ((1 - al) * (1 - be) * tap(yt, xl) + al * (1 - be) * tap(yt, xr)
            + (1 - al) * be * tap(yb, xl) + al * be * tap(yb, xr))


def channelnorm(x):
    return x.pow(2).sum(1, keepdim=True).sqrt()


class Refine(nn.Module):
    """Not a module of the original: a mixin holding the decoder of FlowNetC/FlowNetS."""


def add_decoder(m, width, up_bias, inter=False):
    """The decoder from level 6 to 2; `inter`: FlowNetSD's, an i_conv before each prediction."""
    c = lambda n: ch(n, width)  # noqa: E731
    cat5, cat4, cat3, cat2 = (c(512) + c(512) + 2, c(512) + c(256) + 2, c(256) + c(128) + 2,
                              c(128) + c(64) + 2)
    m.deconv5 = deconv(c(1024), c(512))
    m.deconv4 = deconv(cat5, c(256))
    m.deconv3 = deconv(cat4, c(128))
    m.deconv2 = deconv(cat3, c(64))
    if inter:
        m.inter_conv5 = i_conv(cat5, c(512))
        m.inter_conv4 = i_conv(cat4, c(256))
        m.inter_conv3 = i_conv(cat3, c(128))
        m.inter_conv2 = i_conv(cat2, c(64))
    m.predict_flow6 = predict_flow(c(1024))
    m.predict_flow5 = predict_flow(c(512) if inter else cat5)
    m.predict_flow4 = predict_flow(c(256) if inter else cat4)
    m.predict_flow3 = predict_flow(c(128) if inter else cat3)
    m.predict_flow2 = predict_flow(c(64) if inter else cat2)
    m.upsampled_flow6_to_5 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=up_bias)
    m.upsampled_flow5_to_4 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=up_bias)
    m.upsampled_flow4_to_3 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=up_bias)
    m.upsampled_flow3_to_2 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=up_bias)


def add_deep(m, width):
    c = lambda n: ch(n, width)  # noqa: E731
    m.conv4 = conv(c(256), c(512), s=2)
    m.conv4_1 = conv(c(512), c(512))
    m.conv5 = conv(c(512), c(512), s=2)
    m.conv5_1 = conv(c(512), c(512))
    m.conv6 = conv(c(512), c(1024), s=2)
    m.conv6_1 = conv(c(1024), c(1024))


def add_fine(m, width, input_channels):
    """conv0 ... conv2_1: the full- and half-resolution layers of FlowNetSD and FlowNetFusion."""
    c = lambda n: ch(n, width)  # noqa: E731
    m.conv0 = conv(input_channels, c(64))
    m.conv1 = conv(c(64), c(64), s=2)
    m.conv1_1 = conv(c(64), c(128))
    m.conv2 = conv(c(128), c(128), s=2)
    m.conv2_1 = conv(c(128), c(128))


def fine(m, x):
    c0 = m.conv0(x)
    c1 = m.conv1_1(m.conv1(c0))
    return c0, c1, m.conv2_1(m.conv2(c1))


def deep(m, c3):
    c4 = m.conv4_1(m.conv4(c3))
    c5 = m.conv5_1(m.conv5(c4))
    return c4, c5, m.conv6_1(m.conv6(c5))


def decode(m, top, skips):
    """From the coarsest map `top`, for each finer level l in `skips` ((l, map), coarse to fine):
    the map, the deconvolved previous features and the up-sampled flow concatenated, then
    inter_conv<l> where the network has one, then predict_flow<l>."""
    flow = getattr(m, f"predict_flow{skips[0][0] + 1}")(top)
    x = top
    for level, skip in skips:
        up = getattr(m, f"upsampled_flow{level + 1}_to_{level}")
        x = torch.cat((skip, getattr(m, f"deconv{level}")(x), up(flow)), 1)
        flow = getattr(m, f"predict_flow{level}")(getattr(m, f"inter_conv{level}", lambda t: t)(x))
    return flow


def add_tail(m, width, conv3_k, sd):
    """How FlowNetS and FlowNetSD end alike: conv3 (kernel `conv3_k`, stride 2), conv3_1, the
    deep layers and the decoder (`sd`: FlowNetSD's, with biased up-samplers and i_convs)."""
    c = lambda n: ch(n, width)  # noqa: E731
    m.conv3 = conv(c(128), c(256), conv3_k, 2)
    m.conv3_1 = conv(c(256), c(256))
    add_deep(m, width)
    add_decoder(m, width, sd, inter=sd)


def tail(m, c2):
    c3 = m.conv3_1(m.conv3(c2))
    c4, c5, c6 = deep(m, c3)
    return decode(m, c6, [(5, c5), (4, c4), (3, c3), (2, c2)])


class FlowNetC(nn.Module):
    def __init__(self, width):
        super().__init__()
        c = lambda n: ch(n, width)  # noqa: E731
        self.conv1 = conv(3, c(64), 7, 2)
        self.conv2 = conv(c(64), c(128), 5, 2)
        self.conv3 = conv(c(128), c(256), 5, 2)
        self.conv_redir = conv(c(256), c(32), 1, 1)
        self.conv3_1 = conv(c(32) + 441, c(256))
        add_deep(self, width)
        add_decoder(self, width, True)

    def forward(self, x):
        x1, x2 = x[:, 0:3], x[:, 3:]
        c2a = self.conv2(self.conv1(x1))
        c3a = self.conv3(c2a)
        c3b = self.conv3(self.conv2(self.conv1(x2)))
        corr = F.leaky_relu(correlation(c3a, c3b), 0.1)
        c3_1 = self.conv3_1(torch.cat((self.conv_redir(c3a), corr), 1))
        c4, c5, c6 = deep(self, c3_1)
        return decode(self, c6, [(5, c5), (4, c4), (3, c3_1), (2, c2a)])


class FlowNetS(nn.Module):
    def __init__(self, width, input_channels=12):
        super().__init__()
        c = lambda n: ch(n, width)  # noqa: E731
        self.conv1 = conv(input_channels, c(64), 7, 2)
        self.conv2 = conv(c(64), c(128), 5, 2)
        add_tail(self, width, 5, False)

    def forward(self, x):
        return tail(self, self.conv2(self.conv1(x)))


class FlowNetSD(nn.Module):
    def __init__(self, width):
        super().__init__()
        add_fine(self, width, 6)
        add_tail(self, width, 3, True)

    def forward(self, x):
        _, _, c2 = fine(self, x)
        return tail(self, c2)


class FlowNetFusion(nn.Module):
    def __init__(self, width):
        super().__init__()
        c = lambda n: ch(n, width)  # noqa: E731
        cat1, cat0 = c(128) + c(32) + 2, c(64) + c(16) + 2
        add_fine(self, width, 11)
        self.deconv1 = deconv(c(128), c(32))
        self.deconv0 = deconv(cat1, c(16))
        self.inter_conv1 = i_conv(cat1, c(32))
        self.inter_conv0 = i_conv(cat0, c(16))
        self.predict_flow2 = predict_flow(c(128))
        self.predict_flow1 = predict_flow(c(32))
        self.predict_flow0 = predict_flow(c(16))
        self.upsampled_flow2_to_1 = nn.ConvTranspose2d(2, 2, 4, 2, 1)
        self.upsampled_flow1_to_0 = nn.ConvTranspose2d(2, 2, 4, 2, 1)

    def forward(self, x):
        c0, c1, c2 = fine(self, x)
        return decode(self, c2, [(1, c1), (0, c0)])


class FlowNet2(nn.Module):
    def __init__(self, width, div_flow=20.0, rgb_max=255.0):
        super().__init__()
        self.div_flow, self.rgb_max = div_flow, rgb_max
        self.flownetc = FlowNetC(width)
        self.flownets_1 = FlowNetS(width)
        self.flownets_2 = FlowNetS(width)
        self.flownets_d = FlowNetSD(width)
        self.flownetfusion = FlowNetFusion(width)

    def forward(self, inputs):
        """models.py FlowNet2.forward, returning every sub-network's output."""
        b = inputs.shape[0]
        rgb_mean = inputs.contiguous().view(b, 3, -1).mean(-1).view(b, 3, 1, 1, 1)
        x = (inputs - rgb_mean) / self.rgb_max
        x1, x2 = x[:, :, 0], x[:, :, 1]
        x = torch.cat((x1, x2), 1)
        up_bl = lambda t: F.interpolate(t, scale_factor=4, mode="bilinear", align_corners=False)  # noqa: E731
        up_nn = lambda t: F.interpolate(t, scale_factor=4, mode="nearest")  # noqa: E731
        d = self.div_flow

        fc = self.flownetc(x)
        flow = up_bl(fc * d)
        warped = resample2d(x[:, 3:], flow)
        concat1 = torch.cat((x, warped, flow / d, channelnorm(x[:, :3] - warped)), 1)

        fs1 = self.flownets_1(concat1)
        flow = up_bl(fs1 * d)
        warped = resample2d(x[:, 3:], flow)
        concat2 = torch.cat((x, warped, flow / d, channelnorm(x[:, :3] - warped)), 1)

        fs2 = self.flownets_2(concat2)
        flow_s2 = up_nn(fs2 * d)
        norm_s2 = channelnorm(flow_s2)
        err_s2 = channelnorm(x[:, :3] - resample2d(x[:, 3:], flow_s2))

        fsd = self.flownets_d(x)
        flow_sd = up_nn(fsd / d)
        norm_sd = channelnorm(flow_sd)
        err_sd = channelnorm(x[:, :3] - resample2d(x[:, 3:], flow_sd))

        concat3 = torch.cat((x[:, :3], flow_sd, flow_s2, norm_sd, norm_s2, err_sd, err_s2), 1)
        fused = self.flownetfusion(concat3)
        return {"flownetc": fc, "flownets_1": fs1, "flownets_2": fs2, "flownets_d": fsd,
                "flownetfusion": fused}


def init_weights(net, gen):
    # xavier-uniform weights (as models.py); small biases keep random activations in range
    for name, p in net.named_parameters():
        if name.endswith("bias"):
            p.data.copy_((torch.rand(p.shape, generator=gen) - 0.5) * 0.2)
        else:
            fan_in = p.shape[1] * p[0, 0].numel()
            fan_out = p.shape[0] * p[0, 0].numel()
            a = math.sqrt(6.0 / (fan_in + fan_out))
            p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * a)


def pair(gen):
    """Two smooth RGB images in [0, 255], the second the first moved by about (2, -1) px."""
    ys, xs = np.mgrid[0:SIZE + 8, 0:SIZE + 8].astype(np.float64)
    rng = np.random.default_rng(0)
    img = np.zeros((3, SIZE + 8, SIZE + 8))
    for c in range(3):
        for _ in range(6):
            fx, fy, ph = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 6.3)
            img[c] += np.sin(fx * xs + fy * ys + ph)
    img = (img - img.min()) / (img.max() - img.min()) * 255.0
    a = img[:, 4:4 + SIZE, 4:4 + SIZE]
    b = img[:, 5:5 + SIZE, 2:2 + SIZE]
    t = torch.tensor(np.stack([a, b], 1)[None], dtype=torch.float32)  # [1, 3, 2, H, W]
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                   "..", "tests", "fixtures", "flownet2"))
    ap.add_argument("--check-keys", help="params_full_width.txt: check the full-width twin's keys")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.check_keys:
        want = [l.split() for l in open(args.check_keys) if not l.startswith("#")]
        sd = FlowNet2(1.0).state_dict()
        got = [[k] + [str(d) for d in v.shape] for k, v in sd.items()]
        assert got == want, "the twin's full-width keys differ from the list"
        print(f"full-width twin: {len(got)} tensors, names and shapes as listed")
        return
    gen = torch.Generator().manual_seed(0)
    net = FlowNet2(WIDTH)
    init_weights(net, gen)
    net.eval()
    inputs = pair(gen)
    with torch.no_grad():
        outs = net(inputs)
    os.makedirs(args.out, exist_ok=True)
    sd = net.state_dict()
    ck = {"arch": "FlowNet2", "epoch": 0, "state_dict": sd, "best_EPE": 0.0}
    torch.save(ck, os.path.join(args.out, "twin.pth.tar"))
    torch.save(ck, os.path.join(args.out, "twin_legacy.pth.tar"),
               _use_new_zipfile_serialization=False)
    one = torch.zeros(1)
    full = {k: one.expand(v.shape) for k, v in FlowNet2(1.0).state_dict().items()}
    torch.save({"state_dict": full}, os.path.join(args.out, "shapes_full.pth.tar"))
    missing = {k: v for k, v in full.items() if k != "flownets_2.conv4_1.0.weight"}
    torch.save({"state_dict": missing}, os.path.join(args.out, "shapes_missing_key.pth.tar"))
    wrong = dict(full)
    wrong["flownetfusion.predict_flow1.bias"] = one.expand(3)
    torch.save({"state_dict": wrong}, os.path.join(args.out, "shapes_wrong_shape.pth.tar"))
    tensors = {"inputs": inputs.contiguous()}
    tensors.update({k: v.contiguous() for k, v in outs.items()})
    save_file(tensors, os.path.join(args.out, "twin_outputs.safetensors"),
              metadata={"width": repr(WIDTH), "torch": torch.__version__})
    n = sum(p.numel() for p in sd.values())
    print(f"width {WIDTH}: {len(sd)} tensors, {n} parameters")
    for k, v in outs.items():
        print(f"{k:14s} {list(v.shape)} max |v| {v.abs().max().item():.4g}")


if __name__ == "__main__":
    main()
