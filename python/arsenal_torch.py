"""arsenal_torch: an arsenal checkpoint as a torch.nn.Module (h5py + PyTorch).

Shipped with arsenal for users who take a trained model to PyTorch; the C
program does not use it. It reads a checkpoint (docs/checkpoint-format.md):
the run file in /config says what each layer is (kernel sizes, strides,
epsilons, slopes), /model holds the tensors in PyTorch's own layouts, and
the root attributes data_mean / data_std / input_shape say how the run
standardized its inputs and what one sample is.

    import arsenal_torch
    model = arsenal_torch.load("runs/x/latest.h5")    # in eval mode
    x = model.standardize(raw)           # as the run standardized its data
    logits = model(x)                    # [N, classes] (or regression outputs)
    probabilities = model.predict(raw)   # what `arsenal predict` writes

Covered kinds: dense, sigmoid, tanh, relu, leaky_relu, elu, selu, gelu,
batchnorm, batchnorm2d (evaluation form: running statistics), layernorm,
dropout (identity in evaluation), residual ... residual_add (the identity,
a projection matrix, or the image shortcut: a 1x1 convolution and its
BatchNorm2d), conv2d, maxpool2d, avgpool2d, global_avgpool, flatten, and
the run-file sugar that expands into them ([basic_block], `activation =`).
Any other kind is refused by name. tests/cli_predict.sh compares this
module's outputs with `arsenal predict` on the same inputs.
"""

import math

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["load", "ArsenalModel", "CheckpointError", "parse_run_file", "run_section", "read_idx", "SUPPORTED_KINDS"]

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu")
SUPPORTED_KINDS = ("dense", "batchnorm", "batchnorm2d", "layernorm", "dropout", "residual", "residual_add",
                   "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "flatten") + ACTIVATIONS


class CheckpointError(ValueError):
    """A checkpoint this module cannot turn into a model (the message says why)."""


# ---- the run file (/config) -----------------------------------------------------------

def _sections(text):
    """The sections of a run file as written: a list of (name, keys)."""
    sections = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise CheckpointError(f"/config:{number}: malformed section header {line!r}")
            sections.append((line[1:-1].strip(), {}))
            continue
        for i in range(1, len(line)):   # an inline comment: ';' after a space
            if line[i] == ";" and line[i - 1].isspace():
                line = line[:i].rstrip()
                break
        key, sep, value = line.partition("=")
        if not sep or not sections:
            raise CheckpointError(f"/config:{number}: expected 'key = value', found {line!r}")
        sections[-1][1][key.strip()] = value.strip()
    return sections


def run_section(text):
    """The [run] keys of a run file."""
    return next((keys for name, keys in _sections(text) if name == "run"), {})


def parse_run_file(text):
    """The layer sections of a resolved run file, blocks expanded and sugar
    resolved as arsenal's run-file reader does: a list of (kind, keys)."""
    sections = _sections(text)
    # [repeat] count = N ... [end] and [residual] ... [end]
    out, stack = [], []
    for name, keys in sections:
        if name in ("run", "health"):
            continue
        if name == "repeat":
            stack.append(("repeat", int(keys.get("count", "1")), out))
            out = []
        elif name == "residual":
            stack.append(("residual", 0, out))
            out = [("residual", keys)]
        elif name == "end":
            if not stack:
                raise CheckpointError("/config: [end] without a block")
            kind, count, parent = stack.pop()
            if kind == "repeat":
                parent.extend(out * count)
            else:
                out.append(("residual_add", {}))
                parent.extend(out)
            out = parent
        else:
            out.append((name, keys))
    if stack:
        raise CheckpointError("/config: a block without its [end]")
    # sugar: [basic_block], `activation = <kind>` on dense / conv2d
    layers = []
    for kind, keys in out:
        if kind == "basic_block":
            eps = keys.get("eps", "1e-5")
            stride = keys.get("stride", "1")
            conv = {"channels": keys["channels"], "kernel": "3", "padding": "1", "bias": "false"}
            layers += [("residual", {}), ("conv2d", dict(conv, stride=stride)), ("batchnorm2d", {"eps": eps}),
                       ("relu", {}), ("conv2d", dict(conv, stride="1")), ("batchnorm2d", {"eps": eps}),
                       ("residual_add", {"eps": eps}), ("relu", {})]
            continue
        layers.append((kind, keys))
        activation = keys.get("activation", "none")
        if kind in ("dense", "conv2d") and activation != "none":
            layers.append((activation, {}))
    return layers


def _pair(keys, name, default):
    text = keys.get(name)
    if text is None:
        return default
    for sep in ("x", ","):
        if sep in text:
            a, b = text.split(sep, 1)
            return (int(a), int(b))
    return (int(text), int(text))


def _float(keys, name, default):
    return float(keys.get(name, default))


# ---- layers ------------------------------------------------------------------------

class Flat(nn.Module):
    """A module over the flat features of each sample ([N, d]); the output
    takes back the input's shape when the width is kept."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        y = self.inner(x.flatten(1))
        return y.reshape(x.shape) if y.shape[1] == math.prod(x.shape[1:]) else y


class Dense(nn.Linear):
    def forward(self, x):
        return super().forward(x.flatten(1))


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


class Residual(nn.Module):
    """The start of a block: its input is kept for residual_add."""

    def forward(self, x):
        return x


class ResidualAdd(nn.Module):
    """y + shortcut(skip): the identity, skip @ P^T, or BN(conv1x1(skip))."""

    def __init__(self, projection=None, norm=None):
        super().__init__()
        self.projection = None if projection is None else nn.Parameter(projection, requires_grad=False)
        self.norm = norm

    def forward(self, y, skip):
        if self.projection is None:
            return (y.flatten(1) + skip.flatten(1)).reshape(y.shape)
        if self.projection.dim() == 2:
            return (y.flatten(1) + skip.flatten(1) @ self.projection.t()).reshape(y.shape)
        h, w = skip.shape[2], skip.shape[3]
        stride = next(s for s in range(1, h + 1) if (h - 1) // s + 1 == y.shape[2] and (w - 1) // s + 1 == y.shape[3])
        return y + self.norm(F.conv2d(skip, self.projection, stride=stride))


def _tensor(group, name):
    if name not in group:
        raise CheckpointError(f"{group.name}/{name} is missing")
    return torch.from_numpy(np.asarray(group[name][()], dtype=np.float32))


def _batchnorm(cls, width, eps, gamma, beta, mean, var):
    bn = cls(width, eps=eps)
    bn.weight.data.copy_(gamma)
    bn.bias.data.copy_(beta)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    return bn


def _make_layer(kind, keys, group):
    if kind == "dense":
        weight = _tensor(group, "weight")
        has_bias = "bias" in group
        layer = Dense(weight.shape[1], weight.shape[0], bias=has_bias)
        layer.weight.data.copy_(weight)
        if has_bias:
            layer.bias.data.copy_(_tensor(group, "bias"))
        return layer
    if kind in ACTIVATIONS:
        return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "selu": nn.SELU, "gelu": nn.GELU,
                "leaky_relu": lambda: nn.LeakyReLU(_float(keys, "slope", 0.01)),
                "elu": lambda: nn.ELU(_float(keys, "alpha", 1.0))}[kind]()
    if kind in ("batchnorm", "batchnorm2d"):
        gamma = _tensor(group, "gamma")
        bn = _batchnorm(nn.BatchNorm1d if kind == "batchnorm" else nn.BatchNorm2d, gamma.shape[0],
                        _float(keys, "eps", 1e-5), gamma, _tensor(group, "beta"), _tensor(group, "running_mean"),
                        _tensor(group, "running_var"))
        return Flat(bn) if kind == "batchnorm" else bn
    if kind == "layernorm":
        gamma = _tensor(group, "gamma")
        ln = nn.LayerNorm(gamma.shape[0], eps=_float(keys, "eps", 1e-5))
        ln.weight.data.copy_(gamma)
        ln.bias.data.copy_(_tensor(group, "beta"))
        return Flat(ln)
    if kind == "dropout":
        return nn.Dropout(_float(keys, "rate", 0.5))
    if kind == "conv2d":
        weight = _tensor(group, "weight")
        groups = int(keys.get("groups", "1"))
        has_bias = "bias" in group
        conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                         stride=_pair(keys, "stride", (1, 1)), padding=_pair(keys, "padding", (0, 0)),
                         dilation=_pair(keys, "dilation", (1, 1)), groups=groups, bias=has_bias)
        conv.weight.data.copy_(weight)
        if has_bias:
            conv.bias.data.copy_(_tensor(group, "bias"))
        return conv
    if kind in ("maxpool2d", "avgpool2d"):
        kernel = _pair(keys, "kernel", None)
        stride = _pair(keys, "stride", kernel)
        padding = _pair(keys, "padding", (0, 0))
        if kind == "maxpool2d":
            return nn.MaxPool2d(kernel, stride, padding)
        return nn.AvgPool2d(kernel, stride, padding, count_include_pad=True)
    if kind == "global_avgpool":
        return GlobalAvgPool()
    if kind == "flatten":
        return Flatten()
    if kind == "residual":
        return Residual()
    if kind == "residual_add":
        if "projection" not in group:
            return ResidualAdd()
        projection = _tensor(group, "projection")
        if projection.dim() == 2:
            return ResidualAdd(projection)
        gamma = _tensor(group, "proj_gamma")
        norm = _batchnorm(nn.BatchNorm2d, gamma.shape[0], _float(keys, "eps", 1e-5), gamma,
                          _tensor(group, "proj_beta"), _tensor(group, "proj_mean"), _tensor(group, "proj_var"))
        return ResidualAdd(projection, norm)
    raise CheckpointError(f"kind '{kind}' is not supported")


class ArsenalModel(nn.Module):
    """The layers of a checkpoint in order; residual blocks keep their
    input on a stack. forward() takes standardized samples, [N, *input_shape]
    or flat [N, values], and returns the logits (or regression outputs)."""

    def __init__(self, layers, kinds, names, input_shape, data_mean, data_std, classifier, path):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.kinds = list(kinds)
        self.names = list(names)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.data_mean = data_mean
        self.data_std = data_std
        self.classifier = classifier
        self.path = path

    def forward(self, x):
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.input_shape is not None:
            x = x.reshape((x.shape[0],) + self.input_shape)
        skips = []
        for kind, layer in zip(self.kinds, self.layers):
            if kind == "residual":
                skips.append(x)
            elif kind == "residual_add":
                x = layer(x, skips.pop())
            else:
                x = layer(x)
        return x.flatten(1)

    def standardize(self, raw):
        """raw samples as float32, standardized exactly as arsenal does:
        (x - mean) * (1 / std) in float64, rounded to float32."""
        if self.data_mean is None or self.data_std is None:
            raise CheckpointError(f"{self.path} predates the stored data_mean/data_std: pass them to load() "
                                  "(arsenal predict prints the values it recomputes)")
        x = np.asarray(raw, dtype=np.float32)
        if self.data_mean == 0 and self.data_std == 1:
            return torch.from_numpy(np.ascontiguousarray(x))
        scale = 1.0 / self.data_std if self.data_std > 0 else 1.0
        return torch.from_numpy(((x.astype(np.float64) - self.data_mean) * scale).astype(np.float32))

    @torch.no_grad()
    def predict(self, raw):
        """What `arsenal predict` writes: class probabilities (softmax of the
        logits, in float64) or the regression outputs, as a numpy array."""
        y = self(self.standardize(raw))
        if not self.classifier:
            return y.numpy()
        return torch.softmax(y.double(), dim=1).numpy()


def load(path, data_mean=None, data_std=None):
    """Reads an arsenal checkpoint into an ArsenalModel in eval mode.
    data_mean / data_std override (or supply, for older files) the run's
    input standardization."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format", b"") not in (b"arsenal-checkpoint", "arsenal-checkpoint"):
            raise CheckpointError(f"{path}: not an arsenal checkpoint")
        text = f["config"][()]
        text = text.decode() if isinstance(text, bytes) else str(text)
        groups = sorted(f["model"].values(), key=lambda g: int(g.attrs["index"]))
        kinds = [g.attrs["kind"].decode() if isinstance(g.attrs["kind"], bytes) else str(g.attrs["kind"])
                 for g in groups]
        names = [g.name.split("/")[-1] for g in groups]
        for name, kind in zip(names, kinds):
            if kind not in SUPPORTED_KINDS:
                raise CheckpointError(f"{path}: layer {name}: kind '{kind}' is not supported by arsenal_torch "
                                      f"(it knows {', '.join(SUPPORTED_KINDS)})")
        specs = parse_run_file(text)
        if [k for k, _ in specs] != kinds:
            raise CheckpointError(f"{path}: /config expands to layers {[k for k, _ in specs]}, /model holds {kinds}")
        layers = [_make_layer(kind, keys, group) for (kind, keys), group in zip(specs, groups)]
        mean = f.attrs.get("data_mean")
        std = f.attrs.get("data_std")
        shape = f.attrs.get("input_shape")
        run = run_section(text)
    data = run.get("data", "fashion-mnist")
    # the run's loss, with arsenal's default: mse for the regression sets
    classifier = run.get("loss", "mse" if data in ("teacher", "adding") else "cross_entropy") != "mse"
    if data_mean is not None:
        mean = data_mean
    if data_std is not None:
        std = data_std
    if shape is None and data in ("fashion-mnist", "mnist"):
        shape = (1, 28, 28)   # files before input_shape: the images they were trained on
    model = ArsenalModel(layers, kinds, names, None if shape is None else tuple(int(d) for d in shape),
                         None if mean is None else float(mean), None if std is None else float(std), classifier,
                         path)
    return model.eval()


def read_idx(path):
    """An IDX file (gzip or plain) as a numpy array; unsigned bytes scaled to
    [0, 1] in float32 as arsenal's loader does."""
    import gzip
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    kind, rank = data[2], data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[kind]
    x = np.frombuffer(data, dtype=dtype, offset=4 + 4 * rank).reshape(dims)
    if kind == 0x08:
        return x.astype(np.float32) * np.float32(1.0 / 255.0)
    return x.astype(np.float32)
