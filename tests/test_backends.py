"""The inference backends and their fallbacks, on the real models."""
import logging

import numpy as np
import pytest
from anoncam.backends import open_model
from anoncam.capture import SourceError, open_source
from conftest import make_config


def test_litert_runs_facemesh(models):
    b = open_model(models["facemesh"], "tflite", threads=1)
    assert b.input_shape == (1, 192, 192, 3)
    outs = b.run(np.zeros((1, 192, 192, 3), np.float32))
    assert sorted(o.size for o in outs) == [1, 1404]


def test_edgetpu_delegate_missing_falls_back_with_a_message(models, caplog):
    with caplog.at_level(logging.WARNING):
        b = open_model(models["facemesh"], "tflite", delegate="edgetpu")
    assert b.delegate == "none"
    assert "libedgetpu.so.1" in caplog.text and "CPU" in caplog.text


def test_missing_onnx_provider_is_skipped_with_a_warning(models, caplog):
    with caplog.at_level(logging.WARNING):
        b = open_model(models["yunet"], "onnx", providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    assert b.providers == ["CPUExecutionProvider"]
    assert "CUDAExecutionProvider" in caplog.text


def test_picamera2_absent_here_gives_install_hint():
    """picamera2 cannot be installed on x86; the adapter says how to get it on a Pi."""
    with pytest.raises(SourceError, match="python3-picamera2"):
        open_source(make_config(camera={"source": "picamera2"}).camera)


def test_opencv_url_source_reads_and_reconnects(media, tmp_path):
    """An HTTP camera URL read through OpenCV; when the stream ends it is reopened with backoff."""
    import functools
    import http.server
    import threading

    import cv2

    clip = tmp_path / "cam.avi"
    cap = cv2.VideoCapture(str(media["cap13"]))
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25, (400, 300))
    for _ in range(20):
        w.write(cap.read()[1])
    w.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = open_source(make_config(camera={"source": f"http://127.0.0.1:{server.server_port}/cam.avi"}).camera)
        frames = []
        for f in src:
            frames.append(f.image.shape)
            if len(frames) == 30:
                break
        src.close()
    finally:
        server.shutdown()
    assert frames == [(300, 400, 3)] * 30
    assert src.reconnects >= 1


def test_litert_quantization_follows_the_tensor_dtype():
    """One (de)quantization rule for every LiteRT model: clip to the tensor's own integer range (a
    uint8 input keeps 0..255; the YuNet TFLite adapter used to clip every dtype to -128..127)."""
    from anoncam.backends.litert import from_output, to_input
    x = np.array([-10.0, 0.0, 100.0, 200.0, 300.0], np.float32)
    u8 = to_input(x, {"dtype": np.uint8, "quantization": (1.0, 0)})
    assert u8.dtype == np.uint8 and u8.tolist() == [0, 0, 100, 200, 255]
    i8 = to_input(x, {"dtype": np.int8, "quantization": (2.0, -10)})
    assert i8.tolist() == [-15, -10, 40, 90, 127]
    assert from_output(i8, {"quantization": (2.0, -10)}).tolist() == [-10.0, 0.0, 100.0, 200.0, 274.0]
    assert to_input(x, {"dtype": np.float32, "quantization": (0.0, 0)}) is x
