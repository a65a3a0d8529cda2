#!/usr/bin/python3
"""make_reference: writes tests/data/reference.h5, the PyTorch reference that
tests/test_reference.c compares arsenal against (in the manner of
karpathy/llm.c's test_gpt2.c). This script owns the file and its layout.

Run (Debian python3-torch, python3-h5py, numpy; the test suite itself only
needs the committed .h5 file):

    /usr/bin/python3 tests/reference/make_reference.py [output.h5]

The model is arsenal's layer list below (SPECS), with every layer kind
arsenal has, rebuilt from torch.nn.functional ops (float32, CPU, one thread,
deterministic). Dropout is not torch's: its mask is reproduced bit for bit
from arsenal's Philox 4x32-10 (src/rng.c) keyed exactly as
src/layers/dropout.c keys it, which also cross-checks the generator
(known-answer vectors of Random123 are checked here first). The file has
no timestamps: regenerating it reproduces the same bytes.

What is computed: one training step as src/train.c does it (train mode,
pass.step = global step s starting at 0, sample ids of the batch), the
softmax cross-entropy over the batch mean, the backward pass, then three
optimizer steps (forward/backward recomputed each step, with dropout mask
of step s) of clip_grad_norm_ (clip_norm below the gradient norm, so every
step clips) + torch.optim.Adam(lr=1e-2), and finally an eval-mode forward.
Separately: nn.MSELoss on the step-0 logits against random targets.

HDF5 layout (float tensors float32, row-major, PyTorch shapes: a dense
weight is [out, in]). Parameters and state are packed, one vector per
snapshot, with a name index: a tensor is "<layer>/<tensor>", <layer> being
arsenal's layer name "%03d_<kind>" and <tensor> its tensor name (weight,
bias, gamma, beta, projection; state: running_mean, running_var). The C test
finds every tensor of its model by that name, so nothing depends on the
order of arsenal's flat buffers. (Packed rather than one dataset per tensor:
HDF5 spends ~450 bytes of metadata per dataset, which would triple the file.)

  attributes of /:
    format (int 1), torch_version (str), spec (str: one line per layer,
    "kind key=value ...", as test_reference.c formats its own specs),
    seed (uint64), rows, in_dim, out_dim, steps, param_count,
    state_count (int32), lr, clip_norm, beta1, beta2, adam_eps (float32)
  /index/name [T] string   "<layer>/<tensor>", parameters then state
  /index/meta [T, 4] int64 (buffer 0 = parameters / 1 = state, offset
                           in the packed vector, rows, cols; vectors rows 1)
  /input [rows, in_dim]   /labels [rows] int32   /sample_ids [rows] uint32
  /philox/input [k, 3] uint64 (seed, stream, counter)
  /philox/output [k, 4] uint32 ars_philox words
  /dropout_mask [steps, rows, width] uint8    1 = kept, the mask of step s
  /init/params [P], /init/state [S]           before training
  /step0/acts [rows, sum of widths]           every layer's output at step 0
  /step0/act_width [layers] int32             (train mode), side by side
  /step0/logits [rows, out_dim], /step0/loss float64 scalar (batch mean),
  /step0/dlogits [rows, out_dim]              d(mean loss)/d(logits)
  /step0/grads [P]                            step-0 gradients, unclipped
  /step0/state [S]                            running statistics after it
  /train/loss, /train/grad_norm (unclipped), /train/clip_scale [steps] float64
  /final/params [P], /final/state [S]         after `steps` optimizer steps
  /eval_logits [rows, out_dim]                eval-mode forward after them
  /mse/prediction, /mse/target [rows, out_dim], /mse/loss float64 scalar,
  /mse/grad [rows, out_dim]                   d(MSELoss)/d(prediction)
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- the model
# (kind, options) in arsenal's spec terms; "residual" ... "residual_add"
# pairs are y = x + F(x), with a projection [out, in_skip] when widths differ.
SPECS = [
    ("dense", dict(units=16, bias=0)),   # no bias: BatchNorm follows (a bias there has zero gradient)
    ("batchnorm", dict(momentum=0.1, eps=1e-5)),
    ("relu", {}),
    ("residual", {}),
    ("dense", dict(units=16, bias=1)),
    ("layernorm", dict(eps=1e-5)),
    ("gelu", {}),
    ("dense", dict(units=16, bias=1)),
    ("residual_add", {}),
    ("residual", {}),
    ("dense", dict(units=8, bias=1)),
    ("tanh", {}),
    ("residual_add", {}),                # 16 -> 8: projection [8, 16]
    ("dropout", dict(rate=0.25)),
    ("dense", dict(units=10, bias=1)),
    ("elu", dict(alpha=0.8)),
    ("dense", dict(units=10, bias=1)),
    ("leaky_relu", dict(alpha=0.1)),
    ("selu", {}),
    ("dense", dict(units=10, bias=1)),
    ("sigmoid", {}),
    ("dense", dict(units=5, bias=1)),
]
ROWS, IN_DIM, CLASSES = 6, 12, 5
SEED = 0x00C0FFEE12345678            # both 32-bit halves of the Philox key in use
SAMPLE_IDS = [7, 3, 1000, 42, 0, 123456789]
STEPS = 3
LR = 1e-2
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
ARS_STREAM_DROPOUT = 3
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "reference.h5")


def spec_text():
    """The spec as test_reference.c prints its own (C's %g == Python's :g)."""
    keys = {"dense": ("units", "bias"), "batchnorm": ("momentum", "eps"), "layernorm": ("eps",),
            "dropout": ("rate",), "elu": ("alpha",), "leaky_relu": ("alpha",)}
    lines = []
    for kind, opt in SPECS:
        parts = [kind]
        for k in keys.get(kind, ()):
            v = opt[k]
            parts.append(f"{k}={v:d}" if isinstance(v, int) else f"{k}={float(np.float32(v)):g}")
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


# ------------------------------------------------- Philox 4x32-10 (src/rng.c)
M32 = 0xFFFFFFFF


def philox(seed, stream, counter):
    """ars_philox: counter words (lo, hi) and stream words (lo, hi) are the
    four counter lanes, the seed's two halves the key."""
    c0, c1, c2, c3 = counter & M32, counter >> 32 & M32, stream & M32, stream >> 32 & M32
    k0, k1 = seed & M32, seed >> 32 & M32
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & M32, (p0 >> 32) ^ c3 ^ k1, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return [c0, c1, c2, c3]


def check_philox_known_answers():
    """Random123's kat_vectors for philox4x32_10 (ctr, key) -> out."""
    def run(ctr, key):
        return philox(key[0] | key[1] << 32, ctr[2] | ctr[3] << 32, ctr[0] | ctr[1] << 32)
    assert run([0, 0, 0, 0], [0, 0]) == [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
    assert run([M32] * 4, [M32, M32]) == [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
    assert run([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0]) == \
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]


def u32_to_unit(x):
    """ars_u32_to_unit in float32 arithmetic, as C evaluates it."""
    return (np.float32(x >> 9) + np.float32(0.5)) * np.float32(1.0 / 8388608.0)


def dropout_mask(layer_index, step, ids, dim, rate):
    """row_mask() of src/layers/dropout.c for every row: 1 = kept."""
    stream = ARS_STREAM_DROPOUT << 32 | layer_index
    rate32 = np.float32(rate)
    mask = np.zeros((len(ids), dim), dtype=np.uint8)
    for r, sid in enumerate(ids):
        w = philox(SEED, stream, (step << 32 | sid) & (2**64 - 1))
        row_key = w[1] << 32 | w[0]
        for j in range(dim):
            if j % 4 == 0:
                w = philox(row_key, stream, j // 4)
            mask[r, j] = u32_to_unit(w[j % 4]) >= rate32
    return mask


# ------------------------------------------------------------ torch side
def layer_names():
    return [f"{i:03d}_{kind}" for i, (kind, _) in enumerate(SPECS)]


def build(gen):
    """Parameters (name -> {tensor: Tensor}) and state, initialized at
    random (non-default gamma, beta and running statistics too, so every
    term of every formula matters). Returns params, state, widths."""
    params, state, widths = {}, {}, []
    width, stack = IN_DIM, []
    for name, (kind, opt) in zip(layer_names(), SPECS):
        p = {}
        if kind == "dense":
            bound = 2.0 / np.sqrt(width)   # twice torch Linear's default: livelier logits
            p["weight"] = (torch.rand(opt["units"], width, generator=gen) * 2 - 1) * bound
            if opt["bias"]:
                p["bias"] = (torch.rand(opt["units"], generator=gen) * 2 - 1) * bound
            width = opt["units"]
        elif kind in ("batchnorm", "layernorm"):
            p["gamma"] = 1 + 0.2 * torch.randn(width, generator=gen)
            p["beta"] = 0.1 * torch.randn(width, generator=gen)
            if kind == "batchnorm":
                state[name] = {"running_mean": 0.1 * torch.randn(width, generator=gen),
                               "running_var": 1 + 0.5 * torch.rand(width, generator=gen)}
        elif kind == "residual":
            stack.append(width)
        elif kind == "residual_add":
            skip = stack.pop()
            if skip != width:
                p["projection"] = (torch.rand(width, skip, generator=gen) * 2 - 1) / np.sqrt(skip)
        if p:
            params[name] = {k: v.float().requires_grad_(True) for k, v in p.items()}
        widths.append(width)
    return params, state, widths


def forward(params, state, x, train, step):
    """Runs the layer list; returns every layer's output."""
    acts, skips = [], []
    h = x
    for i, (name, (kind, opt)) in enumerate(zip(layer_names(), SPECS)):
        p = params.get(name, {})
        if kind == "dense":
            h = F.linear(h, p["weight"], p.get("bias"))
        elif kind == "batchnorm":
            s = state[name]
            h = F.batch_norm(h, s["running_mean"], s["running_var"], p["gamma"], p["beta"],
                             training=train, momentum=opt["momentum"], eps=opt["eps"])
        elif kind == "layernorm":
            h = F.layer_norm(h, (h.shape[1],), p["gamma"], p["beta"], eps=opt["eps"])
        elif kind == "relu":
            h = F.relu(h)
        elif kind == "gelu":
            h = F.gelu(h)   # exact erf form
        elif kind == "tanh":
            h = torch.tanh(h)
        elif kind == "sigmoid":
            h = torch.sigmoid(h)
        elif kind == "elu":
            h = F.elu(h, alpha=opt["alpha"])
        elif kind == "leaky_relu":
            h = F.leaky_relu(h, negative_slope=opt["alpha"])
        elif kind == "selu":
            h = F.selu(h)
        elif kind == "residual":
            skips.append(h)
        elif kind == "residual_add":
            skip = skips.pop()
            h = h + (F.linear(skip, p["projection"]) if "projection" in p else skip)
        elif kind == "dropout":
            if train:
                mask = torch.from_numpy(dropout_mask(i, step, SAMPLE_IDS, h.shape[1], opt["rate"]))
                scale = np.float32(1.0) / (np.float32(1.0) - np.float32(opt["rate"]))
                h = h * mask.float() * float(scale)
        else:
            raise ValueError(kind)
        acts.append(h)
    return acts


def all_params(params):
    return [t for name in params for t in params[name].values()]


def global_norm(params):
    return float(np.sqrt(sum(float((t.grad.double() ** 2).sum()) for t in all_params(params))))


def pack(tensors):
    """Concatenates {layer: {tensor: T}} in layer order into one vector."""
    parts = [t.detach().reshape(-1) for layer in layer_names() for t in tensors.get(layer, {}).values()]
    return torch.cat(parts).numpy().astype(np.float32) if parts else np.zeros(0, np.float32)


def index(params, state):
    """Names and (buffer, offset, rows, cols) of every packed tensor."""
    names, meta = [], []
    for buffer, tensors in ((0, params), (1, state)):
        offset = 0
        for layer in layer_names():
            for k, t in tensors.get(layer, {}).items():
                rows, cols = (t.shape[0], t.shape[1]) if t.dim() == 2 else (1, t.shape[0])
                names.append(f"{layer}/{k}")
                meta.append((buffer, offset, rows, cols))
                offset += t.numel()
    return np.array(names, dtype="S32"), np.array(meta, dtype=np.int64)


def create_file(path):
    """An HDF5 file without timestamps (objects would record their creation
    time), so that regenerating gives the same bytes: no spurious diffs."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    f = h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    for group in ("index", "philox", "init", "step0", "train", "final", "mse"):
        h5py.h5g.create(f.id, group.encode(), gcpl=gcpl)
    return f


def snapshot(d):
    return {layer: {k: v.detach().clone() for k, v in t.items()} for layer, t in d.items()}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    check_philox_known_answers()

    gen = torch.Generator().manual_seed(20240611)
    params, state, widths = build(gen)
    names = layer_names()
    x = torch.randn(ROWS, IN_DIM, generator=gen)
    labels = torch.randint(0, CLASSES, (ROWS,), generator=gen)
    mse_target = torch.randn(ROWS, CLASSES, generator=gen)
    init_params, init_state = snapshot(params), snapshot(state)
    drop_index = next(i for i, (k, _) in enumerate(SPECS) if k == "dropout")
    masks = np.stack([dropout_mask(drop_index, s, SAMPLE_IDS, widths[drop_index - 1],
                                   SPECS[drop_index][1]["rate"]) for s in range(STEPS)])

    opt = torch.optim.Adam(all_params(params), lr=LR, betas=(BETA1, BETA2), eps=ADAM_EPS)
    losses, norms, scales = [], [], []
    clip_norm = None
    for step in range(STEPS):
        opt.zero_grad(set_to_none=True)
        acts = forward(params, state, x, train=True, step=step)
        logits = acts[-1]
        if step == 0:
            logits.retain_grad()
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        norm = global_norm(params)
        if step == 0:
            step0 = dict(acts=[a.detach().clone() for a in acts], logits=logits.detach().clone(),
                         loss=float(loss), dlogits=logits.grad.detach().clone(),
                         grads={n: {k: v.grad.detach().clone() for k, v in t.items()}
                                for n, t in params.items()},
                         state=snapshot(state))
            clip_norm = float(np.float32(float(f"{0.5 * norm:.2g}")))   # well below: every step clips
        total = torch.nn.utils.clip_grad_norm_(all_params(params), clip_norm)
        if not total > clip_norm:
            raise SystemExit(f"step {step}: gradient norm {float(total):g} <= clip_norm {clip_norm:g}; "
                             "lower clip_norm so that clipping is active on every step")
        losses.append(float(loss))
        norms.append(norm)
        scales.append(min(1.0, clip_norm / (float(total) + 1e-6)))
        opt.step()
    with torch.no_grad():
        eval_logits = forward(params, state, x, train=False, step=STEPS)[-1]

    # MSE on a small output: the step-0 logits against random targets.
    pred = step0["logits"].clone().requires_grad_(True)
    mse = torch.nn.MSELoss()(pred, mse_target)
    mse.backward()

    philox_in = [(SEED, ARS_STREAM_DROPOUT << 32 | drop_index, 0), (0, 0, 0), (2**64 - 1, 2**64 - 1, 2**64 - 1),
                 (SEED, 1 << 32 | 4, 12345), (0x0123456789ABCDEF, 5 << 32, 2**40 + 7)]
    philox_out = [philox(*t) for t in philox_in]

    param_count = sum(t.numel() for t in all_params(params))
    state_count = sum(t.numel() for d in state.values() for t in d.values())
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with create_file(out) as f:
        a = f.attrs
        a["format"] = np.int32(1)
        a["torch_version"] = np.bytes_(torch.__version__)
        a["spec"] = np.bytes_(spec_text())
        a["seed"] = np.uint64(SEED)
        for k, v in dict(rows=ROWS, in_dim=IN_DIM, out_dim=CLASSES, steps=STEPS,
                         param_count=param_count, state_count=state_count).items():
            a[k] = np.int32(v)
        for k, v in dict(lr=LR, clip_norm=clip_norm, beta1=BETA1, beta2=BETA2, adam_eps=ADAM_EPS).items():
            a[k] = np.float32(v)
        f["input"] = x.numpy()
        f["labels"] = labels.numpy().astype(np.int32)
        f["sample_ids"] = np.array(SAMPLE_IDS, dtype=np.uint32)
        f["philox/input"] = np.array(philox_in, dtype=np.uint64)
        f["philox/output"] = np.array(philox_out, dtype=np.uint32)
        f["dropout_mask"] = masks
        f["index/name"], f["index/meta"] = index(params, state)
        f["init/params"], f["init/state"] = pack(init_params), pack(init_state)
        f["step0/acts"] = torch.cat(step0["acts"], dim=1).numpy()
        f["step0/act_width"] = np.array(widths, dtype=np.int32)
        f["step0/logits"] = step0["logits"].numpy()
        f["step0/loss"] = np.float64(step0["loss"])
        f["step0/dlogits"] = step0["dlogits"].numpy()
        f["step0/grads"], f["step0/state"] = pack(step0["grads"]), pack(step0["state"])
        f["train/loss"] = np.array(losses, dtype=np.float64)
        f["train/grad_norm"] = np.array(norms, dtype=np.float64)
        f["train/clip_scale"] = np.array(scales, dtype=np.float64)
        f["final/params"], f["final/state"] = pack(params), pack(state)
        f["eval_logits"] = eval_logits.numpy()
        f["mse/prediction"] = step0["logits"].numpy()
        f["mse/target"] = mse_target.numpy()
        f["mse/loss"] = np.float64(float(mse))
        f["mse/grad"] = pred.grad.numpy()

    np.set_printoptions(precision=6, suppress=True, linewidth=120)
    print(f"wrote {os.path.normpath(out)} ({os.path.getsize(out)} bytes), torch {torch.__version__}")
    print(f"model: {len(SPECS)} layers, {param_count} parameters, {state_count} state values")
    print(spec_text(), end="")
    print(f"dropout masks (layer {drop_index}, rate {SPECS[drop_index][1]['rate']}): kept "
          + ", ".join(f"step {s}: {int(masks[s].sum())}/{masks[s].size}" for s in range(STEPS)))
    print("step-0 logits:\n", step0["logits"].numpy())
    print(f"step-0 cross-entropy loss {step0['loss']:.9g}")
    for s in range(STEPS):
        print(f"step {s}: loss {losses[s]:.9g}  grad_norm {norms[s]:.9g}  clip_norm {clip_norm:g}  "
              f"clip_scale {scales[s]:.9g}")
    smallest = min(float(g.abs().min()) for d in step0["grads"].values() for g in d.values()) * scales[0]
    print(f"smallest |clipped gradient| element at step 0: {smallest:.3g} (Adam eps {ADAM_EPS:g})")
    bn = next(n for n in names if n.endswith("batchnorm"))
    print(f"{bn} running_mean after 3 steps:", state[bn]["running_mean"].numpy())
    print(f"{bn} running_var  after 3 steps:", state[bn]["running_var"].numpy())
    print("eval logits after training:\n", eval_logits.numpy())
    print(f"MSE loss {float(mse):.9g}")


if __name__ == "__main__":
    main()
