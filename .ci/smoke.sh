#!/usr/bin/env bash
# The installed wheel, used as a person would, in an empty folder outside the checkout: conv1x1 and
# python are the fresh venv's (on PATH).
set -euo pipefail
conv1x1 --version | grep -q "version 0.2.0"
conv1x1 shapes 28x28x192 --filters 32 | grep -q "4,816,896"
python - <<'PY'
import numpy as np
rng = np.random.default_rng(0)
np.save("x.npy", rng.standard_normal((6, 6, 8)).astype(np.float32))
np.save("w.npy", rng.standard_normal((8, 4)).astype(np.float32))
import onnx
from onnx import TensorProto, helper, numpy_helper
weight = np.load("w.npy").T.reshape(4, 8, 1, 1)
graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["output"], name="pw")], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 8, 6, 6])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(weight, "w")])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), "m.onnx")
PY
conv1x1 apply x.npy w.npy -o y.npy -q
conv1x1 apply x.npy "m.onnx#pw" -o z.npy -q
python -c "
import numpy as np
x, w, y, z = (np.load(name) for name in ('x.npy', 'w.npy', 'y.npy', 'z.npy'))
reference = np.maximum(x.astype(np.float64) @ w.astype(np.float64), 0)
assert np.allclose(y, reference, atol=1e-5) and np.allclose(z, reference, atol=1e-5), 'wrong result'"
conv1x1 model m.onnx | grep -q "pointwise"
conv1x1 show y.npy --png y.png
python -c "assert open('y.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'"
echo "smoke test of the installed wheel: passed"
