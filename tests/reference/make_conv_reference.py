#!/usr/bin/python3
"""make_conv_reference: writes tests/data/conv_reference.h5, the PyTorch
reference tensors for arsenal's convolutional layers (issue 15): conv2d,
maxpool2d, avgpool2d, global average pooling, flatten, batchnorm2d and the
basic residual block, forward and backward, stride / padding / dilation /
groups edge cases and odd sizes included. This script owns the file and its
layout; the C comparison test reads it by the layout below.

Run (Debian python3-torch, python3-h5py, numpy; the test suite itself only
needs the committed .h5 file):

    /usr/bin/python3 tests/reference/make_conv_reference.py [output.h5]

Deterministic: one thread, torch.use_deterministic_algorithms, every case
drawing its inputs from its own generator seeded with crc32(case name)
(adding or removing a case leaves the others' numbers alone), and no
timestamps in the file: regenerating it reproduces the same bytes.

Precision. Every input (x, weights, biases, BatchNorm parameters and
running statistics, dy) is drawn as float32 and stored as float32. Every
result is computed by torch in float64 from those exact float32 values and
rounded once to float32 when stored: a stored result is the exact answer to
within float32 rounding (0.5 ulp), so the C test's tolerance only has to
cover arsenal's own float32 error. (The script prints, per case, how far
torch's own float32 computation lands from it, as a guide to that
tolerance; it is not stored, because it depends on the CPU's kernels.)

Conventions: PyTorch's throughout. Tensors are NCHW, row-major (C order);
a conv weight is [out_channels, in_channels / groups, kh, kw]; output size
per spatial dimension is floor((in + 2 pad - dilation (k - 1) - 1) /
stride) + 1; dy is a random upstream gradient dL/dy of y's shape, and
dx, dweight, dbias, dgamma, dbeta are dL/d(that) for L = sum(y * dy).

HDF5 layout (every float dataset float32; int attributes int32, int arrays
int32 of length 2 (height, width) or 4 (N, C, H, W); strings as fixed-length
byte strings):

  attributes of /:
    format (int 1), torch_version (str), compute (str "float64, stored as
    float32"), cases (str: the case names in file order, one per line)

  every case is a group /<case>/ with at least the attributes
    kind (str)      conv2d | maxpool2d | avgpool2d | global_avgpool |
                    flatten | batchnorm2d | basic_block
    in_shape [4]    N, C, H, W of x
    out_shape       shape of y: [4] N, C, H, W, or [2] N, C*H*W (flatten)
  and the datasets x (in_shape), dy and y (out_shape), dx (in_shape).

  kind = conv2d       (torch.nn.functional.conv2d; padding is zeros)
    attributes: out_channels, kernel [2], stride [2], padding [2],
                dilation [2], groups, bias (1 or 0)
    datasets:   weight [O, C/groups, kh, kw], dweight (same);
                bias [O], dbias [O] only when bias = 1

  kind = maxpool2d    (F.max_pool2d, padding counts as -inf, ceil_mode off)
    attributes: kernel [2], stride [2], padding [2], dilation [2] (1, 1),
                ceil_mode (0)
    datasets:   indices [N, C, OH, OW] int64: the argmax of each window as
                a flat index h * W + w into its (n, c) input plane, as
                return_indices=True gives. Ties go to the first maximum in
                row-major order within the window (PyTorch's CPU kernel
                takes a value only when it is greater than the maximum so
                far); dx is dy scattered (summed) onto those indices.

  kind = avgpool2d    (F.avg_pool2d, ceil_mode off)
    attributes: kernel [2], stride [2], padding [2], ceil_mode (0),
                count_include_pad (1: a window's divisor is kh * kw, padded
                zeros included; 0: only the input pixels it covers)

  kind = global_avgpool   (F.adaptive_avg_pool2d(x, 1)): y [N, C, 1, 1],
                the same bytes as [N, C]; dx = dy / (H W) on every pixel

  kind = flatten      (torch.flatten(x, 1)): y [N, C*H*W], dy likewise;
                dx is dy in x's shape (the same bytes)

  kind = batchnorm2d  (F.batch_norm over N, H, W per channel, train mode)
    attributes: eps (float32 1e-5), momentum (float32 0.1)
    datasets:   gamma [C], beta [C]            weight and bias
                running_mean_in [C], running_var_in [C]   before the step
                y, dx, dgamma [C], dbeta [C]   train mode (batch statistics)
                mean [C]             batch mean over N, H, W
                var [C]              biased batch variance (divisor N H W),
                                     the one y is normalized with
                var_unbiased [C]     divisor N H W - 1
                running_mean [C]     after one step: (1 - momentum)
                                     running_mean_in + momentum mean
                running_var [C]      after one step: (1 - momentum)
                                     running_var_in + momentum var_unbiased
                eval_y, eval_dx      eval mode, normalized with
                                     running_mean_in / running_var_in, the
                                     same x and dy

  kind = basic_block  (He et al. 2016's basic block, CIFAR ResNet option B
                       for the projection, as torchvision's BasicBlock,
                       train mode: BatchNorm on batch statistics)
    y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
      conv1: 3x3, stride `stride`, padding 1, no bias, C -> planes
      conv2: 3x3, stride 1, padding 1, no bias, planes -> planes
      shortcut: identity (shortcut = "identity": stride 1, C = planes), or
                downsample.1(downsample.0(x)) (shortcut = "projection"):
                a 1x1 conv, stride `stride`, padding 0, no bias, C -> planes,
                then BatchNorm
    attributes: planes, stride, shortcut (str identity | projection),
                eps (float32 1e-5), momentum (float32 0.1),
                params (str: the parameter names, one per line, in order)
    subgroups, one dataset per name (torchvision's state_dict names):
      params/<name>, grads/<name>   conv1.weight, bn1.weight (gamma),
                    bn1.bias (beta), conv2.weight, bn2.weight, bn2.bias,
                    and with a projection downsample.0.weight,
                    downsample.1.weight, downsample.1.bias
      running_in/<bn>.running_mean, running_in/<bn>.running_var
                    before the step, for bn in bn1, bn2 (, downsample.1)
      running_out/<bn>.running_mean, running_out/<bn>.running_var
                    after it (momentum 0.1, unbiased variance)

The cases (N, C, H, W -> O, kernel, stride, padding, dilation, groups) are
listed in CASES below and printed when the script runs.
"""
import os
import sys
import zlib

import h5py
import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "conv_reference.h5")
BN_EPS, BN_MOMENTUM = 1e-5, 0.1


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


# ------------------------------------------------------------------ the cases
# name -> (kind, options); N, C, H, W as `shape`.
CASES = [
    ("conv3x3_s1_p1", "conv2d", dict(shape=(2, 3, 6, 6), out=4, kernel=3, stride=1, padding=1)),
    ("conv3x3_s2_p1", "conv2d", dict(shape=(2, 3, 7, 7), out=4, kernel=3, stride=2, padding=1)),
    ("conv5x5_s1_p2", "conv2d", dict(shape=(2, 2, 6, 6), out=3, kernel=5, stride=1, padding=2)),
    ("conv1x1_s1_p0_bias", "conv2d", dict(shape=(2, 4, 5, 5), out=3, kernel=1, stride=1, padding=0)),
    ("conv1x1_s1_p0_nobias", "conv2d", dict(shape=(2, 4, 5, 5), out=3, kernel=1, stride=1, padding=0, bias=0)),
    # the projection shortcut of a ResNet stage: 1x1, stride 2, no bias
    ("conv1x1_s2_projection", "conv2d", dict(shape=(2, 4, 6, 6), out=8, kernel=1, stride=2, padding=0, bias=0)),
    ("conv3x3_dilation2", "conv2d", dict(shape=(2, 2, 7, 7), out=3, kernel=3, stride=1, padding=2, dilation=2)),
    ("conv3x3_groups2", "conv2d", dict(shape=(2, 4, 5, 5), out=6, kernel=3, stride=1, padding=1, groups=2)),
    ("conv3x3_depthwise", "conv2d", dict(shape=(2, 4, 5, 5), out=4, kernel=3, stride=1, padding=1, groups=4)),
    ("conv3x2_s2x1_p1x0", "conv2d", dict(shape=(2, 3, 7, 6), out=4, kernel=(3, 2), stride=(2, 1), padding=(1, 0))),
    ("conv3x3_odd_7x5", "conv2d", dict(shape=(3, 3, 7, 5), out=4, kernel=3, stride=2, padding=1)),
    # stride 3 leaves the last input row and the last two columns unread: dx is 0 there
    ("conv3x3_s3_remainder", "conv2d", dict(shape=(2, 2, 7, 5), out=3, kernel=3, stride=3, padding=0)),
    # padded input 5 x 5 exactly the kernel's size: a 1 x 1 output
    ("conv5x5_barely_fits", "conv2d", dict(shape=(2, 2, 3, 3), out=3, kernel=5, stride=2, padding=1)),
    ("maxpool2x2_s2", "maxpool2d", dict(shape=(2, 3, 6, 6), kernel=2, stride=2, padding=0)),
    ("maxpool3x3_s2_p1", "maxpool2d", dict(shape=(2, 2, 7, 7), kernel=3, stride=2, padding=1)),
    # repeated values (and all-negative windows next to the padding), overlapping windows
    ("maxpool3x3_s2_p1_ties", "maxpool2d", dict(shape=(2, 2, 5, 6), kernel=3, stride=2, padding=1, ties=1)),
    ("maxpool2x2_s2_ties", "maxpool2d", dict(shape=(1, 2, 4, 4), kernel=2, stride=2, padding=0, ties=1)),
    ("avgpool2x2_s2", "avgpool2d", dict(shape=(2, 3, 6, 6), kernel=2, stride=2, padding=0)),
    ("avgpool3x3_s1_p1_include_pad", "avgpool2d", dict(shape=(2, 2, 5, 5), kernel=3, stride=1, padding=1)),
    ("global_avgpool", "global_avgpool", dict(shape=(2, 3, 5, 4))),
    ("flatten", "flatten", dict(shape=(2, 3, 2, 4))),
    ("batchnorm2d_4x3x5x5", "batchnorm2d", dict(shape=(4, 3, 5, 5))),
    ("batchnorm2d_odd_3x2x3x7", "batchnorm2d", dict(shape=(3, 2, 3, 7))),
    ("block_basic", "basic_block", dict(shape=(2, 4, 6, 6), planes=4, stride=1)),
    ("block_projection", "basic_block", dict(shape=(2, 4, 6, 6), planes=8, stride=2)),
]


# ------------------------------------------------------------------ helpers
class Case:
    """One case's generator (seeded from its name) and what it records."""

    def __init__(self, name):
        self.gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        self.attrs, self.data = {}, {}
        self.f32_error = 0.0   # see compare_f32: printed only
        self.note = ""

    # Inputs are made in float32 arithmetic and only then widened: the
    # float64 computation starts from exactly the values the file stores.
    def randn(self, *shape, scale=1.0, shift=0.0):
        """shift + scale N(0, 1), float32 values held in float64."""
        z = torch.randn(*shape, generator=self.gen, dtype=torch.float32)
        return (z * np.float32(scale) + np.float32(shift)).double()

    def uniform(self, *shape, low=-1.0, high=1.0):
        """U(low, high), float32 values held in float64."""
        u = torch.rand(*shape, generator=self.gen, dtype=torch.float32)
        return (u * np.float32(high - low) + np.float32(low)).double()

    def put(self, **tensors):
        """Datasets to store, in this order ("a/b" keys go into subgroup a)."""
        for name, t in tensors.items():
            self.data[name] = t.detach()

    def compare_f32(self, fn, inputs, y, dy):
        """Runs fn forward and backward in float32 on the same inputs and
        tracks max |float32 - reference| / max |reference| over y and the
        inputs' gradients (a guide to the C test's tolerance)."""
        ins = [t.detach().float().requires_grad_(True) for t in inputs]
        got = fn(*ins)[0]
        got.backward(dy.float())
        for a, ref in [(got, y)] + [(t.grad, r.grad) for t, r in zip(ins, inputs)]:
            scale = max(float(ref.detach().abs().max()), 1e-30)
            self.f32_error = max(self.f32_error, float((a.detach().double() - ref.detach()).abs().max()) / scale)


def leaf(t):
    return t.clone().requires_grad_(True)


def conv_case(c, o):
    n, ch, h, w = o["shape"]
    out, groups, bias = o["out"], o.get("groups", 1), o.get("bias", 1)
    kernel, stride, padding, dilation = (pair(o[k]) if k in o else (1, 1)
                                         for k in ("kernel", "stride", "padding", "dilation"))
    bound = 1.0 / np.sqrt(ch // groups * kernel[0] * kernel[1])   # torch's default Conv2d init range
    x = leaf(c.randn(n, ch, h, w))
    weight = leaf(c.uniform(out, ch // groups, *kernel, low=-bound, high=bound))
    b = leaf(c.uniform(out, low=-bound, high=bound)) if bias else None

    def run(x_, w_, b_=None):
        return [F.conv2d(x_, w_, b_, stride, padding, dilation, groups)]

    y = run(x, weight, b)[0]
    dy = c.randn(*y.shape)
    y.backward(dy)
    c.attrs.update(out_channels=out, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                   groups=groups, bias=bias)
    c.put(x=x, weight=weight, dy=dy, y=y, dx=x.grad, dweight=weight.grad)
    if bias:
        c.put(bias=b, dbias=b.grad)
    c.compare_f32(run, [x, weight] + ([b] if bias else []), y, dy)
    return x, y


def tie_values(c, shape):
    """Integers in -2..0: equal values in most windows; and plane (0, 1)
    constant -1: every window of it tied throughout, and negative beside
    the padding (-inf, never the max)."""
    x = torch.randint(-2, 1, shape, generator=c.gen).double()
    x[0, 1] = -1.0
    return x


def maxpool_case(c, o):
    kernel, stride, padding = pair(o["kernel"]), pair(o["stride"]), pair(o["padding"])
    x = leaf(tie_values(c, o["shape"]) if o.get("ties") else c.randn(*o["shape"]))
    y, indices = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
    dy = c.randn(*y.shape)
    y.backward(dy)
    c.attrs.update(kernel=kernel, stride=stride, padding=padding, dilation=(1, 1), ceil_mode=0)
    c.put(x=x, dy=dy, y=y, dx=x.grad)
    c.data["indices"] = indices
    if o.get("ties"):
        # the ties must really be there, and be resolved to the first maximum
        ties = check_first_max(x.detach(), y.detach(), indices, kernel, stride, padding)
        assert ties > 0, "the ties case has no tied window"
        c.note = f"{ties} of {y.numel()} windows tied"
    return x, y


def check_first_max(x, y, indices, kernel, stride, padding):
    """Asserts indices = the first maximum in row-major window order;
    returns how many windows hold more than one maximum."""
    n, ch, h, w = x.shape
    ties = 0
    for i in range(n):
        for k in range(ch):
            for oy in range(y.shape[2]):
                for ox in range(y.shape[3]):
                    cells = [(r, q) for r in range(oy * stride[0] - padding[0], oy * stride[0] - padding[0] + kernel[0])
                             for q in range(ox * stride[1] - padding[1], ox * stride[1] - padding[1] + kernel[1])
                             if 0 <= r < h and 0 <= q < w]
                    best = max(float(x[i, k, r, q]) for r, q in cells)
                    first = next(r * w + q for r, q in cells if float(x[i, k, r, q]) == best)
                    assert int(indices[i, k, oy, ox]) == first and float(y[i, k, oy, ox]) == best
                    ties += sum(float(x[i, k, r, q]) == best for r, q in cells) > 1
    return ties


def avgpool_case(c, o):
    kernel, stride, padding = pair(o["kernel"]), pair(o["stride"]), pair(o["padding"])
    x = leaf(c.randn(*o["shape"]))

    def run(x_):
        return [F.avg_pool2d(x_, kernel, stride, padding, ceil_mode=False, count_include_pad=True)]

    y = run(x)[0]
    dy = c.randn(*y.shape)
    y.backward(dy)
    c.attrs.update(kernel=kernel, stride=stride, padding=padding, ceil_mode=0, count_include_pad=1)
    c.put(x=x, dy=dy, y=y, dx=x.grad)
    c.compare_f32(run, [x], y, dy)
    return x, y


def global_avgpool_case(c, o):
    x = leaf(c.randn(*o["shape"]))
    y = F.adaptive_avg_pool2d(x, 1)
    dy = c.randn(*y.shape)
    y.backward(dy)
    c.put(x=x, dy=dy, y=y, dx=x.grad)
    return x, y


def flatten_case(c, o):
    x = leaf(c.randn(*o["shape"]))
    y = torch.flatten(x, 1)
    dy = c.randn(*y.shape)
    y.backward(dy)
    c.put(x=x, dy=dy, y=y, dx=x.grad)
    return x, y


def bn_parameters(c, ch):
    """Non-default gamma, beta and running statistics: every term matters."""
    return (leaf(c.randn(ch, scale=0.2, shift=1.0)), leaf(c.randn(ch, scale=0.1)),
            c.randn(ch, scale=0.1), c.uniform(ch, low=1.0, high=1.5))


def batchnorm_case(c, o):
    n, ch, h, w = o["shape"]
    x = leaf(c.randn(n, ch, h, w, scale=1.5, shift=0.5))   # a mean away from 0
    gamma, beta, rm_in, rv_in = bn_parameters(c, ch)
    rm, rv = rm_in.clone(), rv_in.clone()
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=BN_MOMENTUM, eps=BN_EPS)
    dy = c.randn(*y.shape)
    y.backward(dy)

    xd = x.detach()
    mean = xd.mean(dim=(0, 2, 3))
    var = xd.var(dim=(0, 2, 3), unbiased=False)
    var_unbiased = xd.var(dim=(0, 2, 3), unbiased=True)
    # the formulas the layout promises, checked against torch
    per = (1, ch, 1, 1)
    manual = (xd - mean.view(per)) / torch.sqrt(var.view(per) + BN_EPS) * gamma.detach().view(per) \
        + beta.detach().view(per)
    assert torch.allclose(manual, y.detach(), rtol=0, atol=1e-12)
    assert torch.allclose(rm, (1 - BN_MOMENTUM) * rm_in + BN_MOMENTUM * mean, rtol=0, atol=1e-14)
    assert torch.allclose(rv, (1 - BN_MOMENTUM) * rv_in + BN_MOMENTUM * var_unbiased, rtol=0, atol=1e-14)

    x_eval = leaf(xd)
    g_eval = leaf(gamma.detach())
    y_eval = F.batch_norm(x_eval, rm_in.clone(), rv_in.clone(), g_eval, beta.detach(), training=False,
                          momentum=BN_MOMENTUM, eps=BN_EPS)
    y_eval.backward(dy)

    def run(x_, g_, b_):
        return [F.batch_norm(x_, rm_in.float().clone(), rv_in.float().clone(), g_, b_, training=True,
                             momentum=BN_MOMENTUM, eps=BN_EPS)]

    c.attrs.update(eps=np.float32(BN_EPS), momentum=np.float32(BN_MOMENTUM))
    c.put(x=x, gamma=gamma, beta=beta, running_mean_in=rm_in, running_var_in=rv_in, dy=dy, y=y, dx=x.grad,
          dgamma=gamma.grad, dbeta=beta.grad, mean=mean, var=var, var_unbiased=var_unbiased, running_mean=rm,
          running_var=rv, eval_y=y_eval, eval_dx=x_eval.grad)
    c.compare_f32(run, [x, gamma, beta], y, dy)
    return x, y


def block_forward(x, p, running, stride, projection):
    """The basic block on parameter dict p and running statistics dict
    running (updated in place, as in train mode)."""
    def bn(h, name):
        return F.batch_norm(h, running[name + ".running_mean"], running[name + ".running_var"],
                            p[name + ".weight"], p[name + ".bias"], training=True, momentum=BN_MOMENTUM, eps=BN_EPS)

    out = F.relu(bn(F.conv2d(x, p["conv1.weight"], None, stride, 1), "bn1"))
    out = bn(F.conv2d(out, p["conv2.weight"], None, 1, 1), "bn2")
    shortcut = bn(F.conv2d(x, p["downsample.0.weight"], None, stride, 0), "downsample.1") if projection else x
    return F.relu(out + shortcut)


def block_case(c, o):
    n, ch, h, w = o["shape"]
    planes, stride = o["planes"], o["stride"]
    projection = stride != 1 or ch != planes
    x = leaf(c.randn(n, ch, h, w))
    p, running = {}, {}

    def conv_weight(name, cout, cin, k):
        bound = np.sqrt(6.0 / (cin * k * k))   # He uniform: keeps the signal's scale through the block
        p[name] = leaf(c.uniform(cout, cin, k, k, low=-bound, high=bound))

    def bn(name, width):
        gamma, beta, rm, rv = bn_parameters(c, width)
        p[name + ".weight"], p[name + ".bias"] = gamma, beta
        running[name + ".running_mean"], running[name + ".running_var"] = rm, rv

    conv_weight("conv1.weight", planes, ch, 3)
    bn("bn1", planes)
    conv_weight("conv2.weight", planes, planes, 3)
    bn("bn2", planes)
    if projection:
        conv_weight("downsample.0.weight", planes, ch, 1)
        bn("downsample.1", planes)
    running_in = {k: v.clone() for k, v in running.items()}
    y = block_forward(x, p, running, stride, projection)
    dy = c.randn(*y.shape)
    y.backward(dy)

    names = list(p)
    c.attrs.update(planes=planes, stride=stride, shortcut="projection" if projection else "identity",
                   eps=np.float32(BN_EPS), momentum=np.float32(BN_MOMENTUM), params="\n".join(names) + "\n")
    c.put(x=x, dy=dy, y=y, dx=x.grad)
    c.put(**{"params/" + k: p[k] for k in names}, **{"grads/" + k: p[k].grad for k in names})
    c.put(**{"running_in/" + k: running_in[k] for k in running}, **{"running_out/" + k: running[k] for k in running})

    def run(x_, *flat):
        p32 = dict(zip(names, flat))
        r32 = {k: v.float().clone() for k, v in running_in.items()}
        return [block_forward(x_, p32, r32, stride, projection)]

    c.compare_f32(run, [x] + [p[k] for k in names], y, dy)
    return x, y


BUILDERS = dict(conv2d=conv_case, maxpool2d=maxpool_case, avgpool2d=avgpool_case,
                global_avgpool=global_avgpool_case, flatten=flatten_case, batchnorm2d=batchnorm_case,
                basic_block=block_case)


# ------------------------------------------------------------------ the file
def no_times(plist_class):
    plist = h5py.h5p.create(plist_class)
    plist.set_obj_track_times(False)
    return plist


def create_file(path):
    """An HDF5 file without timestamps (objects would record their creation
    time), so that regenerating gives the same bytes: no spurious diffs."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fcpl = no_times(h5py.h5p.FILE_CREATE)
    return h5py.File(h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl))


def make_group(parent, name):
    h5py.h5g.create(parent.id, name.encode(), gcpl=no_times(h5py.h5p.GROUP_CREATE))
    return parent[name]


def write_dataset(group, name, array):
    """Compact layout (the data inside the object header): for these tiny
    tensors it saves the separate data block and its alignment."""
    array = np.ascontiguousarray(array)
    dcpl = no_times(h5py.h5p.DATASET_CREATE)
    if array.nbytes < 60000:
        dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple(array.shape)
    dtype = h5py.h5t.py_create(array.dtype)
    dset = h5py.h5d.create(group.id, name.encode(), dtype, space, dcpl=dcpl)
    dset.write(h5py.h5s.ALL, h5py.h5s.ALL, array)


def set_attr(group, key, value):
    if isinstance(value, str):
        group.attrs[key] = np.bytes_(value)
    elif isinstance(value, tuple):
        group.attrs[key] = np.array(value, dtype=np.int32)
    elif isinstance(value, np.floating):
        group.attrs[key] = value
    else:
        group.attrs[key] = np.int32(value)


def store(f, name, kind, case, x, y):
    g = make_group(f, name)
    set_attr(g, "kind", kind)
    set_attr(g, "in_shape", tuple(x.shape))
    set_attr(g, "out_shape", tuple(y.shape))
    for k, v in case.attrs.items():
        set_attr(g, k, v)
    for key, t in case.data.items():
        parent = g
        if "/" in key:
            sub, key = key.split("/")
            parent = g[sub] if sub in g else make_group(g, sub)
        array = t.numpy().astype(np.int64 if key == "indices" else np.float32)
        write_dataset(parent, key, array)


def describe(kind, o, y):
    shape = "x".join(str(v) for v in o["shape"])
    out = "x".join(str(v) for v in y.shape)
    if kind == "conv2d":
        extra = " ".join(f"{k}={o[k] if k == 'groups' else pair(o[k])}"
                         for k in ("kernel", "stride", "padding", "dilation", "groups") if k in o)
        return f"{shape} -> {out}  {extra}{'' if o.get('bias', 1) else ' no bias'}"
    if kind in ("maxpool2d", "avgpool2d"):
        return f"{shape} -> {out}  kernel {o['kernel']} stride {o['stride']} padding {o['padding']}"
    if kind == "basic_block":
        return f"{shape} -> {out}  planes {o['planes']} stride {o['stride']}"
    return f"{shape} -> {out}"


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_OUT
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    lines = []
    with create_file(out) as f:
        f.attrs["format"] = np.int32(1)
        f.attrs["torch_version"] = np.bytes_(torch.__version__)
        f.attrs["compute"] = np.bytes_("float64, stored as float32")
        f.attrs["cases"] = np.bytes_("".join(name + "\n" for name, _, _ in CASES))
        for name, kind, options in CASES:
            case = Case(name)
            x, y = BUILDERS[kind](case, options)
            store(f, name, kind, case, x, y)
            guide = f"  torch float32: {case.f32_error:.1e} of the scale" if case.f32_error else ""
            lines.append(f"{name:30s} {kind:15s} {describe(kind, options, y)}{guide}"
                         + (f"  ({case.note})" if case.note else ""))
    print(f"wrote {os.path.normpath(out)} ({os.path.getsize(out)} bytes), torch {torch.__version__}, "
          f"{len(CASES)} cases")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
