#!/usr/bin/python3
"""time_to_accuracy: trains the model and recipe of an arsenal run file
(examples/mlp-fmnist.cfg: MLP 784-1024-1024-10, Adam, cosine, clip 1.0) in
PyTorch on the same Fashion-MNIST files, and prints per-epoch test accuracy
against cumulative seconds, for run.sh's time-to-accuracy comparison.

The recipe is read from the run file and matched to arsenal, not to PyTorch's
defaults (src/train.c, src/optim.c, src/init.c, src/data/):
- data: the IDX files (gzip or plain) read as arsenal does, pixels / 255, then
  standardized with ONE scalar mean and (population) std of the training split,
  applied to both splits; train_limit / test_limit keep the first N samples;
- dense weights: he_normal = kaiming_normal_(fan_in, relu), xavier_uniform
  (gain 1); biases zero (not nn.Linear's uniform default);
- Adam with arsenal's betas / eps / weight_decay (L2, as torch.optim.Adam);
- the schedule per step: step t (0-based, the update count before this
  update) gets lr(t) of ars_schedule_lr (linear warm-up, then cosine from lr to
  min_lr over total_steps = epochs x steps_per_epoch);
- global-norm clip max_norm / (norm + 1e-6) as clip_grad_norm_;
- a new permutation every epoch; the last, partial batch is kept (loss is the
  mean over its rows);
- evaluation on the whole test split after every epoch, in batches of the
  global batch; "seconds" runs from just before the first step (after data
  loading and model setup) to the end of each epoch's evaluation, as arsenal's
  epoch "seconds".
The permutation and the initial weights are seeded but are not arsenal's
Philox draws: the two runs are the same recipe, not the same numbers.

Threads are set before torch loads: torch.set_num_threads(n),
OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = n, OMP_WAIT_POLICY=PASSIVE (see
torch_step.py). Output: a "tta_meta" JSON line, then one "tta" line per epoch.
Run with /usr/bin/python3 (Debian's python3-torch).
"""
import argparse
import gzip
import json
import math
import os
import re
import struct
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="arsenal run file (e.g. examples/mlp-fmnist.cfg)")
    p.add_argument("--set", action="append", default=[], metavar="run.KEY=VALUE",
                   help="override a [run] key, as `arsenal train --set` (repeatable)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


ARGS = parse()
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)
os.environ["MKL_NUM_THREADS"] = str(ARGS.threads)
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(ARGS.threads)

# [run] keys mirrored here, with arsenal's defaults (src/run_config.c, src/optim.c).
RUN_DEFAULTS = {
    "data": "fashion-mnist", "data_dir": "/usr/share/datasets/fashion-mnist", "train_limit": "0",
    "test_limit": "0", "standardize": "true", "epochs": "1", "max_steps": "0", "batch": "64",
    "batch_scope": "rank", "seed": "1", "loss": "cross_entropy", "optimizer": "adam", "lr": "1e-3",
    "beta1": "0.9", "beta2": "0.999", "eps": "1e-8", "weight_decay": "0", "schedule": "constant",
    "warmup_steps": "0", "min_lr": "0", "total_steps": "0", "clip_norm": "0", "clip_value": "0",
}
# [run] keys that do not change what is computed (logging, probes, checkpoints,
# communication): accepted and ignored.
RUN_IGNORED = {"log_every", "probe_every", "histogram_every", "histogram_bins", "check_every",
               "watchdog_seconds", "ckpt_every", "ckpt_keep", "overlap", "bucket_mb", "first_bucket_mb",
               "nonfinite"}
INITS = {"he_normal", "he_uniform", "xavier_uniform", "xavier_normal", "zeros"}
ACTIVATIONS = {"none", "relu"}


def fail(message):
    sys.exit(f"time_to_accuracy: {message}")


def read_config(path, overrides):
    """([run] dict, [dense] dicts) of an INI-like arsenal run file; refuses
    what this script does not reproduce rather than train something else."""
    sections = []
    with open(path) as f:
        for number, raw in enumerate(f, 1):
            line = re.split(r"[;#]", raw, maxsplit=1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"\[([A-Za-z0-9_]+)\]", line)
            if m:
                sections.append((m.group(1), {}, number))
            elif "=" in line and sections:
                key, value = (s.strip() for s in line.split("=", 1))
                sections[-1][1][key] = value
            else:
                fail(f"{path}:{number}: cannot read '{line}'")
    run, given = dict(RUN_DEFAULTS), set()
    dense = []
    for name, keys, number in sections:
        if name == "run":
            run.update(keys)
            given |= set(keys)
        elif name == "dense":
            dense.append((keys, number))
        else:
            fail(f"{path}:{number}: [{name}] is not reproduced here (only [run] and [dense])")
    for item in overrides:
        m = re.fullmatch(r"run\.([A-Za-z0-9_]+)=(.*)", item)
        if not m:
            fail(f"--set {item}: expected run.KEY=VALUE")
        run[m.group(1)] = m.group(2)
        given.add(m.group(1))
    unknown = sorted(set(run) - set(RUN_DEFAULTS) - RUN_IGNORED)
    if unknown:
        fail(f"{path}: [run] {', '.join(unknown)}: not reproduced here")
    checks = [("data", run["data"] in ("fashion-mnist", "mnist")), ("loss", run["loss"] == "cross_entropy"),
              ("optimizer", run["optimizer"] == "adam"), ("schedule", run["schedule"] in ("constant", "cosine")),
              ("max_steps", int(run["max_steps"]) == 0), ("total_steps", int(run["total_steps"]) == 0),
              ("clip_value", float(run["clip_value"]) == 0)]
    for key, ok in checks:
        if not ok:
            fail(f"{path}: [run] {key} = {run[key]}: not reproduced here")
    if run["data"] == "mnist" and "data_dir" not in given:
        run["data_dir"] = "/usr/share/datasets/mnist"
    layers = []
    for keys, number in dense:
        extra = set(keys) - {"units", "init", "activation"}
        init, act = keys.get("init", "xavier_uniform"), keys.get("activation", "none")
        if extra or init not in INITS or act not in ACTIVATIONS:
            fail(f"{path}:{number}: [dense] {keys}: not reproduced here "
                 f"(keys units, init {sorted(INITS)}, activation none/relu)")
        layers.append((int(keys["units"]), init, act))
    if not layers:
        fail(f"{path}: no [dense] layer")
    return run, layers


def read_idx(directory, stem):
    """An IDX array of unsigned bytes, from STEM.gz or STEM (as src/data/idx.c)."""
    for path, opener in ((os.path.join(directory, stem + ".gz"), gzip.open),
                         (os.path.join(directory, stem), open)):
        if os.path.exists(path):
            with opener(path, "rb") as f:
                data = f.read()
            break
    else:
        fail(f"{directory}: neither {stem}.gz nor {stem} found")
    zero, kind, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or kind != 0x08:
        fail(f"{path}: not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != math.prod(dims):
        fail(f"{path}: {payload.size} bytes of data for dimensions {dims}")
    return payload.reshape(dims)


def load(run):
    """(train x, train y, test x, test y, mean, std) as src/train.c's ars_load_run_data."""
    def split(prefix, limit):
        x = read_idx(run["data_dir"], f"{prefix}-images-idx3-ubyte")
        y = read_idx(run["data_dir"], f"{prefix}-labels-idx1-ubyte")
        if limit > 0:
            x, y = x[:limit], y[:limit]
        return x.reshape(len(x), -1).astype(np.float32) * np.float32(1.0 / 255.0), y.astype(np.int64)
    xtr, ytr = split("train", int(run["train_limit"]))
    xte, yte = split("t10k", int(run["test_limit"]))
    mean, std = 0.0, 1.0
    if run["standardize"].lower() in ("true", "1", "yes", "on"):
        # one scalar over all pixels, two passes in double (ars_dataset_mean_std)
        mean = float(xtr.mean(dtype=np.float64))
        std = math.sqrt(float(np.mean(np.square(xtr.astype(np.float64) - mean))))
        scale = 1.0 / std if std > 0 else 1.0
        xtr = ((xtr - mean) * scale).astype(np.float32)
        xte = ((xte - mean) * scale).astype(np.float32)
    return torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte), mean, std


def build(layers, in_dim, seed):
    torch.manual_seed(seed)
    modules, width = [], in_dim
    for units, init, act in layers:
        linear = nn.Linear(width, units)
        w = linear.weight   # [out, in]: fan_in = in, as src/init.c (cols)
        if init == "he_normal":
            nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")
        elif init == "he_uniform":
            nn.init.kaiming_uniform_(w, mode="fan_in", nonlinearity="relu")
        elif init == "xavier_uniform":
            nn.init.xavier_uniform_(w)
        elif init == "xavier_normal":
            nn.init.xavier_normal_(w)
        else:
            nn.init.zeros_(w)
        nn.init.zeros_(linear.bias)   # arsenal's bias role: zeros
        modules.append(linear)
        if act == "relu":
            modules.append(nn.ReLU())
        width = units
    return nn.Sequential(*modules)


def schedule_lr(run, base, step, total):
    """ars_schedule_lr (src/optim.c)."""
    warmup, min_lr = int(run["warmup_steps"]), float(run["min_lr"])
    if step < warmup:
        return base * (step + 1) / warmup
    if run["schedule"] != "cosine":
        return base
    t, span = step - warmup, total - warmup
    if t >= span:
        return min_lr
    return min_lr + (base - min_lr) * 0.5 * (1.0 + math.cos(math.pi * t / span))


def evaluate(model, x, y, batch):
    model.eval()
    correct, loss = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            logits = model(x[i:i + batch])
            loss += F.cross_entropy(logits, y[i:i + batch], reduction="sum").item()
            correct += (logits.argmax(1) == y[i:i + batch]).sum().item()
    model.train()
    return correct / len(x), loss / len(x)


def emit(record):
    print(json.dumps(record), flush=True)


def main():
    run, layers = read_config(ARGS.config, ARGS.set)
    xtr, ytr, xte, yte, mean, std = load(run)
    classes = int(max(ytr.max().item(), yte.max().item())) + 1
    if layers[-1][0] != classes:
        fail(f"{ARGS.config}: the last layer has {layers[-1][0]} outputs but the data has {classes} classes")
    batch, epochs, seed = int(run["batch"]), int(run["epochs"]), int(run["seed"])
    lr, clip = float(run["lr"]), float(run["clip_norm"])
    n = len(xtr)
    steps_per_epoch = (n - 1) // batch + 1   # the last, partial batch is a step (src/data/sampler.c)
    total = epochs * steps_per_epoch
    model = build(layers, xtr.shape[1], seed)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=lr, betas=(float(run["beta1"]), float(run["beta2"])), eps=float(run["eps"]),
                           weight_decay=float(run["weight_decay"]))
    head = {"impl": "torch", "threads": torch.get_num_threads(), "ranks": 1, "batch": batch}
    emit({"bench": "tta_meta", **head, "torch": torch.__version__, "train": n, "test": len(xte),
          "mean": round(mean, 6), "std": round(std, 6), "steps_per_epoch": steps_per_epoch,
          "params": sum(p.numel() for p in params)})
    g = torch.Generator().manual_seed(seed)
    step = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=g)
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            for group in opt.param_groups:
                group["lr"] = schedule_lr(run, lr, step, total)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            loss_sum += loss.item()
            step += 1
        acc, test_loss = evaluate(model, xte, yte, batch)
        emit({"bench": "tta", **head, "epoch": epoch + 1, "step": step,
              "train_loss": round(loss_sum / steps_per_epoch, 6), "test_loss": round(test_loss, 6),
              "test_acc": acc, "seconds": round(time.perf_counter() - start, 3),
              "cpu_seconds": round(time.process_time() - cpu_start, 3)})


if __name__ == "__main__":
    main()
