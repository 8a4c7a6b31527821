"""CI smoke test of the generator's training recipe: two steps on 40 frames of cap13, ONNX export."""
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
from anoncam.anonymize import facegen as fg
from conftest import REPO


def test_two_training_steps_and_export(tmp_path, cli_env, models):
    out = tmp_path / "g.onnx"
    p = subprocess.run([sys.executable, str(REPO / "models/generator/train.py"), "--smoke", "--out", str(out)],
                       env=cli_env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "step 2 " in p.stdout and out.is_file()
    m = onnx.load(str(out))
    assert m.opset_import[0].version == 17
    assert not {n.op_type for n in m.graph.node} & {"ConvTranspose"}
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, fg.IN_CHANNELS, fg.SIZE, fg.SIZE]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.random((1, fg.IN_CHANNELS, fg.SIZE, fg.SIZE), dtype=np.float32)
    x[:, 10] = (x[:, 10] > 0.5).astype(np.float32)
    y = sess.run(None, {"x": x})[0]
    assert y.shape == (1, 3, fg.SIZE, fg.SIZE) and np.isfinite(y).all()
    outside = x[0, 10] == 0
    assert np.allclose(y[0][:, outside], x[0, 7:10][:, outside], atol=1e-5)  # context passes through
    assert y.min() >= 0 and y.max() <= 1
