"""PyTorch twin of `stages/examples/bench_step.rs` (CaI3dConfig::bench): one CA-I3D
training step (forward, backward, SGD-momentum update), median wall ms and peak RSS, so the
Rust figures can be measured beside PyTorch on the same machine and shapes.

    pip install torch   # CPU run; the CUDA wheels import fine without a GPU
    python3 stages/bench/pytorch_step.py --batch 4 --size 128 [--threads 2] [--steps 3]

Same widths, ops and order as the Rust model: Unit3D = Conv3d (no bias) + BN + ReLU;
Inception-v1 branches 1x1 / 1x1->3x3x3 / 1x1->3x3x3 / maxpool 3x3x3 s1 -> 1x1; Coordinate
Attention over T, H and W (mean pools, shared 1x1 conv + BN + h-swish, one 1x1 conv + sigmoid
per axis); max pool 1x3x3 s(1,2,2) between blocks; adaptive avg pool 1x4x4 -> Linear 128.
"""
import argparse, resource, statistics, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class Unit3d(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class CoordAttention3d(nn.Module):
    def __init__(self, c):
        super().__init__()
        mip = max(c // 32, 8)
        self.conv1 = nn.Conv1d(c, mip, 1)
        self.bn = nn.BatchNorm1d(mip, eps=1e-3, momentum=0.01)
        self.conv_t, self.conv_h, self.conv_w = (nn.Conv1d(mip, c, 1) for _ in range(3))

    def forward(self, x):
        b, c, t, h, w = x.shape
        z = torch.cat([x.mean((3, 4)), x.mean((2, 4)), x.mean((2, 3))], 2)  # [B, C, T+H+W]
        y = F.hardswish(self.bn(self.conv1(z)))
        yt, yh, yw = torch.split(y, [t, h, w], 2)
        at = torch.sigmoid(self.conv_t(yt)).view(b, c, t, 1, 1)
        ah = torch.sigmoid(self.conv_h(yh)).view(b, c, 1, h, 1)
        aw = torch.sigmoid(self.conv_w(yw)).view(b, c, 1, 1, w)
        return x * (at * ah * aw)


class Inception3d(nn.Module):
    def __init__(self, cin, wd):
        super().__init__()
        self.b0 = Unit3d(cin, wd[0], 1)
        self.b1a, self.b1b = Unit3d(cin, wd[1], 1), Unit3d(wd[1], wd[2], 3)
        self.b2a, self.b2b = Unit3d(cin, wd[3], 1), Unit3d(wd[3], wd[4], 3)
        self.b3b = Unit3d(cin, wd[5], 1)
        self.out_channels = wd[0] + wd[2] + wd[4] + wd[5]
        self.ca = CoordAttention3d(self.out_channels)

    def forward(self, x):
        y = torch.cat([
            self.b0(x),
            self.b1b(self.b1a(x)),
            self.b2b(self.b2a(x)),
            self.b3b(F.max_pool3d(x, 3, 1, 1)),
        ], 1)
        return self.ca(y)


class CaI3d(nn.Module):
    def __init__(self, paper=False):
        super().__init__()
        if paper:  # CaI3dConfig::paper: I3D's stem and Mixed_3b/3c, 512-d embedding
            stem, wd0, wd1, embed = 64, [64, 96, 128, 16, 32, 32], [128, 128, 192, 32, 96, 64], 512
        else:  # CaI3dConfig::bench
            stem, wd0, wd1, embed = 32, [32, 48, 64, 8, 16, 16], [32, 48, 64, 8, 16, 16], 128
        self.stem = Unit3d(5, stem, 3)
        self.mixed_0 = Inception3d(stem, wd0)
        self.mixed_1 = Inception3d(self.mixed_0.out_channels, wd1)
        self.embed = nn.Linear(self.mixed_1.out_channels * 16, embed)

    def forward(self, x):
        pool = lambda y: F.max_pool3d(y, (1, 3, 3), (1, 2, 2), (0, 1, 1))
        y = self.mixed_1(pool(self.mixed_0(pool(self.stem(x)))))
        return self.embed(F.adaptive_avg_pool3d(y, (1, 4, 4)).flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda:0")
    ap.add_argument("--paper", action="store_true", help="I3D widths (stem 64, Mixed_3b/3c), as CaI3dConfig::paper")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(1)
    torch.set_num_threads(a.threads)
    model = (CaI3d(paper=True) if a.paper else CaI3d()).train().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 5, a.frames, a.size, a.size).to(dev)
    times, fwd, cpu = [], [], []
    for _ in range(a.steps + 1):
        c0, t0 = time.process_time(), time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(x).square().mean()
        fwd.append((time.perf_counter() - t0) * 1e3)
        loss.backward()
        opt.step()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    times, fwd, cpu = times[1:], fwd[1:], cpu[1:]  # drop the warm-up step
    params = sum(p.numel() for p in model.parameters())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"pytorch {torch.__version__} b{a.batch} {a.frames}x{a.size}x{a.size} threads={a.threads}: "
          f"step median {statistics.median(times):.0f} ms (fwd {statistics.median(fwd):.0f} ms, "
          f"min {min(times):.0f}, max {max(times):.0f}, n={len(times)}), cpu {statistics.median(cpu):.0f} ms/step, "
          f"peak RSS {rss:.0f} MiB, params {params}")


if __name__ == "__main__":
    main()
