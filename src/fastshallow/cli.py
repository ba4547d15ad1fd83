"""The fastshallow command: linreg (linear regression, the book's sections 3.2-3.3), train
(softmax regression on Fashion-MNIST, section 3.7), bench (time it against NumPy and PyTorch on
this machine) and config (the build)."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import numpy as np

from ._config import MAX_THREADS, usable_cpus


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
# The kernels' own limit, as a usage error here rather than a failure after the warnings
_threads = _arg(int, lambda v: 0 < v <= MAX_THREADS, f"an integer from 1 to {MAX_THREADS}")


# Drawn by `train` unless told otherwise, and then only when matplotlib is installed: the
# parser's default is None so that an explicit request can be told apart from this default.
_DEFAULT_IMAGES = {"plot": "training.png", "predictions": "predictions.png"}
_THREADS_HELP = ("threads for the compiled kernels; results are bit-identical for any number "
                 "(default: $OMP_NUM_THREADS, else the CPUs this process may use)")


def _parser() -> argparse.ArgumentParser:
    from ._version import __version__

    p = argparse.ArgumentParser(prog="fastshallow", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text)

    lr = command("linreg", "fit y = Xw + b + noise on synthetic data by minibatch SGD (the "
                 "book's section 3.3) and print how far the learned w and b are from the true ones")
    lr.add_argument("--examples", metavar="N", type=_positive_int, default=1000,
                    help="synthetic examples (default: %(default)s)")
    lr.add_argument("--features", metavar="N", type=_positive_int, default=2,
                    help="features: 2 uses the book's w = [2, -3.4], other sizes draw w from "
                    "N(0, 1) (default: %(default)s)")
    lr.add_argument("--batch-size", metavar="N", type=_positive_int, default=10,
                    help="minibatch size (default: %(default)s)")
    lr.add_argument("--lr", type=_positive_float, default=0.03,
                    help="learning rate (default: %(default)s)")
    lr.add_argument("--epochs", metavar="N", type=_positive_int, default=3,
                    help="passes over the data (default: %(default)s)")
    lr.add_argument("--seed", metavar="N", type=_seed, default=0,
                    help="seed of the data, the shuffling and the initial weights "
                    "(default: %(default)s)")
    lr.add_argument("--threads", metavar="N", type=_threads, default=None, help=_THREADS_HELP)

    tr = command("train", "train softmax regression on Fashion-MNIST (the book's section 3.7), "
                 "print the loss and accuracies of every epoch, and draw training.png and "
                 "predictions.png in the current folder")
    tr.add_argument("--recipe", choices=["recommended", "book"], default="recommended",
                    help="recommended: SGD with momentum 0.9 and a cosine schedule from lr 0.05 "
                    "(about 0.843 test accuracy in 10 epochs); book: the book's plain SGD at a "
                    "constant lr 0.1 (about 0.83). Explicit --lr/--momentum/--schedule override "
                    "it (default: %(default)s)")
    tr.add_argument("--epochs", metavar="N", type=_positive_int, default=10,
                    help="passes over the 60000 training images (default: %(default)s)")
    tr.add_argument("--lr", type=_positive_float, default=None,
                    help="learning rate (default: the recipe's, 0.05 or 0.1 for book)")
    tr.add_argument("--momentum", type=_fraction, default=None,
                    help="SGD momentum, in [0, 1) (default: the recipe's, 0.9 or 0 for book)")
    tr.add_argument("--schedule", choices=["constant", "cosine", "step"], default=None,
                    help="how the learning rate changes: constant; cosine: down to 0 along half "
                    "a cosine; step: a tenth as large after each third of the training "
                    "(default: the recipe's, cosine or constant for book)")
    tr.add_argument("--weight-decay", metavar="WD", type=float, default=0.0,
                    help="L2 penalty on the weights (default: %(default)s)")
    tr.add_argument("--label-smoothing", metavar="EPS", type=_fraction, default=0.0,
                    help="share of each target spread evenly over the 10 classes, in [0, 1) "
                    "(default: %(default)s)")
    tr.add_argument("--batch-size", metavar="N", type=_positive_int, default=256,
                    help="minibatch size (default: %(default)s)")
    tr.add_argument("--seed", metavar="N", type=_seed, default=0,
                    help="seed of the initial weights and the shuffling (default: %(default)s)")
    tr.add_argument("--threads", metavar="N", type=_threads, default=None, help=_THREADS_HELP)
    tr.add_argument("--data-dir", metavar="DIR", default=None,
                    help="the folder holding the four Fashion-MNIST .gz files, the only place "
                    "then read (default: the folder $FASTSHALLOW_DATA names, else the user cache, "
                    "/usr/share/datasets/fashion-mnist, then a download)")
    tr.add_argument("--plot", metavar="PATH", default=None,
                    help="training-curve image (.png, .svg or another format matplotlib "
                    "writes), rewritten at most once a second and at the end; '' for none "
                    "(default: training.png in the current folder, when matplotlib is installed)")
    tr.add_argument("--predictions", metavar="PATH", default=None,
                    help="grid of test images with true and predicted labels; '' for none "
                    "(default: predictions.png in the current folder, when matplotlib is "
                    "installed)")
    tr.add_argument("--save", metavar="PATH", default=None,
                    help="save the trained model there (.npz) (default: not saved)")
    tr.add_argument("--no-progress", action="store_true",
                    help="hide the progress bar (shown only when stderr is a terminal)")

    bn = command("bench", "time fastshallow against NumPy and PyTorch on this machine")
    bn.add_argument("--epochs", metavar="N", type=_positive_int, default=10,
                    help="epochs of the timed Fashion-MNIST training; the one-epoch rows stay "
                    "at one (default: %(default)s)")
    bn.add_argument("--repeats", metavar="N", type=_positive_int, default=3,
                    help="timed runs of each contender, of which the median is shown "
                    "(default: %(default)s)")
    bn.add_argument("--threads", metavar="N", type=_threads, default=None, help=_THREADS_HELP)
    bn.add_argument("--no-torch", action="store_true",
                    help="leave PyTorch out (it is left out anyway when not installed)")
    bn.add_argument("--no-dataloader", action="store_true",
                    help="leave out PyTorch's DataLoader loop (the slowest contender)")
    bn.add_argument("--no-linreg", action="store_true", help="leave out linear regression")
    bn.add_argument("--per-cpu", action="store_true",
                    help="also time one thread on each CPU of the team, and compare the team "
                         "with a perfect team of those CPUs (Linux)")

    command("config", "print the build configuration (compiler, OpenMP, threads)")
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
    # The same 3 significant digits for w and b: the errors are tiny, and their size is the news
    if err_w.size <= 8:
        w_text = np.array2string(err_w, formatter={"float_kind": "{:.2e}".format})
        print(f"error in estimating w: {w_text}")
    else:
        print(f"error in estimating w: largest {np.abs(err_w).max():.2e} of {err_w.size}")
    print(f"error in estimating b: {err_b:.2e}")
    return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _choose_images(args) -> Optional[str]:
    """Fill in --plot and --predictions left at their defaults: the default images, or none
    (saying so) when matplotlib is missing, so that `train` still trains on a plain install.
    An image asked for explicitly that cannot be drawn is an error, returned here."""
    from .plotting import _INSTALL_HINT, _import_matplotlib

    try:
        _import_matplotlib()
    except ImportError as exc:
        asked = [f"--{key}" for key in _DEFAULT_IMAGES if getattr(args, key)]
        if asked:
            return f"{asked[0]}: {exc}"
        skipped = [name for key, name in _DEFAULT_IMAGES.items() if getattr(args, key) is None]
        if skipped:
            print(f"fastshallow train: matplotlib is not installed, so {' and '.join(skipped)} "
                  f"{'is' if len(skipped) == 1 else 'are'} not drawn; for images: "
                  f"{_INSTALL_HINT}", file=sys.stderr)
        args.plot = args.predictions = ""
        return None
    for key, name in _DEFAULT_IMAGES.items():
        if getattr(args, key) is None:
            setattr(args, key, name)
    return None


def _data_source(*loaders) -> str:
    """The folder(s) the loaders' Fashion-MNIST arrays were read from: the cache, Debian's
    package, a download or --data-dir can all serve, and the user may assume another."""
    folders = []
    for loader in loaders:
        # the loader's dataset is a transform of the FashionMNIST one, which knows its files
        for source in loader.dataset.dataset.files.values():
            # a source is a path, perhaps followed by " (decoded cache)"
            folder = os.path.dirname(source) + (" (decoded cache)" if source.endswith(
                "(decoded cache)") else "")
            if folder not in folders:
                folders.append(folder)
    return ", ".join(folders)


def _check_output_paths(args) -> Optional[str]:
    """What is wrong with --data-dir, --plot, --predictions or --save, or None."""
    if args.data_dir is not None and not os.path.isdir(os.path.expanduser(args.data_dir)):
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
    # Images and paths are checked before the data is loaded and the model trained, not after.
    problem = _choose_images(args) or _check_output_paths(args)
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
          f"{momentum}, {schedule_name} schedule, {_plural(args.epochs, 'epoch')}, "
          f"{_plural(fs.get_num_threads(), 'thread')}", flush=True)
    print(f"data read from {_data_source(train_iter, test_iter)}", flush=True)
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


def _warn_about_threads(args) -> None:
    """More threads than CPUs cannot change the results (they are bit-identical for any count),
    only take turns on the CPUs: many times slower, and without this, without a word."""
    cpus = usable_cpus()
    if getattr(args, "threads", None) and args.threads > cpus:
        print(f"fastshallow {args.command}: warning: --threads {args.threads} is more than the "
              f"{_plural(cpus, 'CPU')} this process may use; the results will be the same, but "
              f"it will run slower than with --threads {cpus}", file=sys.stderr)


def _run(args) -> int:
    if args.command == "linreg":
        return _linreg(args)
    if args.command == "train":
        return _train(args)
    if args.command == "bench":
        from .bench import run

        run(args.epochs, args.repeats, args.threads, torch=not args.no_torch,
            dataloader=not args.no_dataloader, linreg=not args.no_linreg, per_cpu=args.per_cpu)
        return 0
    import fastshallow as fs

    fs.show_config()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    _warn_about_threads(args)
    try:
        status = _run(args)
        sys.stdout.flush()  # here, where a reader that has gone is noticed (not at exit)
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output has gone (`fastshallow linreg | head -1`): stop quietly,
        # with the status of a process ended by SIGPIPE, as other tools do.  What is still
        # buffered goes nowhere, so that the flush at exit does not fail too.
        try:
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, sys.stdout.fileno())
            os.close(fd)
        except (OSError, ValueError):  # a standard output without a file (captured)
            pass
        return 128 + 13
    except (ValueError, TypeError, OSError, RuntimeError, FloatingPointError) as exc:
        print(f"fastshallow {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # e.g. --examples / --features far beyond this machine
        print(f"fastshallow {args.command}: error: not enough memory ({exc})", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
