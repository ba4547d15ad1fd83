"""The ``fastshallow`` command: ``linreg`` (section 3.2/3.3), ``train`` (softmax regression on
Fashion-MNIST, section 3.7), ``config``."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np


def _arg(convert, ok, expected: str):
    """An argparse `type`: `convert` the text, then require `ok(value)`; errors say what was
    `expected` and what came."""
    def parse(text: str):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
        return v

    return parse


_positive_int = _arg(int, lambda v: v > 0, "a positive integer")
_positive_float = _arg(float, lambda v: v > 0 and np.isfinite(v), "a positive finite number")
_fraction = _arg(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
_seed = _arg(int, lambda v: v >= 0, "a non-negative integer")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastshallow", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    lr = sub.add_parser("linreg", help="fit y = Xw + b + noise on synthetic data by minibatch SGD "
                        "(the book's section 3.3)")
    lr.add_argument("--examples", type=_positive_int, default=1000)
    lr.add_argument("--features", type=_positive_int, default=2,
                    help="2 uses the book's w = [2, -3.4]; other sizes draw w from N(0, 1)")
    lr.add_argument("--batch-size", type=_positive_int, default=10)
    lr.add_argument("--lr", type=_positive_float, default=0.03)
    lr.add_argument("--epochs", type=_positive_int, default=3)
    lr.add_argument("--seed", type=_seed, default=0)
    lr.add_argument("--threads", type=_positive_int, default=None)

    tr = sub.add_parser("train", help="softmax regression on Fashion-MNIST (section 3.7)")
    tr.add_argument("--recipe", choices=["recommended", "book"], default="recommended",
                    help="recommended: SGD with momentum 0.9 and a cosine schedule from lr 0.05 "
                    "(about 0.843 test accuracy in 10 epochs); book: plain SGD at lr 0.1 "
                    "(about 0.83). Explicit --lr/--momentum/--schedule override it")
    tr.add_argument("--epochs", type=_positive_int, default=10)
    tr.add_argument("--lr", type=_positive_float, default=None)
    tr.add_argument("--momentum", type=_fraction, default=None)
    tr.add_argument("--schedule", choices=["constant", "cosine", "step"], default=None)
    tr.add_argument("--weight-decay", type=float, default=0.0)
    tr.add_argument("--label-smoothing", type=_fraction, default=0.0)
    tr.add_argument("--batch-size", type=_positive_int, default=256)
    tr.add_argument("--seed", type=_seed, default=0)
    tr.add_argument("--threads", type=_positive_int, default=None)
    tr.add_argument("--data-dir", default=None,
                    help="folder holding the four Fashion-MNIST .gz files (default: search "
                    "$FASTSHALLOW_DATA, the cache, /usr/share/datasets/fashion-mnist, then download)")
    tr.add_argument("--plot", metavar="PATH", default="training.png",
                    help="training-curve image, rewritten at most once a second and at the "
                         "end (.png or .svg; '' for none)")
    tr.add_argument("--predictions", metavar="PATH", default="predictions.png",
                    help="grid of test images with true and predicted labels ('' for none)")
    tr.add_argument("--save", metavar="PATH", default=None, help="save the model (.npz)")
    tr.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    bn = sub.add_parser("bench", help="time fastshallow against NumPy and PyTorch on this machine")
    bn.add_argument("--epochs", type=_positive_int, default=10)
    bn.add_argument("--repeats", type=_positive_int, default=3)
    bn.add_argument("--threads", type=_positive_int, default=None)
    bn.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    bn.add_argument("--no-dataloader", action="store_true",
                    help="leave out PyTorch's DataLoader loop (the slowest contender)")
    bn.add_argument("--no-linreg", action="store_true", help="leave out linear regression")
    bn.add_argument("--per-cpu", action="store_true",
                    help="also time one thread on each CPU of the team, and compare the team "
                         "with a perfect team of those CPUs (Linux)")

    sub.add_parser("config", help="print the build configuration")
    return p


def _linreg(args) -> int:
    import fastshallow as fs

    rng = np.random.default_rng(args.seed)
    true_w = np.array([2.0, -3.4]) if args.features == 2 else rng.standard_normal(args.features)
    true_b = 4.2
    X, y = fs.synthetic_data(true_w, true_b, args.examples, seed=rng)
    data_iter = fs.load_array((X, y), args.batch_size, seed=rng)
    net = fs.nn.Dense(1, in_units=args.features, rng=rng)
    loss = fs.losses.L2Loss()
    trainer = fs.optim.SGD(net.parameters(), lr=args.lr)
    full = fs.load_array((X, y), max(args.batch_size, 65536), is_train=False)

    def report(epoch, hist):
        print(f"epoch {epoch}, loss {fs.evaluate_loss(net, full, loss):f}", flush=True)

    long_epochs = args.examples * args.features >= 5_000_000
    fs.train(net, data_iter, None, loss, args.epochs, trainer, verbose=False,
             progress=None if long_epochs else False, num_threads=args.threads, callback=report)
    err_w = true_w - net.weight.data.reshape(-1)
    err_b = true_b - float(net.bias.data[0])
    if err_w.size <= 8:
        print(f"error in estimating w: {err_w}")
    else:
        print(f"error in estimating w: largest {np.abs(err_w).max():.3g} of {err_w.size}")
    print(f"error in estimating b: {err_b}")
    return 0


def _check_output_paths(args) -> Optional[str]:
    """What is wrong with --data-dir, --plot, --predictions or --save, or None."""
    import os

    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        return f"--data-dir: {args.data_dir!r} is not a folder"
    for flag, path in (("--plot", args.plot), ("--predictions", args.predictions)):
        if path:
            from .plotting import _check_save_path

            try:
                _check_save_path(flag, path)
            except (TypeError, ValueError, OSError, ImportError) as exc:
                return str(exc)
    if args.save:
        folder = os.path.dirname(os.path.abspath(args.save))
        if not os.path.isdir(folder):
            return f"--save: folder {folder!r} does not exist"
        if os.path.isdir(args.save):
            return f"--save: {args.save!r} is a folder, not a file name"
    from ._io import check_writable

    # a folder can exist and still refuse new files (permissions, read-only mounts, /proc):
    # find out now rather than after training
    for flag, path in (("--plot", args.plot), ("--predictions", args.predictions),
                       ("--save", args.save)):
        if path:
            try:
                check_writable(path)
            except OSError as exc:
                return f"{flag}: {exc}"
    return None


def _train(args) -> int:
    import fastshallow as fs
    from fastshallow.datasets import load_data_fashion_mnist

    book = args.recipe == "book"
    lr = args.lr if args.lr is not None else (0.1 if book else 0.05)
    momentum = args.momentum if args.momentum is not None else (0.0 if book else 0.9)
    schedule_name = args.schedule or ("constant" if book else "cosine")
    if not (np.isfinite(args.weight_decay) and args.weight_decay >= 0):
        print("fastshallow train: error: --weight-decay must be a finite number >= 0",
              file=sys.stderr)
        return 2
    # Paths are checked before the data is loaded and the model trained, not after.
    problem = _check_output_paths(args)
    if problem:
        print(f"fastshallow train: error: {problem}", file=sys.stderr)
        return 2
    fs.seed(args.seed)
    if args.threads:
        fs.set_num_threads(args.threads)
    train_iter, test_iter = load_data_fashion_mnist(args.batch_size, root=args.data_dir,
                                                    seed=args.seed)
    steps = args.epochs * len(train_iter)
    schedule = {"constant": None,
                "cosine": fs.optim.CosineSchedule(steps),
                "step": fs.optim.StepSchedule(max(1, steps // 3), 0.1)}[schedule_name]
    net = fs.nn.Sequential(fs.nn.Flatten(), fs.nn.Dense(10))
    loss = fs.losses.SoftmaxCrossEntropyLoss(label_smoothing=args.label_smoothing)
    trainer = fs.optim.SGD(net.parameters(), lr=lr, momentum=momentum,
                           weight_decay=args.weight_decay, schedule=schedule)
    print(f"softmax regression on Fashion-MNIST: {len(train_iter.dataset)} training and "
          f"{len(test_iter.dataset)} test images, batch {args.batch_size}, lr {lr}, momentum "
          f"{momentum}, {schedule_name} schedule, {args.epochs} epochs, "
          f"{fs.get_num_threads()} threads", flush=True)
    hist = fs.train(net, train_iter, test_iter, loss, args.epochs, trainer,
                    progress=False if args.no_progress else None, plot_path=args.plot or None)
    print(f"final: test accuracy {hist.test_acc[-1]:.4f}, training took "
          f"{sum(hist.seconds):.3f} s")
    if args.plot:
        print(f"training curve: {args.plot}")
    if args.predictions:
        axes = fs.predict(net, test_iter, n=8, path=args.predictions)
        fs.plotting._pyplot().close(axes.flat[0].figure)
        print(f"predictions: {args.predictions}")
    if args.save:
        net.save(args.save)
        print(f"model: {args.save}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "linreg":
            return _linreg(args)
        if args.command == "train":
            return _train(args)
        if args.command == "bench":
            from .bench import run

            run(args.epochs, args.repeats, args.threads, torch=not args.no_torch,
                dataloader=not args.no_dataloader, linreg=not args.no_linreg,
                per_cpu=args.per_cpu)
            return 0
        import fastshallow as fs

        fs.show_config()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as exc:
        print(f"fastshallow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # e.g. --examples / --features far beyond this machine
        print(f"fastshallow {args.command}: error: not enough memory ({exc})", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
