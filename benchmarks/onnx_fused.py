"""Measured, not adopted: the autoencoder on ONNX Runtime with fused GRU/LSTM operators.

    .venv/bin/pip install onnx onnxruntime          # not in the lock: the product does not use them
    .venv/bin/python benchmarks/onnx_fused.py [--model models/bench-1000]

Exports the bundle's Keras model (the shape ``detect.model`` builds: encoder GRU/LSTM layers, a
tanh code, the code repeated over the window and joined with the calendar context, decoder
layers, a per-step linear read-out) to ONNX by hand, with ONNX's own ``GRU`` (Keras'
``reset_after`` = ``linear_before_reset``, gates z, r, h in both) and ``LSTM`` (Keras' gates
i, f, c, o reordered to i, o, f, c) operators, which tf2onnx does not produce for Keras 3 (it
emits ``Loop``). Then scores the same random windows with it and with the product's XLA path
(``scoring.reconstruct``), one thread each, and prints the largest difference and windows/s of
both. Figures: docs/sizing.md ("ONNX Runtime instead of TensorFlow").
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _rnn(nodes, inits, layer, x, name, seq_out):
    """One recurrent layer on time-major ``x`` (W, N, in) -> (W, N, H), or (N, H) for the last step."""
    from onnx import helper, numpy_helper
    kernel, rec, bias = layer.get_weights()
    cell = "GRU" if layer.__class__.__name__ == "GRU" else "LSTM"
    if cell == "GRU":
        if not layer.reset_after:
            raise SystemExit(f"layer {name}: only reset_after=True GRUs map to ONNX's linear_before_reset")
        w, r, b, attrs = kernel.T[None], rec.T[None], np.concatenate([bias[0], bias[1]])[None], {"linear_before_reset": 1}
    else:
        def iofc(a):
            i, f, c, o = np.split(a, 4, axis=-1)
            return np.concatenate([i, o, f, c], axis=-1)
        w, r, b, attrs = iofc(kernel).T[None], iofc(rec).T[None], np.concatenate([iofc(bias), np.zeros_like(bias)])[None], {}
    for n, a in (("W", w), ("R", r), ("B", b)):
        inits.append(numpy_helper.from_array(a.astype(np.float32), f"{name}_{n}"))
    outs = [f"{name}_Y", f"{name}_Yh"] + ([f"{name}_Yc"] if cell == "LSTM" else [])
    nodes.append(helper.make_node(cell, [x, f"{name}_W", f"{name}_R", f"{name}_B"], outs,
                                  hidden_size=rec.shape[0], **attrs))
    if seq_out:   # Y is (W, directions, N, H)
        nodes.append(helper.make_node("Squeeze", [f"{name}_Y", "ax1"], [f"{name}_seq"]))
        return f"{name}_seq"
    nodes.append(helper.make_node("Squeeze", [f"{name}_Yh", "ax0"], [f"{name}_last"]))
    return f"{name}_last"


def export(model):
    """The Keras autoencoder as an ONNX model (inputs ``values`` [, ``context``], output
    ``reconstruction``, batch dimension free)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], [numpy_helper.from_array(np.array([0], np.int64), "ax0"),
                        numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    by = {layer.name: layer for layer in model.layers}
    w_len, n_feat = model.inputs[0].shape[1:]
    ins = [helper.make_tensor_value_info("values", TensorProto.FLOAT, ["N", w_len, n_feat])]
    has_ctx = len(model.inputs) > 1
    x = "values"
    if has_ctx:
        ins.append(helper.make_tensor_value_info("context", TensorProto.FLOAT, ["N", w_len, model.inputs[1].shape[2]]))
        nodes.append(helper.make_node("Concat", ["values", "context"], ["enc_in"], axis=2))
        x = "enc_in"
    nodes.append(helper.make_node("Transpose", [x], ["enc_tm"], perm=[1, 0, 2]))
    x = "enc_tm"
    enc = sorted(n for n in by if n.startswith("encoder_"))
    for i, n in enumerate(enc):
        x = _rnn(nodes, inits, by[n], x, n, seq_out=i < len(enc) - 1)
    kc, bc = by["code"].get_weights()
    inits += [numpy_helper.from_array(kc, "code_k"), numpy_helper.from_array(bc, "code_b"),
              numpy_helper.from_array(np.array([w_len, 1, 1], np.int64), "rep")]
    nodes += [helper.make_node("Gemm", [x, "code_k", "code_b"], ["code_lin"]),
              helper.make_node("Tanh", ["code_lin"], ["code"]),
              helper.make_node("Unsqueeze", ["code", "ax0"], ["code_u"]),
              helper.make_node("Tile", ["code_u", "rep"], ["dec_rep"])]   # (W, N, latent)
    x = "dec_rep"
    if has_ctx:
        nodes += [helper.make_node("Transpose", ["context"], ["ctx_tm"], perm=[1, 0, 2]),
                  helper.make_node("Concat", ["dec_rep", "ctx_tm"], ["dec_in"], axis=2)]
        x = "dec_in"
    for n in sorted(n for n in by if n.startswith("decoder_")):
        x = _rnn(nodes, inits, by[n], x, n, seq_out=True)
    kr, br = by["reconstruction"].get_weights()
    inits += [numpy_helper.from_array(kr, "rec_k"), numpy_helper.from_array(br, "rec_b")]
    nodes += [helper.make_node("MatMul", [x, "rec_k"], ["rec_mm"]),
              helper.make_node("Add", ["rec_mm", "rec_b"], ["rec_tm"]),
              helper.make_node("Transpose", ["rec_tm"], ["reconstruction"], perm=[1, 0, 2])]
    out = [helper.make_tensor_value_info("reconstruction", TensorProto.FLOAT, ["N", w_len, n_feat])]
    m = helper.make_model(helper.make_graph(nodes, "autoencoder", ins, out, inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/bench-1000",
                    help="bundle (default: the throughput benchmark's, made by `benchmarks/throughput.py`)")
    ap.add_argument("--windows", type=int, default=65536)
    args = ap.parse_args(argv)
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime is not installed (not in the lock): .venv/bin/pip install onnx onnxruntime", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sentinel.detect import scoring
    from sentinel.detect.model import BundleError, load_bundle, resolve_bundle
    try:
        bundle = load_bundle(str(resolve_bundle(args.model)), 1)
    except (BundleError, FileNotFoundError) as exc:
        print(f"{exc} (benchmarks/throughput.py --only state trains models/bench-1000)", file=sys.stderr)
        return 2
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(export(bundle.model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    rng = np.random.default_rng(0)
    n = args.windows
    xs = [rng.normal(0, 1, (n, *t.shape[1:])).astype(np.float32) for t in bundle.model.inputs]

    def ort_run(batch):
        return np.concatenate([sess.run(None, dict(zip(names, [x[a:a + batch] for x in xs])))[0]
                               for a in range(0, n, batch)])

    scoring.reconstruct(bundle.model, [x[:4096] for x in xs])   # compile
    ort_run(4096)
    t0 = time.perf_counter()
    ref = scoring.reconstruct(bundle.model, xs)
    tf_wps = n / (time.perf_counter() - t0)
    cell = next(type(layer).__name__ for layer in bundle.model.layers if type(layer).__name__ in ("GRU", "LSTM"))
    print(f"TensorFlow, XLA (the product): {tf_wps:,.0f} windows/s")
    for batch in (1024, 4096, 16384):
        t0 = time.perf_counter()
        out = ort_run(batch)
        wps = n / (time.perf_counter() - t0)
        print(f"ONNX Runtime {ort.__version__}, fused {cell} ops, batches of {batch:,}: "
              f"{wps:,.0f} windows/s ({wps / tf_wps:.2f}x); max |difference| {float(np.abs(out - ref).max()):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
