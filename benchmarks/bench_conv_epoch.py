#!/usr/bin/env python
"""A conv net's whole local training step, ours vs PyTorch autograd, as epoch time on CIFAR-10-shaped data.

The network and rule (Sec. 4.3, App. D.1, D.6; Table 6's Gaussian grp+div cell): conv 3×3,
padding 1, no bias -> SELU -> 2×2 max pool (where the arch says) -> layer-local pHSIC
objective on the pooled activity flattened per sample (groups = contiguous channel blocks)
-> r = ẑ/u^p (grp+div, Eq. 21) -> alpha dropout 0.05, passed on; fc hidden layers likewise;
output linear + bias with cross-entropy; SGD momentum 0.95, lr_local 0.4, lr_out 1e-4.

``ours``
    :meth:`threefactor.nn.convnet.ConvNet.train_step` of the network that
    :func:`threefactor.training.train.build_network` makes from
    ``resolve_config(arch=..., dataset="cifar10", rule="gaussian", grouping="grp+div", ...)``:
    explicit 3-factor updates stepped during the forward pass, on device arrays.
``autograd``
    the same network and rule in PyTorch as an efficient autograd user writes it
    (:func:`torch_layer`): ``F.conv2d`` / ``F.selu`` / ``F.max_pool2d``, the layer
    loss from :mod:`threefactor.verify.torch_ref`'s pieces, the output passed on detached
    (layer-local losses), one ``backward()`` over the sum, one ``torch.optim.SGD`` step.
    Same initial weights, device and dtype (float32), computed in float32: on CUDA,
    cuDNN's TF32 convolutions (torch's default) are switched off for this timing.
``autograd_tf32``
    (CUDA only) the same with torch's defaults, i.e. TF32 tensor-core convolutions:
    what a user gets out of the box, at a lower precision than the float32 compared.

Both run on one random batch of the CIFAR-10 shape (3, 32, 32); steps are timed after a
warm-up, device-synchronised (CuPy: CUDA events via cupyx.profiler.benchmark; torch:
torch.cuda.Event).  epoch time = step time × 50 000 / batch.  Usage::

    python benchmarks/bench_conv_epoch.py --arch small --backend numba --steps 5
    python benchmarks/bench_conv_epoch.py --arch vgg --backend cupy --device cuda --steps 10 --json out.json
"""
import argparse
import sys

import numpy as np

from threefactor.bench import suite as bench
from threefactor.training.atomic import write_json
from threefactor.backends import BACKENDS, get_backend
from threefactor.nn.convnet import ConvLayer, parse_arch
from threefactor.bench.machine import set_threads
from threefactor.training.train import build_network, resolve_config

IMAGE, N_CLASSES, N_TRAIN = (3, 32, 32), 10, 50_000
LR_LOCAL, LR_OUT = 0.4, 1e-4


def make_net(arch, width, groups, backend, seed=0):
    """(cfg, network, rng) of the benchmark: Table 6's Gaussian grp+div cell on CIFAR-10 shapes."""
    cfg = resolve_config(arch=arch, width=width, dataset="cifar10", rule="gaussian", grouping="grp+div",
                         groups=groups, lr_local=LR_LOCAL, lr_out=LR_OUT, backend=backend)
    rng = np.random.default_rng(seed)
    be = get_backend(backend)
    return cfg, build_network(cfg, IMAGE, N_CLASSES, be, rng), rng


def ours_call(cfg, net, rng, x_h, y_h):
    """A closure running one local train_step of ``net`` on its backend's arrays."""
    be = net.backend
    opts = net.make_optimizers(cfg["lr_local"], cfg["lr_out"], weight_decay_local=cfg["weight_decay_local"],
                               weight_decay_out=cfg["weight_decay_out"], momentum=cfg["momentum"],
                               optimizer=cfg["optimizer"])
    x, y = be.asarray(x_h), be.asarray(y_h, dtype=np.int64)
    return lambda: net.train_step(x, y, opts, rng)


def torch_layer(torch, F, h, w, conv, pool, rule, Ky, dropout, divisive=True):
    """(layer loss L, detached output r) of one hidden layer in PyTorch.

    h : (m, C_in, H, W) for a conv layer (``conv=True``) or (m, n_in); w : its weights.
    L = pHSIC(K, K) - γ pHSIC(Ky, K) (Eq. 9, 34) on z = pool(f(a)) flattened per sample
    (threefactor.verify.torch_ref's pieces); r = ẑ/u^p over contiguous groups (Eq. 21), then
    (alpha) dropout with probability ``dropout``.
    """
    from threefactor.verify import torch_ref as tr

    a = F.conv2d(h, w, padding=1) if conv else h.reshape(h.shape[0], -1) @ w.T
    if rule.activation == "selu":
        z = F.selu(a)
    elif rule.activation == "lrelu":
        z = F.leaky_relu(a, rule.slope)
    else:
        z = tr._activation(torch, a, rule.activation, rule.slope)
    if conv and pool == "max":
        z = F.max_pool2d(z, 2)
    zf = z.reshape(z.shape[0], -1)
    K = tr._kernel(torch, tr._representation(torch, zf, rule), rule)
    loss = tr._phsic(K, K) - rule.gamma * tr._phsic(Ky, K)
    with torch.no_grad():
        r = zf
        if divisive:
            zg = zf.reshape(zf.shape[0], rule.groups, -1)
            zhat = zg - zg.mean(dim=2, keepdim=True)
            u = (rule.delta + (zhat * zhat).sum(dim=2, keepdim=True)) / zg.shape[2]
            r = zhat / u ** rule.p
        r = r.reshape(z.shape)
        if dropout > 0:
            drop = F.alpha_dropout if rule.activation == "selu" else F.dropout
            r = drop(r, dropout, training=True)
    return loss, r


def torch_call(cfg, net, x_h, y_h, device, tf32=False):
    """A closure running one autograd training step of ``net``'s network in PyTorch (same weights).

    On CUDA, ``tf32=False`` computes in plain float32, as ours does (cuDNN's TF32 convolutions
    off); ``tf32=True`` keeps torch's defaults, where cuDNN convolutions use TF32 tensor cores
    (10-bit mantissa products: faster, and a lower precision than the float32 compared).
    """
    import torch
    import torch.nn.functional as F

    from threefactor.verify import torch_ref as tr

    tdt = torch.float32 if np.dtype(cfg["dtype"]) == np.float32 else torch.float64
    to_t = lambda a: torch.as_tensor(net.backend.to_numpy(a), device=device, dtype=tdt).clone()
    ws = [to_t(layer.w).requires_grad_(True) for layer in net.hidden]
    wo, bo = to_t(net.output.w).requires_grad_(True), to_t(net.output.b).requires_grad_(True)
    opt = torch.optim.SGD([{"params": ws, "lr": cfg["lr_local"], "weight_decay": cfg["weight_decay_local"]},
                           {"params": [wo, bo], "lr": cfg["lr_out"], "weight_decay": cfg["weight_decay_out"]}],
                          momentum=cfg["momentum"])
    x = torch.as_tensor(x_h, device=device, dtype=tdt)
    y = torch.as_tensor(y_h, device=device).long()
    rule, p = net.rule, cfg["dropout"]
    kinds = [(isinstance(layer, ConvLayer), getattr(layer, "pool", None)) for layer in net.hidden]

    def step():
        opt.zero_grad(set_to_none=True)
        Ky = tr._label_kernel(torch, y, N_CLASSES, rule.label_kernel, tdt)
        h, total = x, 0.0
        for w, (conv, pool) in zip(ws, kinds):
            loss, h = torch_layer(torch, F, h, w, conv, pool, rule, Ky, p, net.hidden[0].divisive)
            total = total + loss
        total = total + F.cross_entropy(h.reshape(h.shape[0], -1) @ wo.T + bo, y)
        total.backward()
        opt.step()

    if device != "cuda":
        return step

    def step_with_precision():
        flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32, tf32
        try:
            step()
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags

    return step_with_precision


def _summary(t, batch):
    return {"step_ms": t["median_s"] * 1e3, "step_iqr_ms": t["iqr_s"] * 1e3, "step_min_ms": t["min_s"] * 1e3,
            "repeats": t["repeats"], "epoch_s": t["median_s"] * N_TRAIN / batch,
            "samples_per_s": batch / t["median_s"]}


def bench_conv(arch="vgg", width=1, batch=128, steps=10, backend="numba", device="cpu", groups=None,
               warmup=2, autograd=True):
    """One record: ours and autograd step and epoch times (see the module docstring)."""
    if groups is None and arch != "vgg":
        groups = 16
    cfg, net, rng = make_net(arch, width, groups, backend)
    data = np.random.default_rng(1)
    x_h = data.standard_normal((batch,) + IMAGE).astype(cfg["dtype"])
    y_h = data.integers(0, N_CLASSES, batch)
    dev = "cupy" if net.backend.name == "cupy" else "cpu"
    fns = {"ours": ours_call(cfg, net, rng, x_h, y_h)}
    torch_skip = None
    if autograd:
        try:
            import torch

            if device == "cuda" and not torch.cuda.is_available():
                torch_skip = "torch.cuda is not available"
            else:
                fns["autograd"] = torch_call(cfg, net, x_h, y_h, device)
                if device == "cuda":
                    fns["autograd_tf32"] = torch_call(cfg, net, x_h, y_h, device, tf32=True)
        except ImportError:
            torch_skip = "torch is not installed"
    if dev == "cpu" and device == "cuda" and "autograd" in fns:    # different devices: one by one
        res = {k: bench.time_call(fn, "cuda" if k.startswith("autograd") else "cpu", budget=float("inf"),
                                  min_repeats=steps, warmup=warmup, max_repeats=steps) for k, fn in fns.items()}
    else:
        timing = {"budget": float("inf"), "min_repeats": steps, "warmup": warmup, "max_repeats": steps}
        if dev == "cupy" and device != "cuda" and "autograd" in fns:
            res = {"ours": bench.time_call(fns["ours"], "cupy", **timing),
                   "autograd": bench.time_call(fns["autograd"], "cpu", **timing)}
        else:
            res = bench.time_all(fns, dev, timing)
    ours = _summary(res["ours"], batch)
    ag = _summary(res["autograd"], batch) if "autograd" in res else None
    tf32 = _summary(res["autograd_tf32"], batch) if "autograd_tf32" in res else None
    return {"arch": arch, "blocks": [list(b) for b in parse_arch(arch, width)], "width": width,
            "image": list(IMAGE), "batch": batch, "groups": cfg["groups"], "dtype": cfg["dtype"],
            "backend": net.backend.name, "torch_device": device if ag else None, "autograd_skipped": torch_skip,
            "steps": steps, "warmup": warmup, "epoch_steps": N_TRAIN / batch,
            "ours_impl": "threefactor ConvNet.train_step (local, Gaussian grp+div)",
            "autograd_impl": "torch conv2d/selu/max_pool2d + torch_ref loss, detached layers, one backward, SGD",
            "ours": ours, "autograd": ag, "autograd_tf32": tf32,
            "speedup_vs_autograd": ag["step_ms"] / ours["step_ms"] if ag else None,
            "speedup_vs_autograd_tf32": tf32["step_ms"] / ours["step_ms"] if tf32 else None,
            "loadavg": bench.loadavg()}


def format_record(r):
    def line(name, s):
        return (f"{name:9} {s['step_ms']:10.1f} ms/step (IQR {s['step_iqr_ms']:.1f}, min {s['step_min_ms']:.1f}, "
                f"{s['repeats']} steps)  epoch {s['epoch_s']:8.1f} s  {s['samples_per_s']:8.0f} samples/s")
    out = [f"conv net {r['arch']} (width {r['width']}, groups {r['groups']}) on {r['image']}, batch {r['batch']}, "
           f"{r['dtype']}; ours on {r['backend']}, autograd on {r['torch_device'] or '-'}",
           line("ours", r["ours"])]
    if r["autograd"]:
        out += [line("autograd", r["autograd"]), f"autograd / ours = {r['speedup_vs_autograd']:.2f}"]
        if r.get("autograd_tf32"):
            out += [line("tf32", r["autograd_tf32"]),
                    f"autograd with torch's default TF32 convolutions / ours = {r['speedup_vs_autograd_tf32']:.2f}"]
    else:
        out.append(f"autograd skipped: {r['autograd_skipped']}")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="vgg", help="vgg, small or a block string (e.g. conv32-pool-fc256)")
    ap.add_argument("--width", type=int, default=1, help="multiplies the conv channels")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--groups", type=int, default=None, help="default: Table 6 (64) for vgg, else 16")
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--backend", choices=BACKENDS, default="numba")
    ap.add_argument("--device", choices=("cpu", "cuda"), default=None,
                    help="torch's device (default cuda with --backend cupy, else cpu)")
    ap.add_argument("--no-autograd", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="threads for BLAS, Numba and torch alike")
    bench.add_heap_argument(ap)
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 steps, 1 warm-up")
    ap.add_argument("--json", default=None, help="default benchmarks/results/<date>-<host>-conv-epoch.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 2, 1
    if args.steps < 1 or args.warmup < 0 or args.batch < 2:
        raise SystemExit("--steps must be >= 1, --warmup >= 0 and --batch >= 2")
    device = args.device or ("cuda" if args.backend == "cupy" else "cpu")
    threads_set = set_threads(args.threads) if args.threads else None
    settings = {"arch": args.arch, "width": args.width, "batch": args.batch, "groups": args.groups,
                "steps": args.steps, "warmup": args.warmup, "backend": args.backend, "device": device,
                "blas_threads": bench.blas_threads(), "threads_set": threads_set, "torch_threads": None,
                "keep_freed_memory": bench.tune_heap(args)}
    if not args.no_autograd:
        settings["torch_threads"] = bench.set_torch_threads()
    rec = bench_conv(args.arch, args.width, args.batch, args.steps, args.backend, device, args.groups,
                     args.warmup, not args.no_autograd)
    print(format_record(rec), flush=True)
    path = args.json or bench.default_json_path("conv-epoch")
    write_json(path, bench.document("conv-epoch", [rec], settings))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
