"""A hostile stand-in for stages/tests/flownet2.rs: shapes_full.pth.tar (see flownet2_twin.py)
with one view that reaches past its storage, the way a truncated or tampered file would.

Every tensor of shapes_full.pth.tar is a stride-0 view of one stored element. Here
`flownetfusion.predict_flow1.bias` ([2]) gets stride 1 instead, so it needs 2 elements of a
1-element storage: the names and shapes are FlowNet2's, and the loader must still refuse the
file before it reads any weight, naming that parameter. Needs no PyTorch: the pickle's bytes are
edited in place (the size and stride tuples are protocol-2 ints).

    python3 stages/bench/flownet2_hostile.py   # writes stages/tests/fixtures/flownet2/shapes_past_storage.pth.tar
"""
import os
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "tests", "fixtures", "flownet2")
SRC = os.path.join(FIX, "shapes_full.pth.tar")
DST = os.path.join(FIX, "shapes_past_storage.pth.tar")
NAME = b"flownetfusion.predict_flow1.bias"

src = zipfile.ZipFile(SRC)
with zipfile.ZipFile(DST, "w", zipfile.ZIP_STORED) as out:
    for info in src.infolist():
        data = src.read(info)
        if info.filename.endswith("data.pkl"):
            at = data.index(NAME)
            # ... storage tuple `Q`, offset `K\x00`, size `(2,)` = `K\x02\x85`, then the memo
            # put, then stride `(0,)` = `K\x00\x85`: make the stride 1
            size = data.index(b"QK\x00K\x02\x85", at) + 6
            stride = data.index(b"K\x00\x85", size)
            assert stride - size <= 8, "unexpected pickle layout"
            data = data[:stride] + b"K\x01\x85" + data[stride + 3:]
        info.filename = info.filename.replace("shapes_full", "shapes_past_storage")
        out.writestr(info, data)
print(DST)
