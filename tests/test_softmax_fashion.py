"""Softmax regression on the real Fashion-MNIST (sections 3.6-3.7): the book's recipe through
``fs.train``, the per-batch loop and the command line; the recommended recipe; the files the
command writes.  These tests need the data and fail (never skip) without it."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fastshallow as fs

# fashion_cache (conftest) keeps the decoded-data cache these tests create out of the user's home
pytestmark = [pytest.mark.fashion, pytest.mark.usefixtures("fashion_cache")]
SEEDS = (0, 1, 2)


def book_setup(seed):
    fs.seed(seed)
    train_iter, test_iter = fs.load_data_fashion_mnist(256, seed=seed)
    net = fs.nn.Sequential(fs.nn.Flatten(), fs.nn.Dense(10))
    return net, train_iter, test_iter, fs.losses.SoftmaxCrossEntropyLoss()


def check_book_accuracies(accs):
    assert min(accs) >= 0.815, accs
    assert np.mean(accs) >= 0.825, accs


@pytest.fixture(scope="module")
def book_runs():
    """The book's recipe (batch 256, lr 0.1, 10 epochs, N(0, 0.01) weights) through fs.train."""
    runs = {}
    for seed in SEEDS:
        net, train_iter, test_iter, loss = book_setup(seed)
        trainer = fs.optim.SGD(net.parameters(), lr=0.1)
        hist = fs.train(net, train_iter, test_iter, loss, 10, trainer, verbose=False)
        assert hist.fused
        runs[seed] = (net, hist)
    return runs


def test_book_recipe_through_fs_train(book_runs):
    check_book_accuracies([h.test_acc[-1] for _, h in book_runs.values()])
    for _, hist in book_runs.values():
        assert hist.train_loss[-1] < hist.train_loss[0]
        assert len(hist.seconds) == 10


def test_book_recipe_through_the_per_batch_loop(book_runs):
    accs = []
    for seed in SEEDS:
        net, train_iter, test_iter, loss = book_setup(seed)
        trainer = fs.optim.SGD(net.parameters(), lr=0.1)
        for epoch in range(10):
            for X, y in train_iter:
                l = loss(net(X), y)
                l.backward()
                trainer.step(X.shape[0])
        accs.append(fs.evaluate_accuracy(net, test_iter))
        # the fused path computed the same thing, up to floating-point rounding
        fused_net, hist = book_runs[seed]
        assert abs(accs[-1] - hist.test_acc[-1]) <= 0.002
        np.testing.assert_allclose(net[1].weight.data, fused_net[1].weight.data, atol=2e-3)
    check_book_accuracies(accs)


def run_cli(tmp_path, *args):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    r = subprocess.run([sys.executable, "-m", "fastshallow", "train", "--no-progress", *args],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


EPOCH_LINE = re.compile(r"^epoch (\d+), loss ([\d.]+), train acc ([\d.]+), test acc ([\d.]+), "
                        r"([\d.]+) s$", re.M)


def test_book_recipe_through_the_command_line(tmp_path):
    accs = []
    for seed in SEEDS:
        out = run_cli(tmp_path, "--recipe", "book", "--seed", str(seed), "--plot", "",
                      "--predictions", "")
        epochs = EPOCH_LINE.findall(out)
        assert [int(e[0]) for e in epochs] == list(range(1, 11)), out
        assert "lr 0.1, momentum 0.0, constant schedule" in out
        accs.append(float(epochs[-1][3]))
    check_book_accuracies(accs)


def test_recommended_recipe_reaches_084_for_every_seed():
    for seed in SEEDS:
        net, train_iter, test_iter, loss = book_setup(seed)
        trainer = fs.optim.SGD(net.parameters(), lr=0.05, momentum=0.9,
                               schedule=fs.optim.CosineSchedule(10 * len(train_iter)))
        hist = fs.train(net, train_iter, test_iter, loss, 10, trainer, verbose=False)
        assert hist.test_acc[-1] >= 0.84, (seed, hist.test_acc)


def test_default_command_writes_plot_predictions_and_model(tmp_path):
    out = run_cli(tmp_path, "--save", "model.npz")
    assert "momentum 0.9, cosine schedule" in out
    epochs = EPOCH_LINE.findall(out)
    assert len(epochs) == 10 and float(epochs[-1][3]) >= 0.84
    with Image.open(tmp_path / "training.png") as im:
        assert im.format == "PNG" and im.size[0] >= 300 and im.size[1] >= 200
        pixels = np.asarray(im.convert("L"))
        assert pixels.std() > 10  # lines and text, not a blank canvas
    with Image.open(tmp_path / "predictions.png") as im:
        assert im.format == "PNG" and im.size[0] > 3 * im.size[1]  # one row of 8 images
    net = fs.nn.load(tmp_path / "model.npz")
    _, test_iter = fs.load_data_fashion_mnist(1000)
    assert fs.evaluate_accuracy(net, test_iter) == pytest.approx(float(epochs[-1][3]), abs=5e-4)


def test_predict_titles_show_true_and_predicted_labels(book_runs, tmp_path):
    net, _ = book_runs[0]
    _, test_iter = fs.load_data_fashion_mnist(256)
    axes = fs.predict(net, test_iter, n=6, path=tmp_path / "p.svg")
    X, y = next(iter(test_iter))
    pred = np.asarray(net(X)).argmax(axis=1)
    titles = [ax.get_title() for ax in axes[:6]]
    truth = fs.get_fashion_mnist_labels(y[:6])
    guess = fs.get_fashion_mnist_labels(pred[:6])
    assert titles == [f"{t}\n{p}" for t, p in zip(truth, guess)]
    assert (tmp_path / "p.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


# A median in the bench table: 4 decimals of a second, or 6 below 10 ms.
SECONDS = r"\d+\.\d{4}|0\.00\d{4}"


def test_bench_command_prints_every_task_with_ratios(capsys):
    """`fastshallow bench` on the real data, kept short: every task's table, fastshallow first
    at 1.00x, every contender reaching a sensible accuracy or loss."""
    from fastshallow import cli

    assert cli.main(["bench", "--epochs", "1", "--repeats", "1", "--threads", "2", "--no-torch",
                     "--no-linreg"]) == 0
    out = capsys.readouterr().out
    rows = re.findall(rf"^  (\S.*?)\s+({SECONDS})\s+(\d+\.\d\d)x  (test acc|loss) (\S+)$", out,
                      re.M)
    names = [r[0] for r in rows]
    assert names == ["fastshallow", "numpy", "fastshallow, 2 threads", "fastshallow, 1 thread",
                     "fastshallow, per-batch loop", "fastshallow, fs.train_epoch",
                     "numpy, per-batch loop"], out
    assert [r[2] for r in rows if r[0] in ("fastshallow", "fastshallow, 2 threads",
                                           "fastshallow, per-batch loop")] == ["1.00"] * 3, out
    accs = [float(r[4]) for r in rows if r[3] == "test acc"]
    assert len(accs) == 4 and min(accs) > 0.7, out
    assert accs[2] == accs[3], out  # the same model on 2 threads and on 1
    losses = [float(r[4]) for r in rows if r[3] == "loss"]
    assert len(losses) == 3 and max(losses) < 1e-4, out
    assert "Fashion-MNIST, 1 epoch\n" in out and "one epoch" in out
    assert "the book's linear regression" in out


def test_bench_per_cpu_times_one_thread_on_each_cpu(capsys):
    """`fastshallow bench --per-cpu`: one-thread rows held to each CPU of the team (the same
    model as the team's), and the team set against a perfect team of those CPUs, computed from
    the rows as printed; the process may use all its CPUs again afterwards.  A process with one
    CPU has no team to compare, and is told so; so is one without CPU affinity (not Linux)."""
    from fastshallow import cli

    argv = ["bench", "--epochs", "1", "--repeats", "1", "--no-torch", "--no-linreg", "--per-cpu"]
    if not hasattr(os, "sched_setaffinity"):  # not Linux: refused, saying why
        assert cli.main(argv + ["--threads", "2"]) == 1
        assert "needs os.sched_setaffinity" in capsys.readouterr().err
        return
    cpus = sorted(os.sched_getaffinity(0))
    argv += ["--threads", str(len(cpus))]
    if len(cpus) < 2:
        assert cli.main(argv) == 1
        assert "needs a team of 2 or more threads" in capsys.readouterr().err
        return
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert sorted(os.sched_getaffinity(0)) == cpus
    rows = re.findall(rf"^  (fastshallow, .*?)\s+({SECONDS})\s+\d+\.\d\dx  test acc (\S+)$",
                      out, re.M)
    assert [r[0] for r in rows] == [f"fastshallow, {len(cpus)} threads", "fastshallow, 1 thread"] \
        + [f"fastshallow, 1 thread on CPU {c}" for c in cpus], out
    assert len({r[2] for r in rows}) == 1, out
    team, one = float(rows[0][1]), float(rows[1][1])
    perfect = 1 / sum(1 / float(r[1]) for r in rows[2:])
    m = re.search(r"a perfect team of them would take (\d+\.\d{4}) s, (\d+\.\d\d)x faster than "
                  r"1 thread;\n  the team took (\d+\.\d{4}) s, (\d+\.\d\d) of that speed", out)
    assert m, out
    assert float(m[1]) == pytest.approx(perfect, abs=2e-4)
    # Ratios are printed to 2 decimals from times printed to 4: a few percent of rounding, and
    # up to 0.005 more when a busy machine makes the ratio small.
    assert float(m[2]) == pytest.approx(one / perfect, rel=0.03, abs=0.006)
    assert float(m[3]) == team
    assert float(m[4]) == pytest.approx(perfect / team, rel=0.03, abs=0.006)
