#!/usr/bin/env python3
"""onnx_check: checks a model written by `arsenal export --onnx` (tests/cli_onnx.sh).

    onnx_check.py --make-input MODEL.onnx PREFIX ROWS SEED [VOCAB]
    onnx_check.py MODEL.onnx PREFIX [--tolerance 1e-5] [--expect-outputs logits,probabilities]
    onnx_check.py --self-test

--make-input writes PREFIX.input.npy: ROWS seeded random float32 samples of
the graph's input shape, standard normal scaled and shifted by the
standardization the graph records (metadata arsenal.data_mean / data_std)
so that the model sees inputs of unit scale; with VOCAB (a model that
starts with an embedding), token ids drawn from [0, VOCAB) with up to
+-0.3 added, which both arsenal and the graph round away. `arsenal predict` then reads
that file (tests/cli_onnx.sh): PREFIX.logits.csv with --logits (a
regression: its outputs), PREFIX.probabilities.csv without.

The check:
1. onnx.checker.check_model(full_check=True) (the structure and ONNX's strict
   shape inference), then the interface arsenal promises: opset 13, one input
   "input" [N, <sample shape>] with a symbolic N, outputs "logits" (and
   "probabilities"), their inferred shapes.
2. Runs the graph on PREFIX.input.npy and compares "logits" with
   PREFIX.logits.csv and "probabilities" with PREFIX.probabilities.csv,
   what `arsenal predict` wrote for the same samples, elementwise
   |onnx - arsenal| / max(1, |arsenal|) <= tolerance, and prints the worst
   difference ("worst relative difference X").

The graph runs on onnx.reference.ReferenceEvaluator when this onnx has it
(1.13 and later), else on onnxruntime when installed, else on the small
numpy evaluator below: a TEST ORACLE written for this check, not a runtime.
It implements the operators arsenal emits from their ONNX specification, in
float64, and refuses any other operator or attribute; --self-test checks it
against the node test cases (inputs, expected outputs) that python3-onnx
ships for those operators.
"""
import argparse
import math
import sys

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

OPSET = 13


# ---- the numpy oracle ---------------------------------------------------------

def attrs_of(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def take(attrs, allowed):
    extra = set(attrs) - set(allowed)
    if extra:
        raise ValueError("attributes %s not implemented by the oracle" % sorted(extra))
    return {k: attrs.get(k, v) for k, v in allowed.items()}


def conv2d(x, w, b, a):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    sh, sw = a["strides"] or [1, 1]
    dh, dw = a["dilations"] or [1, 1]
    pt, pl, pb, pr = a["pads"] or [0, 0, 0, 0]
    g = a["group"]
    assert c == cg * g and o % g == 0, "conv channels"
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, oh, ow))
    og = o // g
    for gi in range(g):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        ws = w[gi * og:(gi + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw]
                y[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def pool2d(x, a, mode):
    kh, kw = a["kernel_shape"]
    sh, sw = a["strides"] or [1, 1]
    pt, pl, pb, pr = a["pads"] or [0, 0, 0, 0]
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    oh = (h + pt + pb - kh) // sh + 1
    ow = (w + pl + pr - kw) // sw + 1
    windows = np.stack([xp[:, :, i: i + sh * (oh - 1) + 1: sh, j: j + sw * (ow - 1) + 1: sw]
                        for i in range(kh) for j in range(kw)])
    if mode == "max":
        return windows.max(axis=0)
    if a["count_include_pad"] != 1 and any(a["pads"] or []):
        raise ValueError("the oracle's AveragePool counts the padding (count_include_pad = 1)")
    return windows.sum(axis=0) / (kh * kw)


erf = np.vectorize(math.erf, otypes=[np.float64])


def rnn(x, w, r, b, a):
    """ONNX RNN, forward, one direction, tanh, h_0 = 0, layout 0 (opset 13):
    H_t = tanh(X_t W^T + H_{t-1} R^T + Wb + Rb); returns Y [T, 1, N, H], Y_h."""
    if a["direction"] != b"forward" and a["direction"] != "forward":
        raise ValueError("the oracle's RNN runs forward only")
    if a["activations"] not in (None, [b"Tanh"], ["Tanh"]):
        raise ValueError("the oracle's RNN uses tanh only")
    hidden = a["hidden_size"]
    assert w.shape[0] == 1 and r.shape == (1, hidden, hidden), "RNN weights"
    bias = np.zeros(2 * hidden) if b is None else b[0]
    h = np.zeros((x.shape[1], hidden))
    ys = []
    for t in range(x.shape[0]):
        h = np.tanh(x[t] @ w[0].T + h @ r[0].T + bias[:hidden] + bias[hidden:])
        ys.append(h)
    y = np.stack(ys)[:, None]
    return [y, y[-1]]


def run_node(node, v):
    op, a = node.op_type, attrs_of(node)
    x = [v[name] if name else None for name in node.input]
    if op == "Gemm":
        a = take(a, {"transA": 0, "transB": 0, "alpha": 1.0, "beta": 1.0})
        A = x[0].T if a["transA"] else x[0]
        B = x[1].T if a["transB"] else x[1]
        y = a["alpha"] * (A @ B)
        return y + a["beta"] * x[2] if len(x) > 2 and x[2] is not None else y
    if op == "Conv":
        a = take(a, {"kernel_shape": None, "strides": None, "pads": None, "dilations": None, "group": 1})
        if a["kernel_shape"] is not None:
            assert list(a["kernel_shape"]) == list(x[1].shape[2:]), "Conv kernel_shape"
        return conv2d(x[0], x[1], x[2] if len(x) > 2 else None, a)
    if op in ("MaxPool", "AveragePool"):
        allowed = {"kernel_shape": None, "strides": None, "pads": None}
        if op == "AveragePool":
            allowed["count_include_pad"] = 0
        return pool2d(x[0], take(a, allowed), "max" if op == "MaxPool" else "avg")
    if op == "GlobalAveragePool":
        take(a, {})
        return x[0].mean(axis=(2, 3), keepdims=True)
    if op == "BatchNormalization":
        a = take(a, {"epsilon": 1e-5, "momentum": 0.9})
        shape = (1, -1) + (1,) * (x[0].ndim - 2)
        scale, bias, mean, var = (t.reshape(shape) for t in x[1:5])
        return (x[0] - mean) / np.sqrt(var + np.float64(np.float32(a["epsilon"]))) * scale + bias
    if op == "ReduceMean":
        a = take(a, {"axes": None, "keepdims": 1})
        return x[0].mean(axis=tuple(a["axes"]), keepdims=bool(a["keepdims"]))
    if op == "Flatten":
        a = take(a, {"axis": 1})
        return x[0].reshape(int(np.prod(x[0].shape[:a["axis"]])), -1)
    if op == "Reshape":
        take(a, {})
        shape = [x[0].shape[i] if s == 0 else int(s) for i, s in enumerate(x[1])]
        return x[0].reshape(shape)
    if op == "MatMul":
        take(a, {})
        return np.matmul(x[0], x[1])
    if op == "Transpose":
        a = take(a, {"perm": None})
        return np.transpose(x[0], a["perm"])
    if op == "Gather":
        a = take(a, {"axis": 0})
        return np.take(x[0], np.asarray(x[1]), axis=a["axis"])
    if op == "Cast":
        a = take(a, {"to": None})
        types = {onnx.TensorProto.FLOAT: np.float64, onnx.TensorProto.INT64: np.int64}   # float64: the oracle's float
        if a["to"] not in types:
            raise ValueError("the oracle casts to float and int64 only")
        if types[a["to"]] is np.int64 and not np.all(np.isfinite(x[0])):
            raise ValueError("a non-finite value cast to int64")
        return np.asarray(x[0]).astype(types[a["to"]])
    if op == "RNN":
        if len(x) > 4 and any(t is not None for t in x[4:]):
            raise ValueError("the oracle's RNN takes no sequence_lens or initial_h")
        a = take(a, {"hidden_size": None, "direction": "forward", "activations": None})
        return rnn(x[0], x[1], x[2], x[3] if len(x) > 3 else None, a)
    if op == "Softmax":
        a = take(a, {"axis": -1})
        e = np.exp(x[0] - x[0].max(axis=a["axis"], keepdims=True))
        return e / e.sum(axis=a["axis"], keepdims=True)
    if op == "LeakyRelu":
        a = take(a, {"alpha": 0.01})
        return np.where(x[0] >= 0, x[0], np.float64(a["alpha"]) * x[0])
    if op == "Elu":
        a = take(a, {"alpha": 1.0})
        return np.where(x[0] > 0, x[0], np.float64(a["alpha"]) * np.expm1(np.minimum(x[0], 0)))
    if op == "Selu":
        a = take(a, {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875})
        return np.float64(a["gamma"]) * np.where(x[0] > 0, x[0], np.float64(a["alpha"]) * np.expm1(np.minimum(x[0], 0)))
    elementwise = {
        "Identity": lambda t: t, "Relu": lambda t: np.maximum(t, 0), "Sigmoid": lambda t: 1 / (1 + np.exp(-t)),
        "Tanh": np.tanh, "Sqrt": np.sqrt, "Erf": erf, "Round": np.round,   # np.round: half to even, as ONNX
    }
    binary = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
    if op in elementwise:
        take(a, {})
        return elementwise[op](x[0])
    if op in binary:
        take(a, {})
        return binary[op](x[0], x[1])
    raise ValueError("operator %s is not implemented by the oracle" % op)


def run_oracle(model, feeds):
    v = {init.name: numpy_helper.to_array(init).astype(np.float64) if init.data_type == onnx.TensorProto.FLOAT
         else numpy_helper.to_array(init) for init in model.graph.initializer}
    v.update({k: t.astype(np.float64) for k, t in feeds.items()})
    for node in model.graph.node:   # topologically sorted, as the checker requires
        try:
            y = run_node(node, v)
            for name, t in zip(node.output, y if isinstance(y, list) else [y]):   # RNN: Y and Y_h
                if name:
                    v[name] = t
        except Exception as e:
            raise SystemExit("FAIL oracle: node %s (%s): %s" % (node.name, node.op_type, e))
    return [v[o.name] for o in model.graph.output]


def run_graph(path, model, feeds):
    try:
        from onnx.reference import ReferenceEvaluator
        return "onnx.reference", ReferenceEvaluator(model).run(None, feeds)
    except ImportError:
        pass
    try:
        import onnxruntime
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        return "onnxruntime", session.run(None, feeds)
    except ImportError:
        pass
    return "numpy oracle (tests/onnx_check.py)", run_oracle(model, feeds)


# ---- the oracle against ONNX's own node tests ----------------------------------

ORACLE_OPS = {
    "Gemm": "gemm", "Conv": "conv", "MaxPool": "maxpool", "AveragePool": "averagepool",
    "GlobalAveragePool": "globalaveragepool", "BatchNormalization": "batchnorm", "ReduceMean": "reducemean",
    "Flatten": "flatten", "Reshape": "reshape", "Softmax": "softmax", "LeakyRelu": "leakyrelu", "Elu": "elu",
    "Selu": "selu", "Identity": "identity", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Sqrt": "sqrt",
    "Erf": "erf", "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div",
    "MatMul": "matmul", "Transpose": "transpose", "Gather": "gather", "Round": "round", "Cast": "cast",
    "RNN": "rnn",
}


def self_test():
    """Runs the oracle on the node test cases python3-onnx ships
    (onnx.backend.test.case.node: inputs and expected outputs per operator,
    from ONNX's own numpy code) of every operator it implements, on float
    data; a case using an attribute or rank it does not implement is skipped
    (the oracle refuses it), any other disagreement fails."""
    import importlib
    import onnx.backend.test.case.node as cases_module
    for module in sorted(set(ORACLE_OPS.values())):
        importlib.import_module("onnx.backend.test.case.node." + module)
    passed, skipped, failed = 0, [], []
    covered = set()
    for case in cases_module._NodeTestCases:
        nodes = case.model.graph.node
        if len(nodes) != 1 or nodes[0].op_type not in ORACLE_OPS:
            continue
        for inputs, outputs in case.data_sets:
            if any(np.asarray(t).dtype.kind != "f" for t in inputs[:1]):
                continue
            v = {vi.name: np.asarray(t).astype(np.float64) if np.asarray(t).dtype.kind == "f" else np.asarray(t)
                 for vi, t in zip(case.model.graph.input, inputs)}
            try:
                got = run_node(nodes[0], v)
            except (ValueError, TypeError, AssertionError) as e:
                skipped.append("%s (%s)" % (case.name, e))
                continue
            if isinstance(got, list):   # RNN: the case's outputs are those of its non-empty names
                got = [t for name, t in zip(nodes[0].output, got) if name][0]
            want = np.asarray(outputs[0])
            if got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-6):
                passed += 1
                covered.add(nodes[0].op_type)
            else:
                failed.append(case.name)
    missing = sorted(set(ORACLE_OPS) - covered)
    print("onnx_check --self-test: the numpy oracle matches %d of ONNX's node test cases over %d operators; "
          "%d skipped (attributes or ranks arsenal never emits)" % (passed, len(covered), len(skipped)))
    for s in skipped:
        print("  skipped:", s)
    if failed or missing:
        raise SystemExit("FAIL oracle self-test: disagrees on %s; operators without a passing case: %s"
                         % (failed, missing))


# ---- the checks ----------------------------------------------------------------

def dims_of(value_info):
    return [d.dim_param if d.HasField("dim_param") else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


def make_input(path, prefix, rows, seed, vocab=None):
    model = onnx.load(path)
    sample = [int(d) for d in dims_of(model.graph.input[0])[1:]]
    if vocab is not None:
        rng = np.random.default_rng(seed)
        ids = rng.integers(0, vocab, [rows] + sample) + rng.uniform(-0.3, 0.3, [rows] + sample)
        np.save(prefix + ".input.npy", ids.astype(np.float32))
        return
    meta = {p.key: p.value for p in model.metadata_props}
    standardized = meta.get("arsenal.input_standardized") == "true"
    mean = float(meta["arsenal.data_mean"]) if standardized else 0.0
    std = float(meta["arsenal.data_std"]) if standardized else 1.0
    x = np.random.default_rng(seed).standard_normal([rows] + sample) * (std if std > 0 else 1.0) + mean
    np.save(prefix + ".input.npy", x.astype(np.float32))


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    if sys.argv[1:2] == ["--make-input"] and len(sys.argv) in (6, 7):
        return make_input(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
                          int(sys.argv[6]) if len(sys.argv) == 7 else None)
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("prefix")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--expect-outputs", default=None)
    args = parser.parse_args()

    model = onnx.load(args.model)
    onnx.checker.check_model(model, full_check=True)
    opsets = {o.domain: o.version for o in model.opset_import}
    assert opsets == {"": OPSET}, "opset_import %s, expected only ai.onnx %d" % (opsets, OPSET)
    graph = model.graph
    assert [i.name for i in graph.input] == ["input"], "inputs %s" % [i.name for i in graph.input]
    in_dims = dims_of(graph.input[0])
    assert isinstance(in_dims[0], str) and in_dims[0], "the batch dimension is not symbolic: %s" % in_dims
    outputs = [o.name for o in graph.output]
    if args.expect_outputs is not None:
        assert outputs == args.expect_outputs.split(","), "outputs %s, expected %s" % (outputs, args.expect_outputs)
    assert outputs[0] == "logits", "outputs %s" % outputs
    inferred = shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    shapes = {vi.name: dims_of(vi) for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    out_dims = dims_of(graph.output[0])

    sample = [int(d) for d in in_dims[1:]]
    x = np.load(args.prefix + ".input.npy")
    assert x.dtype == np.float32 and list(x.shape[1:]) == sample, "input %s %s" % (x.dtype, x.shape)
    rows = x.shape[0]

    engine, results = run_graph(args.model, model, {"input": x})
    worst = 0.0
    report = []
    for name, got in zip(outputs, results):
        if name not in ("logits", "probabilities"):
            raise SystemExit("FAIL unexpected output %s" % name)
        # arsenal predict's CSV: a header row, one line per sample, %.9g (every float32 exactly)
        want = np.loadtxt(args.prefix + "." + name + ".csv", delimiter=",", skiprows=1, ndmin=2)
        want = want.reshape([rows] + [int(d) for d in out_dims[1:]])
        got = np.asarray(got, dtype=np.float64)
        assert got.shape == want.shape, "%s: shape %s, arsenal's %s" % (name, got.shape, want.shape)
        diff = np.abs(got - want) / np.maximum(1.0, np.abs(want))
        worst = max(worst, float(diff.max()))
        report.append("%s max |diff| %.2e (abs %.2e, |arsenal| <= %.3g)" % (
            name, diff.max(), np.abs(got - want).max(), np.abs(want).max()))
    ops = sorted({n.op_type for n in graph.node})
    print("onnx_check %s: checker ok (full_check), opset %d, input %s, outputs %s (inferred %s); %d nodes: %s"
          % (args.model, OPSET, in_dims, outputs, shapes.get("logits"), len(graph.node), " ".join(ops)))
    print("onnx_check %s: %d samples on %s against arsenal predict: %s; worst relative difference %.2e"
          % (args.model, rows, engine, "; ".join(report), worst))
    if not worst <= args.tolerance:
        raise SystemExit("FAIL %s: max relative difference %.3e > %.1e" % (args.model, worst, args.tolerance))


if __name__ == "__main__":
    main()
