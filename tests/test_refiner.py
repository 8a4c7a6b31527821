"""The experimental refiner hook (models/refiner; no refiner ships): its change reaches the frame
only inside the covered face, a refiner that changes nothing changes nothing, and the identity
choice never sees it. Refiners here are two-node ONNX graphs built in the test (no training)."""
import cv2
import numpy as np
import onnx
from anoncam.anonymize import facegen as fg
from anoncam.anonymize import generative as gen
from anoncam.backends import open_model
from anoncam.eval.metrics import Instruments
from anoncam.types import Face
from onnx import TensorProto, helper


def graph(path, add: float):
    """y = x[:, :3] + add: a 'refiner' with the shipped interface (1x4x128x128 -> 1x3x128x128)."""
    s = fg.SIZE
    nodes = [helper.make_node("Slice", ["x", "s0", "s1", "ax"], ["c"]),
             helper.make_node("Add", ["c", "k"], ["y"])]
    inits = [helper.make_tensor("s0", TensorProto.INT64, [1], [0]), helper.make_tensor("s1", TensorProto.INT64, [1], [3]),
             helper.make_tensor("ax", TensorProto.INT64, [1], [1]), helper.make_tensor("k", TensorProto.FLOAT, [], [add])]
    g = helper.make_graph(nodes, "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, s, s])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, s, s])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return open_model(path, "onnx", threads=1)


def test_refiner_changes_only_the_covered_face(models, media, tmp_path):
    img = cv2.resize(cv2.imread(str(media["astronaut"])), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    inst = Instruments()
    det = inst.main_face(img)
    pts = inst.landmarks(img, det)
    face = Face(track_id=3, box=det.box, detected=True, landmarks=pts)
    g = gen.Generative()
    g.prepare()
    h, w = img.shape[:2]
    outs = {}
    for name, add in (("none", None), ("same", 0.0), ("bright", 0.2)):
        g.refiner = None if add is None else graph(tmp_path / f"{name}.onnx", add)
        g._tracks.clear()  # choose again: the choice must not depend on the refiner
        outs[name] = g(img.copy(), float(det.size), face=face, frame=img, roi_box=(0, 0, w, h), key=b"k" * 32)
        outs[name + "_id"] = g.identity(b"k" * 32, 3, img, pts)
    assert outs["none_id"] == outs["same_id"] == outs["bright_id"]
    assert np.array_equal(outs["none"], outs["same"])
    diff = np.abs(outs["bright"].astype(int) - outs["none"].astype(int)).max(2)
    poly = fg.oval_polygon(pts, 1.4)
    c = poly.mean(0)
    inside, near = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    cv2.fillPoly(inside, [np.round(poly).astype(np.int32)], 1)
    # the covered polygon's soft edge (sharpening, gen.EDGE_SOFT) reaches a little past it
    cv2.fillPoly(near, [np.round(c + (poly - c) * 1.1).astype(np.int32)], 1)
    core = cv2.erode(inside, np.ones((25, 25), np.uint8)) > 0
    assert np.median(diff[core]) > 30  # +0.2 = 51 levels, less clipping of bright skin
    assert diff[near == 0].max() == 0
