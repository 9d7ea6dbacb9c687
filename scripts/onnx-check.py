#!/usr/bin/python3
"""Cross-check an ONNX export with the official onnx package (manual; not part of npm test).

    apt-get install -y python3-onnx          # Debian's onnx (1.12 on bookworm)
    /usr/bin/python3 scripts/onnx-check.py EXPORT_DIR [EXPORT_DIR ...]

For every <component>/model.onnx under each folder: loads it with its external data
(model.onnx_data or weights.pb, resolved next to the model), runs onnx.checker.check_model with
full_check (strict shape inference), and prints IR version, opsets, inputs and outputs.
Exits 1 when any model fails.
"""
import os
import sys

import onnx
from onnx import checker


def describe(values):
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        out.append(f"{v.name}:{onnx.TensorProto.DataType.Name(t.elem_type).lower()}{dims}")
    return ", ".join(out)


def check(path):
    model = onnx.load(path, load_external_data=True)
    checker.check_model(model, full_check=True)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in model.opset_import)
    print(f"OK   {path}: ir {model.ir_version}, opset {opsets}, {len(model.graph.node)} nodes, "
          f"{len(model.graph.initializer)} initializers")
    print(f"       in:  {describe(model.graph.input)}")
    print(f"       out: {describe(model.graph.output)}")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    failed = 0
    for root in argv[1:]:
        models = sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".onnx"))
        if not models:
            print(f"FAIL {root}: no .onnx files")
            failed += 1
        for path in models:
            try:
                check(path)
            except Exception as e:  # report every model, then fail
                print(f"FAIL {path}: {type(e).__name__}: {e}")
                failed += 1
    print(f"onnx {onnx.__version__}: {'all models passed' if not failed else f'{failed} failure(s)'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
