"""The ``fastshallow`` command line: what it prints, what it says it skips, and its help.  Other
command-line tests live beside what they exercise: bad arguments in test_bad_input.py, output
paths in test_files.py, linreg in test_linreg.py, the real training in test_softmax_fashion.py."""
import os
import re
import sys

import pytest

import fastshallow as fs
from fastshallow import cli
from fastshallow._config import usable_cpus


def images_unavailable(monkeypatch):
    """As on a plain `pip install .`: importing matplotlib fails."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def no_training(monkeypatch):
    monkeypatch.setattr("fastshallow.datasets.load_data_fashion_mnist",
                        lambda *a, **k: pytest.fail("the data was loaded"))


@pytest.mark.fashion
@pytest.mark.usefixtures("fashion_cache")
def test_train_without_matplotlib_trains_and_says_what_it_skips(tmp_path, monkeypatch, capsys):
    """The README's main command on a machine without matplotlib: the default images are
    skipped with one line saying how to get them; training runs and says where its data came
    from; one epoch is "1 epoch"."""
    images_unavailable(monkeypatch)
    monkeypatch.chdir(tmp_path)
    real_load = fs.datasets.load_data_fashion_mnist
    loaders = []
    monkeypatch.setattr("fastshallow.datasets.load_data_fashion_mnist",
                        lambda *a, **k: loaders.append(real_load(*a, **k)) or loaders[-1])
    assert cli.main(["train", "--epochs", "1", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^epoch 1, loss [\d.]+, train acc", out, re.M), out
    assert "1 epoch," in out and "1 epochs" not in out, out
    assert err.strip().splitlines() == [
        'fastshallow train: matplotlib is not installed, so training.png and predictions.png '
        'are not drawn; for images: pip install "fastshallow[plot]"']
    assert os.listdir(tmp_path) == []
    data_line = [line for line in out.splitlines() if line.startswith("data read from ")]
    assert len(data_line) == 1, out
    for loader in loaders[0]:
        for source in loader.dataset.dataset.files.values():
            assert os.path.dirname(source) in data_line[0]


@pytest.mark.parametrize("flag", ["--plot", "--predictions"])
def test_train_refuses_an_image_asked_for_without_matplotlib(flag, tmp_path, monkeypatch, capsys):
    """Asked for explicitly, even under the default name, an image that cannot be drawn is
    refused before the data is loaded."""
    images_unavailable(monkeypatch)
    no_training(monkeypatch)
    monkeypatch.chdir(tmp_path)
    name = {"--plot": "training.png", "--predictions": "predictions.png"}[flag]
    assert cli.main(["train", flag, name]) == 2
    err = capsys.readouterr().err
    assert err == (f"fastshallow train: error: {flag}: fastshallow's plotting functions need "
                   f"matplotlib, which is not installed; install it with: "
                   f'pip install "fastshallow[plot]"\n')
    assert os.listdir(tmp_path) == []


def test_only_the_default_image_left_is_skipped(monkeypatch, capsys):
    images_unavailable(monkeypatch)
    no_training(monkeypatch)
    args = cli._parser().parse_args(["train", "--plot", ""])
    assert cli._choose_images(args) is None
    assert (args.plot, args.predictions) == ("", "")
    assert "so predictions.png is not drawn" in capsys.readouterr().err


def test_train_draws_the_default_images_when_matplotlib_is_there():
    pytest.importorskip("matplotlib")
    args = cli._parser().parse_args(["train"])
    assert cli._choose_images(args) is None
    assert (args.plot, args.predictions) == ("training.png", "predictions.png")


def help_text(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv + ["--help"])
    assert exc.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere


def test_help_describes_every_command_and_option_with_its_default(capsys):
    top = help_text([], capsys)
    for command in ("linreg", "train", "bench", "config"):
        assert f"{command} (" in top, top  # the description names and explains each command
    subparsers = next(a for a in cli._parser()._actions if a.dest == "command")
    for name, parser in subparsers.choices.items():
        for action in parser._actions:
            if action.dest == "help":
                continue
            assert action.help, (name, action.dest)
            if action.default not in (None, False):
                assert "%(default)s" in action.help, (name, action.dest)
    train = help_text(["train"], capsys)
    assert "(default: 10)" in train and "(default: recommended)" in train
    assert "training.png in the current folder" in train
    assert "predictions.png in the current folder" in train
    assert "step: a tenth as large after each third" in train
    assert "book: the book's plain SGD" in train


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"fastshallow {fs.__version__}\n"


def test_linreg_prints_its_errors_alike(capsys):
    assert cli.main(["linreg", "--examples", "200", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    num = r"-?\d\.\d\de[+-]\d\d"
    assert re.search(rf"^error in estimating w: \[{num} {num}\]$", out, re.M), out
    assert re.search(rf"^error in estimating b: {num}$", out, re.M), out


@pytest.mark.parametrize("command", ["linreg", "train", "bench"])
def test_more_threads_than_cpus_are_warned_about_and_honoured(command, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(cli, "_linreg", lambda args: ran.append(args.threads) or 0)
    monkeypatch.setattr(cli, "_train", lambda args: ran.append(args.threads) or 0)
    monkeypatch.setattr("fastshallow.bench.run", lambda epochs, repeats, threads, **k:
                        ran.append(threads))
    cpus = usable_cpus()
    assert cli.main([command, "--threads", str(cpus)]) == 0
    assert capsys.readouterr().err == ""
    assert cli.main([command, "--threads", str(cpus + 1)]) == 0
    assert ran == [cpus, cpus + 1]
    assert capsys.readouterr().err == (
        f"fastshallow {command}: warning: --threads {cpus + 1} is more than the "
        f"{cpus} CPU{'' if cpus == 1 else 's'} this process may use; the results will be the "
        f"same, but it will run slower than with --threads {cpus}\n")


def test_usable_cpus_are_those_this_process_may_run_on(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert usable_cpus() == 3


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`fastshallow linreg | head -1` printed "error: [Errno 32] Broken pipe" and exited 1;
    now it stops as a process ended by SIGPIPE does, saying nothing."""
    import subprocess

    # Far more output than a pipe holds (64 KiB): the command is still writing, or blocked on
    # the full pipe, when the reader goes, however late that is.
    proc = subprocess.Popen([sys.executable, "-m", "fastshallow", "linreg", "--epochs", "20000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes: later writes (or the final flush) find no one
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err
    assert first.startswith(b"epoch 1, loss ") and err == b""


def test_data_dir_may_start_with_a_tilde_as_root_may(tmp_path, monkeypatch, capsys):
    """The shell leaves `--data-dir=~/data` as it is; the library expands `~` in root=, and
    the command line's check refused what it would read."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").mkdir()
    assert cli.main(["train", "--epochs", "1", "--plot", "", "--predictions", "",
                     "--data-dir", "~/data"]) == 1
    err = capsys.readouterr().err
    assert "is not a folder" not in err
    assert f"in {tmp_path / 'data'}, the folder named by root= (--data-dir on the command " \
           f"line)" in err
