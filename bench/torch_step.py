#!/usr/bin/python3
"""torch_step: the bench_step workloads (W1-W6) in PyTorch, for side-by-side
ratios: full training steps (zero_grad, forward, cross-entropy, backward,
clip_grad_norm_, optimizer step) on random data of Fashion-MNIST shape, the
same model, batch and thread count as arsenal; and a DDP mode (gloo, 2
processes x 1 thread) for W1 samples/s on 1 vs 2 processes.

Run with /usr/bin/python3 (Debian's python3-torch). The thread count is set
three ways before torch loads: torch.set_num_threads(n), OPENBLAS_NUM_THREADS=n
(torch's Linear runs on the same OpenBLAS) and OMP_WAIT_POLICY=PASSIVE (without
it, spinning OpenMP threads on 2 shared cores made steps 10-60x slower at
random). Output: one JSON line per measurement, as bench_step.
"""
import argparse
import gc
import json
import os
import socket
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="W1", choices=["W1", "W2", "W3", "W4", "W5", "W6"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=0, help="steps per timed block (0: about a second)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ddp", action="store_true", help="W1 data-parallel: 1 vs 2 processes x 1 thread (gloo)")
    p.add_argument("--ranks", type=int, default=2, help="processes in --ddp mode")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                   help="bf16: forward and loss under torch.autocast('cpu', dtype=torch.bfloat16) (matmuls and "
                        "convolutions in bf16 on oneDNN; weights, gradients and Adam in fp32)")
    p.add_argument("--serve", action="store_true",
                   help="read 'WORKLOAD STEPS WARMUP REPS [PRECISION]' lines on stdin, answer each with its JSON lines "
                        "and a line 'done' (run.sh keeps one process per thread count: importing torch "
                        "takes seconds here)")
    return p.parse_args()


ARGS = parse()
THREADS = 1 if ARGS.ddp else ARGS.threads
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ["OPENBLAS_NUM_THREADS"] = str(THREADS)
os.environ["MKL_NUM_THREADS"] = str(THREADS)
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(THREADS)

BATCH = {"W1": 128, "W2": 64, "W3": 32, "W4": 128, "W5": 128, "W6": 128}
DEFAULT_STEPS = {"W1": 30, "W2": 20, "W3": 5, "W4": 30, "W5": 3, "W6": 5}
IMAGE = {"W5", "W6"}   # inputs [batch, 1, 28, 28]; the others [batch, 784]


class Block(nn.Module):
    """x + Linear(ReLU(BatchNorm(x)))"""

    def __init__(self, width):
        super().__init__()
        self.bn = nn.BatchNorm1d(width)
        self.linear = nn.Linear(width, width)

    def forward(self, x):
        return x + self.linear(F.relu(self.bn(x)))


class BasicBlock(nn.Module):
    """torchvision's BasicBlock (the CIFAR ResNet's): relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)),
    the shortcut a 1x1 convolution of the stride + BatchNorm2d where the shape changes ("option B")."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


def resnet20():
    """W5: bench_step's W5 (examples/resnet-fmnist.cfg's layers): stem conv3x3 16 + BN + ReLU, 3 stages of
    3 basic blocks at 16/32/64 channels (stride 2 where stages 2 and 3 start), global average pool, 64-10.
    He init (fan_out) for the convolutions, as torchvision; the dense layer as nn.Linear's default."""
    layers = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for b in range(3):
            layers.append(BasicBlock(cin, cout, stride if b == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


def small_cnn():
    """W6: examples/cnn-fmnist.cfg's layers: 3 x (conv3x3 without bias + BN + ReLU + maxpool 2) at
    32/64/128 channels, flatten (1152), 1152-256 without bias, BatchNorm1d, ReLU, dropout 0.3, 256-10."""
    layers, cin = [], 1
    for cout in (32, 64, 128):
        layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        cin = cout
    layers += [nn.Flatten(), nn.Linear(1152, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
               nn.Dropout(0.3), nn.Linear(256, 10)]
    model = nn.Sequential(*layers)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and m.bias is None):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return model


def activations_per_row(model, shape):
    """Floats per sample of the input and of every leaf module's output (what backward may keep; the
    block sums counted as one more output each): the analytic-minimum term, as bench_step's."""
    total = [1]
    for d in shape:
        total[0] *= d
    hooks = [m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + o[0].numel()))
             for m in model.modules() if not list(m.children()) and not isinstance(m, nn.Sequential)]
    hooks += [m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + o[0].numel()))
              for m in model.modules() if isinstance(m, BasicBlock)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    model.train()
    for h in hooks:
        h.remove()
    return total[0]


def build(name):
    """(model, optimizer factory, clip norm or None, saved activations per row)"""
    if name in IMAGE:
        model = resnet20() if name == "W5" else small_cnn()
        return model, lambda p: torch.optim.Adam(p, lr=1e-3), 1.0, activations_per_row(model, (1, 28, 28))
    if name == "W1":
        model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                              nn.Linear(1024, 10))
        acts = 784 + 1024 * 4 + 10
        return model, lambda p: torch.optim.Adam(p, lr=1e-3), 1.0, acts
    if name in ("W2", "W3"):
        width, blocks = (256, 48) if name == "W2" else (64, 1000)
        model = nn.Sequential(nn.Linear(784, width), *[Block(width) for _ in range(blocks)], nn.Linear(width, 10))
        acts = 784 + width + blocks * 4 * width + 10   # per block: bn, relu, linear, sum
        return model, lambda p: torch.optim.Adam(p, lr=1e-3), 1.0, acts
    layers = [nn.Linear(784, 256), nn.Sigmoid()]
    for _ in range(19):
        layers += [nn.Linear(256, 256), nn.Sigmoid()]
    layers.append(nn.Linear(256, 10))
    return nn.Sequential(*layers), lambda p: torch.optim.SGD(p, lr=0.1), None, 784 + 20 * 2 * 256 + 10


def data(batch, seed, image=False):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, 1, 28, 28) if image else (batch, 784)
    xs = [torch.randn(*shape, generator=g) for _ in range(8)]
    ys = [torch.randint(0, 10, (batch,), generator=g) for _ in range(8)]
    return xs, ys


def make_step(model, opt, clip, precision="fp32"):
    params = [p for p in model.parameters()]
    bf16 = precision == "bf16"

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):   # the documented CPU recipe
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
    return step


def time_steps(step, xs, ys, steps, start=0, cpu=None):
    """Wall seconds per step; cpu (a list) gets process CPU seconds per step."""
    t, c = time.perf_counter(), time.process_time()
    for i in range(steps):
        step(xs[(start + i) % 8], ys[(start + i) % 8])
    if cpu is not None:
        cpu.append((time.process_time() - c) / steps)
    return (time.perf_counter() - t) / steps


def status_mb(field):
    """VmRSS (now) or VmHWM (peak since the last reset) from /proc/self/status."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak_rss():
    """Peak RSS is per process; a --serve process runs many workloads, so the
    peak is reset (Linux: clear_refs 5) before each, and read as VmHWM."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def emit(record):
    print(json.dumps(record), flush=True)


def step_mode(name, steps, warmup, reps, precision="fp32"):
    batch, steps = BATCH[name], steps or DEFAULT_STEPS[name]
    torch.manual_seed(1)
    xs, ys = data(batch, 7, name in IMAGE)
    gc.collect()
    reset_peak_rss()
    baseline = status_mb("VmRSS")
    model, make_opt, clip, acts = build(name)
    model.train()
    opt = make_opt(model.parameters())
    step = make_step(model, opt, clip, precision)
    nparams = sum(p.numel() for p in model.parameters())
    head = {"impl": "torch", "workload": name, "threads": torch.get_num_threads(), "batch": batch}
    if precision != "fp32":
        head["precision"] = precision
    emit({"bench": "meta", **head, "params": nparams, "torch": torch.__version__,
          "blas": torch.__config__.show().count("BLAS_INFO=generic") and "system (OpenBLAS via libblas.so.3)"
          or "bundled"})
    time_steps(step, xs, ys, warmup + 2)
    slots = 4 if name != "W4" else 2
    state = sum(b.numel() for b in model.buffers() if b.dtype.is_floating_point)
    minimum = 4.0 * (nparams * slots + state + batch * acts) / 1048576.0
    peak = status_mb("VmHWM")
    emit({"bench": "memory", **head, "params": nparams, "param_slots": slots, "peak_rss_mb": round(peak, 2),
          "baseline_rss_mb": round(baseline, 2), "model_rss_mb": round(peak - baseline, 2),
          "minimum_mb": round(minimum, 2), "rss_over_minimum": round((peak - baseline) / minimum, 3)})
    done = 0
    for rep in range(reps):
        cpu = []
        s = time_steps(step, xs, ys, steps, done, cpu)
        done += steps
        emit({"bench": "step", **head, "rep": rep, "steps": steps, "ms_per_step": round(s * 1e3, 4),
              "cpu_ms_per_step": round(cpu[0] * 1e3, 4),
              "samples_per_s": round(batch / s, 1)})


def ddp_worker(rank, world, port, queue):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    batch, steps = BATCH["W1"], ARGS.steps or DEFAULT_STEPS["W1"]
    torch.manual_seed(1)
    xs, ys = data(batch, 7 + rank)
    alone, make_opt, clip, _ = build("W1")
    step_alone = make_step(alone, make_opt(alone.parameters()), clip)
    torch.manual_seed(1)
    model, _, _, _ = build("W1")
    ddp = DDP(model)
    step_ddp = make_step(ddp, make_opt(ddp.parameters()), clip)
    time_steps(step_alone, xs, ys, ARGS.warmup)
    time_steps(step_ddp, xs, ys, ARGS.warmup)
    for rep in range(ARGS.reps):
        # rank 0 alone (the others wait in a blocking barrier), then all ranks
        dist.barrier()
        one = time_steps(step_alone, xs, ys, steps) if rank == 0 else 0.0
        dist.barrier()
        t = time_steps(step_ddp, xs, ys, steps)
        slowest = torch.tensor([t])
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
        if rank == 0:
            n = slowest.item()
            sps1, spsn = batch / one, batch * world / n
            queue.put({"bench": "scaling", "impl": "torch", "workload": "W1", "ranks": world, "threads": 1,
                       "batch": batch, "rep": rep, "steps": steps, "one_rank_ms": round(one * 1e3, 4),
                       "ranks_ms": round(n * 1e3, 4), "samples_per_s_1": round(sps1, 1),
                       "samples_per_s_n": round(spsn, 1), "speedup": round(spsn / sps1, 4),
                       "efficiency": round(spsn / sps1 / world, 4), "backend": "gloo"})
    dist.destroy_process_group()


def ddp_mode():
    import torch.multiprocessing as mp
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=ddp_worker, args=(r, ARGS.ranks, port, queue)) for r in range(ARGS.ranks)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    while not queue.empty():
        emit(queue.get())
    if failed:
        sys.exit(f"torch_step --ddp: a worker failed (exit codes {failed})")


def serve():
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        try:
            step_mode(words[0], int(words[1]), int(words[2]), int(words[3]), words[4] if len(words) > 4 else "fp32")
        except Exception as e:  # report, and keep serving
            print(f"torch_step: {line.strip()}: {e!r}", file=sys.stderr)
        print("done", flush=True)


if __name__ == "__main__":
    if ARGS.ddp:
        ddp_mode()
    elif ARGS.serve:
        serve()
    else:
        step_mode(ARGS.workload, ARGS.steps, ARGS.warmup, ARGS.reps, ARGS.precision)
