"""OpenCV DualTVL1 on the pairs written by `cargo run --release --example bench_prep`.

Usage: python3 bench/opencv_tvl1.py bench/out   (needs opencv-contrib-python-headless, numpy)
Reads <id>_a.png, <id>_b.png (flow from a to b) and <id>_flow.f32 (u then v, H*W each, f32 LE),
writes bench/out/opencv.json: {id: {"default": {"epe", "ms"}, "nscales6": {...}}}.
"""
import glob, json, os, sys, time
import cv2
import numpy as np

out = sys.argv[1] if len(sys.argv) > 1 else "bench/out"
cv2.setNumThreads(2)
res = {}
for fa in sorted(glob.glob(os.path.join(out, "*_a.png"))):
    pid = os.path.basename(fa)[:-6]
    a = cv2.cvtColor(cv2.imread(fa), cv2.COLOR_BGR2GRAY)
    b = cv2.cvtColor(cv2.imread(os.path.join(out, pid + "_b.png")), cv2.COLOR_BGR2GRAY)
    h, w = a.shape
    gt = np.fromfile(os.path.join(out, pid + "_flow.f32"), dtype="<f4").reshape(2, h, w)
    res[pid] = {}
    for key, make in [
        ("default", lambda: cv2.optflow.DualTVL1OpticalFlow_create()),
        ("nscales6", lambda: cv2.optflow.DualTVL1OpticalFlow_create(nscales=6, scaleStep=0.5)),
    ]:
        est = make()
        flow = est.calc(a, b, None)
        times = []
        for _ in range(7):
            t = time.perf_counter()
            est.calc(a, b, None)
            times.append((time.perf_counter() - t) * 1e3)
        epe = float(np.mean(np.hypot(flow[..., 0] - gt[0], flow[..., 1] - gt[1])))
        res[pid][key] = {"epe": epe, "ms": float(np.median(times))}
        print(f"{pid:<14} {key:<9} EPE {epe:.4f}  {np.median(times):.1f} ms")
json.dump(res, open(os.path.join(out, "opencv.json"), "w"), indent=1)
