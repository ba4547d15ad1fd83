"""The chapter's linear regression (sections 3.2-3.3), end to end: the user's loop of DESIGN.md
section 3, the command line, the closed form, and determinism across thread counts."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastshallow as fs

TRUE_W, TRUE_B = np.array([2.0, -3.4]), 4.2


def book_loop(seed, dtype=np.float32):
    fs.seed(seed)
    X, y = fs.synthetic_data(TRUE_W, TRUE_B, 1000, seed=seed, dtype=dtype)
    data_iter = fs.load_array((X, y), batch_size=10, seed=seed)
    net = fs.nn.Dense(1, dtype=dtype)
    loss = fs.losses.L2Loss()
    trainer = fs.optim.SGD(net.parameters(), lr=0.03)
    losses = []
    for epoch in range(3):
        for Xb, yb in data_iter:
            l = loss(net(Xb), yb)
            l.backward()
            trainer.step(batch_size=10)
        losses.append(float(np.mean(loss(net(X), y))))
    return net, losses, X, y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_book_recipe_through_the_users_loop(seed):
    net, losses, X, y = book_loop(seed)
    assert losses[-1] < 1e-4
    assert losses[0] > losses[-1]
    assert np.abs(TRUE_W - net.weight.data.ravel()).max() < 2e-3
    assert abs(TRUE_B - net.bias.data[0]) < 2e-3


def test_book_recipe_float64():
    net, losses, _, _ = book_loop(5, np.float64)
    assert net.weight.dtype == np.float64 and losses[-1] < 1e-4


def test_least_squares_recovers_the_parameters():
    X, y = fs.synthetic_data(TRUE_W, TRUE_B, 1000, seed=0)
    w, b = fs.least_squares(X, y)
    assert np.abs(w - TRUE_W).max() < 1e-3 and abs(b - TRUE_B) < 1e-3
    # and it is the optimum: SGD's solution has no smaller squared error
    net, *_ = book_loop(0)
    sse_ls = np.sum((X @ w + b - y) ** 2)
    sse_sgd = np.sum((X @ net.weight.data.ravel() + net.bias.data[0] - y) ** 2)
    assert sse_ls <= sse_sgd * (1 + 1e-6)


def test_benchmark_contenders_for_the_book_regression_agree():
    """The contenders `benches/bench_training.py` times against each other train the same
    model: all reach the noise floor (0.5 * 0.01**2 = 5e-5), and the library's per-batch loop
    and its fused path give the same loss."""
    from fastshallow import bench

    X, y = bench.book_linreg_data(seed=1)
    loop = bench.fastshallow_book_loop(X, y, seed=1)
    fused = bench.fastshallow_book_fused(X, y, seed=1)
    plain = bench.numpy_book_loop(X, y, seed=1)
    assert max(loop, fused, plain) < 1e-4
    assert abs(loop - fused) <= 1e-6 * loop


def test_bench_times_contenders_in_turns(monkeypatch):
    """`fastshallow bench` takes turns -- one run of each contender, then again -- so that a
    machine whose speed drifts slows them alike; each gets the median of its own runs."""
    from fastshallow import bench

    clock, order = [0.0], []
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])

    def contender(name, seconds):
        def fn():
            order.append(name)
            clock[0] += seconds.pop(0)
            return name.upper()
        return fn

    got = bench.time_in_turns([("a", contender("a", [1.0, 5.0, 2.0]), 3),
                               ("b", contender("b", [7.0]), 1),
                               ("c", contender("c", [4.0, 3.0]), 2)])
    assert order == ["a", "b", "c", "a", "c", "a"]
    assert got == [("a", 2.0, "A"), ("b", 7.0, "B"), ("c", 3.5, "C")]
    with pytest.raises(ValueError, match="'b' needs at least one run"):
        bench.time_in_turns([("a", lambda: 1, 1), ("b", lambda: 2, 0)])


def test_perfect_team_adds_up_the_cpus_speeds():
    """A perfect team of CPUs that take t_i alone takes 1 / sum(1 / t_i): two equal CPUs halve
    the time, a CPU twice as slow adds half a CPU."""
    from fastshallow import bench

    assert bench.perfect_team_seconds([0.02, 0.02]) == pytest.approx(0.01)
    assert bench.perfect_team_seconds([0.02, 0.04]) == pytest.approx(0.04 / 3)
    assert bench.perfect_team_seconds([0.03]) == pytest.approx(0.03)
    for bad in ([], [0.02, 0.0], [-1.0]):
        with pytest.raises(ValueError, match="positive times"):
            bench.perfect_team_seconds(bad)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux CPU affinity")
def test_on_cpu_holds_the_calling_thread_then_lets_go():
    """The wrapped call runs on the one CPU; afterwards, even when it raised, the thread may use
    the CPUs it had before."""
    from fastshallow import bench

    before = os.sched_getaffinity(0)
    cpu = max(before)
    assert bench.on_cpu(lambda: os.sched_getaffinity(0), cpu)() == {cpu}
    assert os.sched_getaffinity(0) == before

    def boom():
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        bench.on_cpu(boom, cpu)()
    assert os.sched_getaffinity(0) == before


def test_per_cpu_timing_refuses_a_team_that_is_not_the_process_cpus():
    """Which CPUs a smaller team runs on is up to the system, and one thread has no team: both
    are refused with what to do instead (and everything without CPU affinity: not Linux)."""
    from fastshallow import bench

    if not hasattr(os, "sched_setaffinity"):
        with pytest.raises(RuntimeError, match="needs os.sched_setaffinity"):
            bench.team_cpus(2)
        return
    cpus = sorted(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=f"use --threads {len(cpus)}"):
        bench.team_cpus(1)
    with pytest.raises(ValueError, match="the team has 99"):
        bench.team_cpus(99)
    if len(cpus) >= 2:
        assert bench.team_cpus(len(cpus)) == cpus


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "fastshallow", *args], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_cli_linreg_reproduces_the_book():
    r = run_cli("linreg", "--seed", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    epochs = [float(m.group(1)) for m in map(re.compile(r"^epoch \d+, loss (\S+)$").match, lines)
              if m]
    assert len(epochs) == 3 and epochs[-1] < 1e-4
    w_err = re.search(r"error in estimating w: \[(.*)\]", r.stdout).group(1).split()
    b_err = float(re.search(r"error in estimating b: (\S+)", r.stdout).group(1))
    assert len(w_err) == 2 and max(abs(float(v)) for v in w_err) < 2e-3 and abs(b_err) < 2e-3


def test_cli_rejects_bad_arguments():
    for args in (["linreg", "--batch-size", "0"], ["linreg", "--lr", "nan"],
                 ["linreg", "--epochs", "x"]):
        r = run_cli(*args)
        assert r.returncode == 2 and "expected a positive" in r.stderr, (args, r.stderr)


THREADS_SCRIPT = """
import numpy as np, fastshallow as fs
from fastshallow import _config
# the per-batch loop's calls (256 x 300) start a team only from SERIAL_WORK, as asked-for counts do
_config.DEFAULT_SERIAL_WORK = _config.SERIAL_WORK
X, y = fs.synthetic_data(np.linspace(-1, 1, 300), 0.5, 20000, seed=0)
fs.seed(0)
it = fs.load_array((X, y), 256, seed=0)
for fused in (True, False):
    net = fs.nn.Dense(1)
    opt = fs.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    fs.train(net, it, None, fs.losses.L2Loss(), 2, opt, fused=fused, verbose=False)
    print(net.weight.data.tobytes().hex(), net.bias.data.tobytes().hex())
"""


def test_same_seed_same_bits_with_omp_num_threads_1_and_2():
    outs = []
    for n in ("1", "2"):
        r = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "OMP_NUM_THREADS": n})
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1]
    assert len(outs[0].splitlines()) == 2
