#!/usr/bin/python3
"""scaling.py: the cost model of arsenal's data parallelism toward many
nodes, fitted to bench/scaling.sh's measurements; writes docs/scaling.md.

    /usr/bin/python3 bench/scaling.py --work DIR [--out docs/scaling.md]

DIR holds what bench/scaling.sh measured: machine.txt, step.jsonl
(bench_step --layers: per-layer CPU times at 1 rank), comm.jsonl
(bench_comm: collectives by message size, on one host and across
namespace hosts), validation.jsonl (arsenal train at 2 and 3 ranks next
to concurrent single-rank bench_step runs). Everything below is computed
from those files and from the link parameters stated in LINKS; no figure
is typed in by hand except those parameters, the reduction cost GAMMA and
the Horovod comparison's published inputs (HOROVOD), all named as such in
the report.
"""
import argparse
import json
import math
import os
import statistics
import sys

import numpy as np

# --- parameters (stated in the report) ---------------------------------------
# alpha: seconds per message (MPI latency over the link), beta: seconds per
# byte (1 / payload bandwidth: the line rate less ~5% framing/protocol).
LINKS = {
    "25 GbE": {"alpha": 15e-6, "beta": 1 / (25e9 / 8 * 0.95),
               "why": "TCP or RoCE MPI latency about 15 us; 25 Gbit/s at 95% payload"},
    "100 Gb InfiniBand": {"alpha": 2e-6, "beta": 1 / (100e9 / 8 * 0.95),
                          "why": "EDR verbs MPI latency about 2 us; 100 Gbit/s at 95% payload"},
}
GAMMA = 1 / 10e9   # seconds per byte reduced (one core summing floats from memory, ~10 GB/s)
NODES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
BUCKET_MB, FIRST_BUCKET_MB = 4.0, 1.0   # [run] bucket_mb, first_bucket_mb defaults (src/run_config.c)
WORKLOADS = {"W1": "MLP 784-1024-1024-10, batch 128 per node",
             "W2": "residual MLP, 48 blocks of width 256 with BatchNorm, batch 64 per node",
             "W5": "ResNet-20 (examples/resnet-fmnist.cfg's layers), batch 128 per node"}
# Horovod (Sergeev & Del Balso, 2018, "Horovod: fast and easy distributed
# deep learning in TensorFlow", fig. 6-7): ResNet-101, 90% scaling efficiency
# on 512 Pascal GPUs (128 servers x 4) over 25 Gbit/s RoCE. The step time
# and parameter count are the usual published figures, not measured here.
HOROVOD = {"params": 44.5e6, "step_s": 0.25, "gpus": 512, "per_server": 4, "efficiency": 0.90,
           "fusion_mb": 64}   # Horovod's default tensor-fusion buffer


# --- reading --------------------------------------------------------------------
def read_jsonl(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"scaling.py: {path}:{n}: not JSON: {e}")
    return rows


def read_machine(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                out[k] = v
    return out


def load_steps(rows):
    """Per workload: params, step CPU ms, phases (CPU ms), layers in order."""
    w = {}
    for r in rows:
        name = r.get("workload")
        d = w.setdefault(name, {"cpu": [], "wall": [], "phase": {}, "layers": [], "params": None})
        if r["bench"] == "meta":
            d["params"] = r["params"]
            d["corename"] = r.get("corename", "")
            d["batch"] = r["batch"]
        elif r["bench"] == "step":
            d["cpu"].append(r["cpu_ms_per_step"])
            d["wall"].append(r["ms_per_step"])
        elif r["bench"] == "phase":
            d["phase"][r["phase"]] = r["ms"] * 1e-3
        elif r["bench"] == "layer_order":
            d["layers"].append(r)
    for name, d in w.items():
        if not d["layers"] or not d["phase"] or not d["cpu"]:
            sys.exit(f"scaling.py: step.jsonl: workload {name} lacks step, phase or layer_order lines "
                     "(bench_step --layers)")
        d["step_cpu"] = statistics.median(d["cpu"]) * 1e-3
        d["layers"].sort(key=lambda r: r["index"])
        # the profiled phases (layer by layer, no prefetching) to the timed step's total
        total = sum(d["phase"].values())
        if total > 0:
            d["phase"] = {k: v * d["step_cpu"] / total for k, v in d["phase"].items()}
    return w


def load_sync_points(rows):
    """(label, ranks) -> median seconds one blocking small all-reduce adds between compute slices."""
    out = {}
    for r in rows:
        if r.get("bench") == "sync_point":
            out.setdefault((r["label"], r["ranks"]), []).append(max(0.0, r["sync_point_ms"]) * 1e-3)
    return {k: statistics.median(v) for k, v in out.items()}


def load_comm(rows):
    """(where, ranks, algorithm) -> op -> bytes -> [seconds]; where = shm | net."""
    runs, current = {}, None
    for r in rows:
        if r["bench"] == "sync_point":
            continue
        if r["bench"] == "comm_meta":
            alg = {"default": "default", "4": "ring", "3": "rd"}.get(r["allreduce_algorithm"], r["allreduce_algorithm"])
            current = (r["label"], r["ranks"], alg)
            runs.setdefault(current, {})
        elif r["bench"] == "comm":
            if current is None:
                sys.exit("scaling.py: comm.jsonl: a comm line before any comm_meta line")
            runs[current].setdefault(r["op"], {}).setdefault(r["bytes"], []).append(r["ms"] * 1e-3)
    return runs


def med(d):
    return {b: statistics.median(v) for b, v in sorted(d.items())}


# --- the alpha-beta model -------------------------------------------------------------
def log2c(p):
    return math.ceil(math.log2(p)) if p > 1 else 0


def rd_steps(p):
    """Open MPI's recursive doubling: log2 p rounds, +2 (fold in, send back) off a power of 2."""
    if p < 2:
        return 0
    k = int(math.floor(math.log2(p)))
    return k + (0 if 2 ** k == p else 2)


# T = lat(p) alpha + bw(p) n beta + red(p) n gamma; n in bytes
ALGORITHMS = {
    "ring": (lambda p: 2 * (p - 1), lambda p: 2 * (p - 1) / p, lambda p: (p - 1) / p),
    "rd": (rd_steps, rd_steps, rd_steps),
    "binomial": (lambda p: 2 * log2c(p), lambda p: 2 * log2c(p), log2c),
    "rs_ag": (lambda p: 2 * (p - 1), lambda p: 2 * (p - 1) / p, lambda p: (p - 1) / p),
    "rs": (lambda p: p - 1, lambda p: (p - 1) / p, lambda p: (p - 1) / p),
    "ag": (lambda p: p - 1, lambda p: (p - 1) / p, lambda p: 0.0),
}
ALGORITHM_TEXT = {
    "ring": "ring all-reduce: 2(p-1) alpha + 2(p-1)/p n beta",
    "rd": "recursive doubling: s(alpha + n beta), s = log2 p (+2 when p is not a power of 2)",
    "binomial": "binomial reduce + broadcast (libnbc in place): 2 ceil(log2 p) (alpha + n beta)",
    "rs_ag": "reduce-scatter + all-gather (ZeRO-1): 2(p-1) alpha + 2(p-1)/p n beta",
}


def cost(alg, p, n, alpha, beta, gamma=0.0):
    if p <= 1:
        return 0.0
    lat, bw, red = ALGORITHMS[alg]
    return lat(p) * alpha + bw(p) * n * beta + red(p) * n * gamma


def fit_line(points):
    """a + b n through (n, T), least relative squares, a, b >= 0."""
    n = np.array([p[0] for p in points], float)
    t = np.array([p[1] for p in points], float)
    A = np.stack([1 / t, n / t], axis=1)
    (a, b), *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    if b < 0:
        a, b = float(np.median(t)), 0.0
    elif a < 0:
        a, b = 0.0, float(np.sum(n / t) / np.sum((n / t) ** 2))
    err = [abs(a + b * x - y) / y for x, y in points]
    return float(a), float(b), statistics.median(err), max(err)


SMALL, LARGE = 8192, 512 * 1024   # bytes: latency-bound below, bandwidth-bound above


def fit_algorithm(alg, series):
    """alpha, beta of one formula over series [(p, n, T)] (several p at once):
    alpha from the latency-bound sizes (<= SMALL), then beta by least
    squares on the bandwidth-bound ones (>= LARGE) given alpha; a single
    least-squares line over all sizes would let the many small sizes set
    beta. Falls back to least relative squares over everything when a
    regime has no points."""
    lat, bw, _ = ALGORITHMS[alg]
    small = [(p, n, t) for p, n, t in series if n <= SMALL]
    large = [(p, n, t) for p, n, t in series if n >= LARGE]
    if small and large:
        beta = 0.0
        for _ in range(4):   # each regime's estimate without the other's term
            alpha = statistics.median(max(0.0, t - bw(p) * n * beta) / lat(p) for p, n, t in small)
            num = sum((t - lat(p) * alpha) * bw(p) * n for p, n, t in large)
            den = sum((bw(p) * n) ** 2 for p, n, t in large)
            beta = max(num / den, 1e-15)
    else:
        A = np.array([[lat(p) / t, bw(p) * n / t] for p, n, t in series])
        (alpha, beta), *_ = np.linalg.lstsq(A, np.ones(len(series)), rcond=None)
        alpha, beta = max(float(alpha), 0.0), max(float(beta), 1e-15)
    err = [abs(cost(alg, p, n, alpha, beta) - t) / t for p, n, t in series]
    return float(alpha), float(beta), statistics.median(err), max(err)


# --- the step-time model ----------------------------------------------------------------
def buckets(layers, bucket_mb=BUCKET_MB, first_mb=FIRST_BUCKET_MB):
    """arsenal's plan (src/dist.c ars_dist_plan_buckets): layers in backward
    order, a bucket closes once it holds first_bucket_mb (the first) or
    bucket_mb; returns [(bytes, lowest layer index)] in backward order."""
    out, limit, held, open_ = [], first_mb * 1048576 / 4, 0, False
    for layer in reversed(layers):
        if layer["params"] == 0:
            continue
        if not open_:
            out.append([0, layer["index"]])
            held, open_ = 0, True
        out[-1][0] += 4 * layer["params"]
        out[-1][1] = layer["index"]
        held += layer["params"]
        if held >= limit:
            open_, limit = False, bucket_mb * 1048576 / 4
    return out


def batchnorm_syncs(w):
    """SyncBatchNorm's blocking all-reduces per step (src/layers/batchnorm.c):
    forward [count, sums] and squared deviations, backward two sums per
    channel; as (bytes) of each, for every batchnorm layer."""
    out = []
    for r in w["layers"]:
        if r.get("kind") == "batchnorm":
            dim = max(1, r["params"] // 2)
            out += [8 * (dim + 1), 8 * dim, 16 * dim]
    return out


def step_time(w, p, comm, mode, overlap, slow=1.0, bucket_mb=BUCKET_MB, first_mb=FIRST_BUCKET_MB, sync=None):
    """Seconds per step of workload w on p nodes.
    comm(n, p): seconds of one all-reduce of n bytes (unsharded) or the
    pair (reduce-scatter + all-gather, scalar all-reduce) for sharded.
    mode: unsharded | sharded. overlap: ideal (a bucket's all-reduce runs
    while backward goes on, one at a time in bucket order) | none (all of
    it after backward). slow: compute time multiplier (cores shared).
    sync(bytes, p): seconds of one blocking SyncBatchNorm all-reduce (two
    thirds of them in forward, one third in backward); None: none."""
    ph = {k: v * slow for k, v in w["phase"].items()}
    fwd = ph.get("forward", 0) + ph.get("loss", 0)
    bwd = ph.get("backward", 0)
    opt = ph.get("optimizer", 0) + ph.get("norm_clip", 0)
    if p <= 1:
        return fwd + bwd + opt
    if sync is not None:
        syncs = batchnorm_syncs(w)
        fwd += sum(sync(n, p) for n in syncs[0::3] + syncs[1::3])
        bwd += sum(sync(n, p) for n in syncs[2::3])
    if mode == "sharded":
        rs_ag, scalar = comm(4 * w["params"], p)
        return fwd + bwd + rs_ag + scalar + opt / p
    layer_bwd = {r["index"]: r["backward_ms"] * 1e-3 for r in w["layers"]}
    total_layer = sum(layer_bwd.values()) or 1.0
    scale = bwd / total_layer   # the layers' times to the phase's (hooks, finish outside the layers)
    end_comm = fwd
    done_at = {}
    t = fwd
    for r in reversed(w["layers"]):   # backward order: when each layer's gradient is complete
        t += layer_bwd[r["index"]] * scale
        done_at[r["index"]] = t
    backward_end = fwd + bwd
    for size, first_layer in buckets(w["layers"], bucket_mb, first_mb):
        ready = done_at[first_layer] if overlap == "ideal" else backward_end
        end_comm = max(end_comm, ready) + comm(size, p)
    return max(backward_end, end_comm) + opt


def link_comm(alg, alpha, beta, gamma):
    return lambda n, p: cost(alg, p, n, alpha, beta, gamma)


def sharded_comm(alpha, beta, gamma):
    # ring reduce-scatter + ring all-gather, and the clip norm's scalar all-reduce (recursive doubling)
    return lambda n, p: (cost("rs_ag", p, n, alpha, beta, gamma), cost("rd", p, 8, alpha, beta))


# --- report helpers ------------------------------------------------------------------------
def fmt_bytes(b):
    for unit, size in (("MB", 1 << 20), ("KB", 1 << 10)):
        if b >= size:
            v = b / size
            return f"{v:.0f} {unit}" if v >= 10 else f"{v:.1f} {unit}"
    return f"{b:.0f} B"


def fmt_ms(s):
    ms = s * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def svg_plot(series, title, path):
    """Efficiency against nodes (log2 x axis): [(label, [(nodes, eff)], colour, dashed)]."""
    W, H, L, R, T, B = 720, 420, 60, 230, 40, 50
    def x(n): return L + (W - L - R) * math.log2(n) / math.log2(NODES[-1])
    def y(e): return T + (H - T - B) * (1 - e)
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2 - 100}" y="22" font-size="14">{title}</text>']
    for e in (0, 0.25, 0.5, 0.75, 0.9, 1.0):
        s.append(f'<line x1="{L}" y1="{y(e):.1f}" x2="{W - R}" y2="{y(e):.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{L - 35}" y="{y(e) + 4:.1f}">{e:.2f}</text>')
    for n in NODES:
        s.append(f'<line x1="{x(n):.1f}" y1="{T}" x2="{x(n):.1f}" y2="{H - B}" stroke="#eee"/>')
        s.append(f'<text x="{x(n) - 8:.1f}" y="{H - B + 16}">{n}</text>')
    s.append(f'<text x="{(W - R) / 2}" y="{H - 12}">nodes</text>')
    s.append(f'<text x="12" y="{T - 8}">scaling efficiency</text>')
    for i, (label, pts, colour, dashed) in enumerate(series):
        d = " ".join(f"{x(n):.1f},{y(max(0.0, min(1.0, e))):.1f}" for n, e in pts)
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        s.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        ly = T + 14 + 18 * i
        s.append(f'<line x1="{W - R + 10}" y1="{ly - 4}" x2="{W - R + 35}" y2="{ly - 4}" stroke="{colour}" '
                 f'stroke-width="2"{dash}/>')
        s.append(f'<text x="{W - R + 40}" y="{ly}">{label}</text>')
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")


# --- the report -------------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="bench/scaling.sh's work directory")
    ap.add_argument("--out", default=None, help="the report (default: docs/scaling.md)")
    ap.add_argument("--command", default="bench/scaling.sh", help="the command named at the top of the report")
    a = ap.parse_args()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = a.out or os.path.join(repo, "docs", "scaling.md")
    machine = read_machine(os.path.join(a.work, "machine.txt"))
    steps = load_steps(read_jsonl(os.path.join(a.work, "step.jsonl")))
    comm_rows = read_jsonl(os.path.join(a.work, "comm.jsonl"))
    validation = read_jsonl(os.path.join(a.work, "validation.jsonl"))
    sync_points = load_sync_points(comm_rows + validation)
    runs = load_comm(comm_rows)
    if not runs:
        sys.exit(f"scaling.py: {a.work}/comm.jsonl holds no measurement")
    doc = []
    emit = doc.append

    emit("# Scaling: a cost model of arsenal's gradient sync toward 256 nodes\n")
    emit("<!-- generated by bench/scaling.py: edit the script, not this file -->\n")
    emit(f"Regenerate (it measures for 25 minutes at a load average of 10-20 on this machine, much of it "
         f"at 32 MB over the shaped link; the cross-host part needs root):\n\n    {a.command}\n")
    emit("or re-render from kept measurements (this report's are in docs/results/scaling/): "
         "`/usr/bin/python3 bench/scaling.py --work docs/results/scaling`.\n")
    emit(f"Measured {machine.get('date', '?')} at commit {machine.get('commit', '?')} on "
         f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores shared with other work "
         f"(load average {machine.get('load_start', '?')} at the start, {machine.get('load_end', '?')} at the end), "
         f"OpenBLAS core {machine.get('openblas', '?')}, 1 BLAS thread per rank"
         f"{' (--quick: tiny sizes and step counts, figures mean nothing)' if machine.get('quick') == '1' else ''}.\n")

    # -- 1. measurements
    emit("## 1. What a sync costs here, by message size\n")
    emit("`bench_comm` (bench/bench_comm.c) under `mpirun`, every figure the slowest rank's mean, median of "
         "repetitions. `shm`: ranks on this host (oversubscribed at 3 ranks: 2 cores); `net`: one rank per "
         "network-namespace host (tests/netns), TCP over veth through a bridge, "
         f"{machine.get('link', 'no shaped link (not measured)')}. "
         "`allreduce` is MPI_Allreduce as Open MPI picks its algorithm; `ring` and `rd` force ring and "
         "recursive doubling (tuned's MPI_Allreduce and libnbc's MPI_Iallreduce, which arsenal's overlap "
         "uses). `dist_*` are arsenal's own paths (src/dist.c) on a model of dense layers with a gradient "
         "of that size: `dist_overlap` = bucketed MPI_Iallreduce from the backward hook (the trainer's path "
         "across hosts), `dist_shared` = the shared-memory sum (its path on one host, clip norm included).\n")
    if "netns_skipped" in machine:
        emit(f"**Across hosts: not measured** ({machine['netns_skipped']}).\n")
    ops_shown = ["allreduce", "reduce_scatter", "allgather", "rs_ag", "dist_overlap", "dist_shared"]
    for key in sorted(runs):
        where, p, alg = key
        if alg != "default":
            continue
        data = {op: med(v) for op, v in runs[key].items()}
        ring = {op: med(v) for op, v in runs.get((where, p, "ring"), {}).items()}
        rd = {op: med(v) for op, v in runs.get((where, p, "rd"), {}).items()}
        sizes = sorted(data.get("allreduce", {}))
        head = ["bytes"] + [f"{op} ms" for op in ops_shown if op in data] + ["allreduce ring", "allreduce rd",
                                                                              "dist_overlap ring"]
        rows = []
        for i, n in enumerate(sizes):
            row = [fmt_bytes(n)]
            for op in ops_shown:
                if op in data:
                    vals = sorted(data[op].items())
                    row.append(fmt_ms(vals[i][1]) if i < len(vals) else "")
            for src, op in ((ring, "allreduce"), (rd, "allreduce"), (ring, "dist_overlap")):
                vals = sorted(src.get(op, {}).items())
                row.append(fmt_ms(vals[i][1]) if i < len(vals) else "")
            rows.append(row)
        emit(f"### {where}, {p} ranks\n")
        emit(table(head, rows) + "\n")

    # -- 2. fits
    emit("## 2. The alpha-beta fit\n")
    emit("Each collective's time is modelled as latency + bytes / bandwidth, T = L(p) alpha + B(p) n beta "
         "(n = message bytes; L, B the algorithm's rounds and bytes per rank):\n")
    for k, text in ALGORITHM_TEXT.items():
        emit(f"- {text}")
    emit(f"\nFitted jointly over 2 and 3 ranks: alpha from the latency-bound sizes (<= {fmt_bytes(SMALL)}), "
         f"beta by least squares from the bandwidth-bound ones (>= {fmt_bytes(LARGE)}), each without the "
         "other's term, so that alpha and beta are the link's rather than one size's. The error columns "
         "say how well that one (alpha, beta) pair explains every measured size and rank count.\n")
    fits = {}
    rows = []
    pairs = [("allreduce", "ring", "ring"), ("allreduce", "rd", "rd"), ("rs_ag", "default", "rs_ag"),
             ("dist_overlap", "default", "binomial"), ("dist_overlap", "ring", "ring"),
             ("dist_overlap", "rd", "rd")]
    for where in ("shm", "net"):
        for op, alg, formula in pairs:
            series = []
            for (w_, p, al), ops in runs.items():
                if w_ == where and al == alg and op in ops:
                    series += [(p, n, t) for n, t in med(ops[op]).items()]
            if len({s[0] for s in series}) < 1 or len(series) < 3:
                continue
            alpha, beta, e_med, e_max = fit_algorithm(formula, series)
            fits[(where, op, alg)] = (formula, alpha, beta)
            rows.append([where, f"{op} ({alg})", formula, f"{alpha * 1e6:.1f}", f"{1 / beta / 1e9:.3f}",
                         f"{e_med:.0%}", f"{e_max:.0%}", ", ".join(str(p) for p in sorted({s[0] for s in series}))])
    emit(table(["where", "measured", "formula", "alpha us", "1/beta GB/s", "median error", "max error", "ranks"],
               rows) + "\n")
    emit("A straight line a + b n per rank count (no algorithm assumed), for the paths the trainer takes:\n")
    rows = []
    lines = {}
    for (where, p, alg), ops in sorted(runs.items()):
        if alg != "default":
            continue
        for op in ("allreduce", "rs_ag", "dist_overlap", "dist_shared"):
            if op in ops and len(ops[op]) >= 2:
                a_, b_, e_med, e_max = fit_line(list(med(ops[op]).items()))
                lines[(where, p, op)] = (a_, b_)
                rows.append([where, p, op, f"{a_ * 1e6:.1f}", f"{1 / b_ / 1e9:.3f}" if b_ > 0 else "inf",
                             f"{e_med:.0%}", f"{e_max:.0%}"])
    emit(table(["where", "ranks", "op", "a us", "1/b GB/s", "median error", "max error"], rows) + "\n")
    rate = machine.get("rate", "")
    units = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
    tbf = next((float(rate[:-len(u)]) * f / 8 for u, f in units.items() if rate.endswith(u)), None)
    ring_net = fits.get(("net", "allreduce", "ring"))
    if tbf and ring_net:
        emit(f"Across hosts the ring's fitted payload rate is {1 / ring_net[2] / 1e6:.0f} MB/s, "
             f"{1 / ring_net[2] / tbf:.0%} of the tbf rate ({rate} = {tbf / 1e6:.1f} MB/s): TCP over veth "
             "on two loaded cores does not fill even the shaped link (its kernel work competes for the "
             "same cores as everything else). Sizes between the two regimes are the "
             "worst explained: tbf lets a 512 KB burst through at veth speed, and on one host messages "
             "that fit in the caches are faster than the large ones that set beta.\n")
    for p in (2, 3):
        d = runs.get(("net", p, "default"), {}).get("dist_overlap")
        r = runs.get(("net", p, "ring"), {}).get("dist_overlap")
        if d and r:
            n = max(set(d) & set(r))
            emit(f"arsenal's cross-host path on {p} hosts, {fmt_bytes(n)}: {fmt_ms(statistics.median(d[n]))} ms as "
                 f"Open MPI picks libnbc's algorithm (binomial, since the all-reduce is in place), "
                 f"{fmt_ms(statistics.median(r[n]))} ms with `--mca coll_libnbc_iallreduce_algorithm 1` "
                 f"(ring): {statistics.median(d[n]) / statistics.median(r[n]):.1f}x.\n")
    emit("Reading it: one host's shared memory and the namespace link both run on the same two busy "
         "cores, so their 'bandwidth' is mostly CPU time (copying, summing, TCP), and the large-message "
         "figures vary with the other work on the machine. A real link's alpha and beta are the "
         "parameters of section 4; the formulas are what carries over.\n")

    # -- 3. validation
    emit("## 3. Predicted against measured: `arsenal train` at 2 and 3 ranks\n")
    if "validation_date" in machine:
        emit(f"(Measured again after the fit: {machine['validation_date']}.)\n")
    emit("`arsenal train` of W1 and W2 as run files (bench/scaling.sh writes them: the bench_step "
         "workloads, batch per rank, Fashion-MNIST, no checkpoints or parameter checks), steady-state "
         "step time from its metrics (samples/s of each `log_every` window, the first window left out). "
         "Compute: the 2 cores are shared by every rank on this machine (and by other work), so the model "
         "takes the compute of p co-located ranks as measured right before and right after each run: p "
         "single-rank `bench_step` processes at once (`concurrent`, the mean wall time per step of all of "
         "them) -- on 3 ranks that "
         "is about 1.5x a lone rank's even on an idle machine. Prediction = that compute, scaled layer by "
         "layer, + the modelled sync: on one host the shared-memory sum after backward (its line fit "
         "above); across hosts the trainer's buckets, each costing the binomial formula with the "
         "`dist_overlap (default)` fit's alpha and beta, with overlap `ideal` (a bucket's all-reduce "
         "runs during the rest of backward) and `none` (all after backward); for W2, whose 49 "
         "BatchNorm layers are synchronized (arsenal's default, `sync = true`), 3 blocking all-reduces "
         "per layer and step, each costing what `bench_comm --sync-points` measured right before the "
         "run: a small all-reduce between two slices of about 1 ms of compute. On oversubscribed cores "
         "that is far more than the all-reduce itself: a rank that waits gives its core away, and the "
         "collective completes only once the last rank has been scheduled again.\n")
    rounds = validation_rounds(a.work)
    if not any(rows for _, rows in rounds):
        emit(f"**Not measured** ({machine.get('validation_skipped', 'no validation.jsonl')}).\n")
    all_rows = []
    for name, rows in rounds:
        meta = next((r for r in rows if r.get("bench") == "validation_meta"), {})
        vrows = validation_rows(rows, steps, sync_points, lines, fits)
        if not vrows:
            continue
        all_rows += vrows
        when = f", {meta['date']}, load average {meta.get('load', '?')} at its start" if meta else ""
        emit(f"### Round {name}{when}\n")
        emit(table(["workload", "where", "ranks", "1-rank CPU ms", "concurrent compute ms", "compute x",
                    "SyncBatchNorm all-reduces x ms", "predicted ms (overlap ideal)", "predicted ms (no overlap)",
                    "measured ms", "error (ideal)", "error (none)"], vrows) + "\n")
        emit(verdict(vrows) + "\n")
    if all_rows:
        if len(rounds) > 1:
            emit(f"All rounds: {verdict(all_rows)}\n")
        for vw in sorted({r[0] for r in all_rows}):
            rows_w = [r for r in all_rows if r[0] == vw]
            ok = sum(min(abs(float(r[-2].rstrip("%"))), abs(float(r[-1].rstrip("%")))) <= 20 for r in rows_w)
            emit(f"- {vw}: {ok} of {len(rows_w)} rows within 20%.")
        emit("\nEach round is the same measurement at another moment of a machine whose other work "
             "changes its load by several units within minutes; a 1-rank row, which has no "
             "communication at all, shows how far the compute measured before and after a run can be "
             "from the run itself. W1's rows test the gradient sync's model; W2's also the "
             "SyncBatchNorm sync points, whose measured cost is as noisy as this machine (a round may "
             "even measure none), and that is where most misses are.\n")
        emit("Notes. Across hosts the sync is TCP, whose kernel work takes CPU from the same two cores as "
             "the compute, and the bucketed all-reduce progresses only when a rank enters MPI (arsenal "
             "calls MPI_Test after each layer's backward; Open MPI's libnbc has no progress thread): on "
             "W1 (3 parameter layers, 2 buckets) that leaves hardly any backward to hide a bucket behind, "
             "so the measured step sits near the no-overlap bound. W2 across hosts is the hardest case: "
             "its 49 synchronized BatchNorm layers make 147 blocking all-reduces per step, and those in "
             "backward share the one TCP connection between two ranks with the megabytes of the buckets "
             "already in flight, so they wait behind them -- on top of the scheduling cost that "
             "`--sync-points` measures (a noisy quantity at this load: the median of a few samples). On one host the "
             "shared-memory sum is mostly waiting at its two barriers for the slowest rank: with 3 ranks "
             "on 2 cores the ranks take turns, which the concurrent compute already contains.\n")

    # -- 4. projection
    emit("## 4. Toward 256 nodes\n")
    emit("One rank per node, each with this machine's single-rank compute (1 core, CPU time of "
         "`bench_step --layers`: the layers' backward times place each gradient bucket), weak scaling "
         "(the batch per node stays), efficiency = 1-node step / N-node step. Links (parameters, "
         "not measured here):\n")
    for name, l in LINKS.items():
        emit(f"- **{name}**: alpha = {l['alpha'] * 1e6:.0f} us, beta = 1 / {1 / l['beta'] / 1e9:.2f} GB/s "
             f"({l['why']})")
    emit(f"- reduction: gamma = 1 / {1 / GAMMA / 1e9:.0f} GB/s per byte summed (a core streaming floats), "
         "added to each algorithm's reduced bytes.\n")
    emit("Variants:\n")
    emit("- **arsenal today**: bucketed MPI_Iallreduce in place from the backward hook (src/dist.c). "
         "Open MPI's libnbc picks its *binomial* algorithm for every in-place all-reduce, whatever the "
         "size or rank count (reduce to rank 0 and broadcast back: 2 ceil(log2 p) full copies of each "
         "bucket cross the root's link), ideal overlap;")
    emit("- **arsenal today, no overlap**: the same, every bucket's all-reduce after backward: what "
         "section 3 measured on this machine, where libnbc progresses only inside MPI calls;")
    emit("- **ring overlap**: the same buckets with a ring all-reduce "
         "(`--mca coll_libnbc_iallreduce_algorithm 1`, or a separate send buffer at >= 4 ranks, where "
         "libnbc then picks reduce-scatter + all-gather), ideal overlap;")
    emit("- **sharded (ZeRO-1)**: after backward a ring reduce-scatter of the gradient, the clip norm's "
         "scalar all-reduce, the optimizer (and norm) on 1/N of the parameters, a ring all-gather of "
         "the parameters; no overlap with backward (as the issue describes `optimizer.shard`; the "
         "branch implementing it is not in this one, so this is the model, not a measurement).\n")
    projection = {}
    for name, l in LINKS.items():
        emit(f"### {name}\n")
        rows = []
        for wname, wdesc in WORKLOADS.items():
            w = steps.get(wname)
            if w is None:
                continue
            bn = link_comm("rd", l["alpha"], l["beta"], GAMMA)   # SyncBatchNorm: tuned picks recursive doubling
            variants = {
                "arsenal today": lambda p, w=w: step_time(w, p, link_comm("binomial", l["alpha"], l["beta"], GAMMA),
                                                        "unsharded", "ideal", sync=bn),
                "arsenal today, no overlap": lambda p, w=w: step_time(
                    w, p, link_comm("binomial", l["alpha"], l["beta"], GAMMA), "unsharded", "none", sync=bn),
                "ring overlap": lambda p, w=w: step_time(w, p, link_comm("ring", l["alpha"], l["beta"], GAMMA),
                                                       "unsharded", "ideal", sync=bn),
                "sharded": lambda p, w=w: step_time(w, p, sharded_comm(l["alpha"], l["beta"], GAMMA),
                                                  "sharded", "none", sync=bn),
            }
            one = step_time(w, 1, None, "unsharded", "none")
            for vname, fn in variants.items():
                effs = [(n, one / fn(n)) for n in NODES]
                projection[(name, wname, vname)] = effs
                rows.append([wname, vname] + [f"{fn(n) * 1e3:.1f} / {e:.0%}" for n, e in effs])
        emit("Step ms / efficiency at N nodes:\n")
        emit(table(["workload", "variant"] + [str(n) for n in NODES], rows) + "\n")
    for wname in WORKLOADS:
        if wname in steps:
            w = steps[wname]
            bl = buckets(w["layers"])
            emit(f"- {wname}: {WORKLOADS[wname]}; {w['params']:,} parameters ({fmt_bytes(4 * w['params'])} of "
                 f"gradient in {len(bl)} buckets), 1-rank step {w['step_cpu'] * 1e3:.1f} ms CPU (forward "
                 f"{w['phase'].get('forward', 0) * 1e3:.1f}, backward {w['phase'].get('backward', 0) * 1e3:.1f}, "
                 f"optimizer {w['phase'].get('optimizer', 0) * 1e3:.1f})")
    emit("")
    plot = os.path.splitext(out)[0] + "-efficiency.svg"
    colours = {"W1": "#1f77b4", "W2": "#2ca02c", "W5": "#d62728"}
    series = []
    for (link, wname, vname), effs in projection.items():
        if link == "25 GbE" and vname in ("arsenal today", "ring overlap"):
            series.append((f"{wname}, {vname}", effs, colours.get(wname, "black"), vname == "arsenal today"))
    if series:
        svg_plot(series, "Scaling efficiency on 25 GbE (model)", plot)
        emit(f"![efficiency against nodes on 25 GbE]({os.path.basename(plot)})\n")
        emit("Dashed: arsenal today (binomial in-place Iallreduce); solid: the same buckets with a ring.\n")

    # -- 5. Horovod
    emit("## 5. Against Horovod's 90% at 512 GPUs (ResNet-101)\n")
    hv = HOROVOD
    hv_w = {"params": int(hv["params"]), "phase": {"forward": hv["step_s"] / 3, "backward": hv["step_s"] * 2 / 3,
                                                    "optimizer": 0.0},
            "layers": [{"index": i, "params": int(hv["params"] / 100), "backward_ms": 1.0} for i in range(100)]}
    l = LINKS["25 GbE"]
    servers = hv["gpus"] // hv["per_server"]
    hv_ring = hv_w["phase"]["forward"] + hv_w["phase"]["backward"]
    fuse = dict(bucket_mb=hv["fusion_mb"], first_mb=hv["fusion_mb"])
    ring_eff = hv_ring / step_time(hv_w, servers, link_comm("ring", l["alpha"], l["beta"], GAMMA), "unsharded",
                                   "ideal", **fuse)
    small_eff = hv_ring / step_time(hv_w, servers, link_comm("ring", l["alpha"], l["beta"], GAMMA), "unsharded",
                                    "ideal")
    binom_eff = hv_ring / step_time(hv_w, servers, link_comm("binomial", l["alpha"], l["beta"], GAMMA), "unsharded",
                                    "ideal", **fuse)
    emit(f"Horovod reports {hv['efficiency']:.0%} scaling efficiency for ResNet-101 on {hv['gpus']} GPUs "
         f"({servers} servers of {hv['per_server']}, 25 Gbit/s RoCE, ring all-reduce through NCCL, tensor "
         "fusion overlapping backward). The same model fed with ResNet-101's published figures "
         f"(about {hv['params'] / 1e6:.1f} M parameters = {fmt_bytes(4 * hv['params'])} of gradient, about "
         f"{hv['step_s'] * 1e3:.0f} ms per step on a Pascal GPU, taken as one third forward and two thirds "
         f"backward; one ring over {servers} servers, the 4 GPUs of a server summed locally first, "
         f"Horovod's {hv['fusion_mb']} MB fusion buffers as buckets) predicts {ring_eff:.0%} with ideal "
         f"overlap, against Horovod's measured {hv['efficiency']:.0%}: the model is in the right place on "
         f"the one published point it can be set against. With arsenal's 4 MB buckets the ring's latency "
         f"term (2(p-1) alpha = {2 * (servers - 1) * l['alpha'] * 1e3:.1f} ms per bucket) brings it to "
         f"{small_eff:.0%}; with arsenal's binomial in-place all-reduce (64 MB buckets) to {binom_eff:.0%}.\n")
    lines_out = []
    for wname in WORKLOADS:
        for vname in ("arsenal today", "ring overlap", "sharded"):
            effs = projection.get(("25 GbE", wname, vname))
            if effs:
                lines_out.append(f"{wname} {vname}: {dict(effs)[256]:.0%}")
    emit("Where arsenal's workloads land at 256 nodes on 25 GbE: " + "; ".join(lines_out) + ". Why:\n")
    for wname in WORKLOADS:
        w = steps.get(wname)
        if w is None:
            continue
        ring = cost("ring", 256, 4 * w["params"], l["alpha"], l["beta"], GAMMA)
        binom = cost("binomial", 256, 4 * w["params"], l["alpha"], l["beta"], GAMMA)
        syncs = batchnorm_syncs(w)
        bn_cost = sum(cost("rd", 256, n, l["alpha"], l["beta"], GAMMA) for n in syncs)
        bn_text = (f"; its {len(syncs)} blocking SyncBatchNorm all-reduces add {bn_cost * 1e3:.1f} ms per step "
                   f"that nothing hides (latency: {rd_steps(256)} rounds of alpha each)") if syncs else ""
        emit(f"- {wname}: {fmt_bytes(4 * w['params'])} of gradient against {w['step_cpu'] * 1e3:.0f} ms of "
             f"compute (backward {w['phase'].get('backward', 0) * 1e3:.0f} ms to hide behind): a ring "
             f"all-reduce of it over 256 nodes costs {ring * 1e3:.1f} ms, the binomial one "
             f"{binom * 1e3:.1f} ms -- a ratio of communication to compute of "
             f"{ring / w['step_cpu']:.2f} (ring) and {binom / w['step_cpu']:.2f} (binomial){bn_text}.")
    rates = "; ".join(f"{wname} {4 * steps[wname]['params'] / steps[wname]['step_cpu'] / 1e6:.0f} MB/s"
                      for wname in WORKLOADS if wname in steps)
    ring_lat = 2 * 255 * l["alpha"]
    emit(f"\nTwo ratios decide it. Bytes per second of compute: ResNet-101 on a GPU server makes "
         f"{4 * hv['params'] / hv['step_s'] / 1e6:.0f} MB of gradient per second of compute, arsenal's "
         f"workloads on one CPU core {rates}, so the bandwidth term alone would leave W1 and W2 about "
         "where Horovod is. Latency per step: a ring over 256 nodes costs 2(p-1) alpha = "
         f"{ring_lat * 1e3:.1f} ms per bucket whatever its size; Horovod spends that a few times in a "
         f"{hv['step_s'] * 1e3:.0f} ms step (64 MB fusion buffers); arsenal's 4 MB buckets make "
         + ", ".join(f"{wname} pay it {len(buckets(steps[wname]['layers']))} times in a "
                     f"{steps[wname]['step_cpu'] * 1e3:.0f} ms step" for wname in WORKLOADS if wname in steps)
         + ", and the synchronized BatchNorm of W2 and W5 adds blocking all-reduces that overlap nothing "
         "(Horovod's ResNet-101 normalizes per GPU: TensorFlow's BatchNorm is not synchronized). That latency, "
         "and arsenal's binomial in-place all-reduce (whose bandwidth term grows as 2 log2 p copies "
         "instead of staying below 2), is where W1 and W2 lose their efficiency; bigger buckets at many "
         "nodes, a ring (one MCA setting) and unsynchronized BatchNorm would recover most of it. The "
         "convolutional ResNet-20 does close to a second of arithmetic per MB of gradient: it scales "
         "almost perfectly on either link with either algorithm. Sharding (ZeRO-1) moves the same bytes "
         "as a ring all-reduce, so its cost is the lost overlap with backward and its gain the optimizer "
         "pass divided by N (" + ", ".join(f"{wname} {steps[wname]['phase'].get('optimizer', 0) / steps[wname]['step_cpu']:.0%}"
                                             for wname in WORKLOADS if wname in steps)
         + " of the step: on the fast link that gain can exceed the sync, hence efficiencies a little "
         "above 100%): its point is memory, not speed.\n")
    emit("What the model leaves out: contention in the network core (a fat tree at full bisection is "
         "assumed), stragglers and jitter (every node as fast as this one alone), hierarchical "
         "all-reduce within a multi-socket node, and libnbc's need for MPI calls to make progress (the "
         "`ideal` and `no overlap` rows bound it from both sides; section 3 found this machine near the "
         "second).\n")

    with open(out, "w") as f:
        f.write("\n".join(doc) + "\n")
    return 0


def validation_rounds(work):
    """[(name, rows)]: validation.jsonl (the latest) after earlier rounds kept as validation-N.jsonl."""
    names = sorted(f for f in os.listdir(work) if f.startswith("validation-") and f.endswith(".jsonl"))
    out = [(f[len("validation-"):-len(".jsonl")], read_jsonl(os.path.join(work, f))) for f in names]
    out.append((str(len(out) + 1) if out else "1", read_jsonl(os.path.join(work, "validation.jsonl"))))
    return out


def validation_rows(validation, steps, sync_points, lines, fits):
    """One table row per (workload, where, ranks) measured in this round."""
    vrows = []
    local_sync = load_sync_points(validation)
    for vw in sorted({r["val"] for r in validation if "val" in r}):
        w = steps.get(f"val_{vw}")
        if w is None:
            continue
        for where in ("local", "net"):
            for p in (1, 2, 3):
                trains = [r for r in validation if r["bench"] == "train" and r["val"] == vw and r["where"] == where
                          and r["ranks"] == p]
                conc = [r for r in validation if r["bench"] == "concurrent" and r["val"] == vw
                        and r["where"] == where and r["ranks"] == p]
                if not trains or not conc:
                    continue
                log_every = infer_log_every(trains)
                windows = [r for r in trains if (r["step"] + 1) % log_every == 0 and r["step"] + 1 > log_every]
                if not windows:
                    windows = trains[-1:]
                measured = statistics.median(w["batch"] * p / r["samples_per_s"] for r in windows)
                compute = statistics.mean(r["ms_per_step"] for r in conc) * 1e-3
                slow = compute / w["step_cpu"]
                label = "shm" if where == "local" else "net"
                s_point = 0.0
                if p > 1:
                    s_point = local_sync.get((f"val-{where}", p), sync_points.get((label, p), 0.0))
                bn = batchnorm_syncs(w)
                sync = (lambda n, pp, s_=s_point: s_) if bn else None
                if where == "local":
                    line = lines.get(("shm", p, "dist_shared")) if p > 1 else (0.0, 0.0)
                    if line is None:
                        continue
                    f = lambda n, pp, l=line: l[0] + l[1] * n
                    pred = {"ideal": step_time(w, p, f, "unsharded", "none", slow, sync=sync)}
                    pred["none"] = pred["ideal"]
                else:
                    fit = fits.get(("net", "dist_overlap", "default"))
                    if fit is None:
                        continue
                    f = link_comm(fit[0], fit[1], fit[2], 0.0)
                    pred = {o: step_time(w, p, f, "unsharded", o, slow, sync=sync) for o in ("ideal", "none")}
                err = {o: pred[o] / measured - 1 for o in pred}
                vrows.append([vw, "one host" if where == "local" else "namespace hosts", p,
                              f"{w['step_cpu'] * 1e3:.1f}", f"{compute * 1e3:.1f}", f"{slow:.2f}",
                              f"{len(bn)} x {s_point * 1e3:.2f}" if bn and p > 1 else "-",
                              f"{pred['ideal'] * 1e3:.1f}", f"{pred['none'] * 1e3:.1f}",
                              f"{measured * 1e3:.1f}", f"{err['ideal']:+.0%}", f"{err['none']:+.0%}"])
    return vrows


def verdict(vrows):
    def pct(text):
        return abs(float(text.rstrip("%")))
    closer = [min(pct(r[-2]), pct(r[-1])) for r in vrows]
    outside = [f"{r[0]}, {r[2]} rank(s), {r[1]}" for r, c in zip(vrows, closer) if c > 20]
    net_rows = [r for r in vrows if r[1] == "namespace hosts"]
    none_wins = sum(pct(r[-1]) <= pct(r[-2]) for r in net_rows)
    return (f"{len(vrows) - len(outside)} of {len(vrows)} rows are within 20% of the measured step (the "
            "closer overlap bound; the issue's criterion)"
            + (": not " + "; ".join(outside) + "." if outside else ".")
            + (f" Across hosts `none` is the closer bound in {none_wins} of {len(net_rows)} rows." if net_rows else ""))


def infer_log_every(trains):
    """The metrics' window length (bench/scaling.sh records the run file's log_every)."""
    return max(1, int(trains[0].get("log_every", 1)))


if __name__ == "__main__":
    sys.exit(main())
