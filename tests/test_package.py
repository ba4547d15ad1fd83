"""The installed package: one version everywhere, the build report, the public names, the typing
files that ship beside the compiled module (and a stub that matches it), the error when the
compiled extension is missing, and the thread-count policy.

Everything is checked on the copy of fastshallow that `import fastshallow` finds (an installed
wheel, or an editable install); subprocesses are pointed at that same copy.
"""
from __future__ import annotations

import ast
import importlib.metadata
import importlib.resources
import inspect
import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastshallow as fs
import fastshallow._kernels as _kernels
from fastshallow import _config

PKG_DIR = Path(fs.__file__).resolve().parent


def run_python(code: str, **env_overrides: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports the fastshallow under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "FASTSHALLOW_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PKG_DIR.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


# ---- version ------------------------------------------------------------------------------------

def test_version_has_one_source():
    text = (PKG_DIR / "_version.py").read_text()
    found = re.findall(r"""^__version__\s*=\s*["']([^"']+)["']\s*$""", text, re.M)
    assert len(found) == 1, f"_version.py must assign __version__ exactly once, got {found}"
    assert fs.__version__ == found[0]
    assert re.fullmatch(r"\d+\.\d+\.\d+([abc]|rc|\.dev|\.post)?\d*", fs.__version__), fs.__version__


def test_version_matches_installed_metadata():
    try:
        meta = importlib.metadata.version("fastshallow")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a bare source tree
        pytest.fail("fastshallow is not installed (no distribution metadata): run the tests "
                    "against `pip install .` or `pip install -e .`")
    assert meta == fs.__version__, (
        f"installed metadata says {meta}, the package says {fs.__version__}: reinstall")


def test_metadata_carries_the_license_and_python_floor():
    md = importlib.metadata.metadata("fastshallow")
    assert md["License-Expression"] == "MIT"
    assert "LICENSE" in (md.get_all("License-File") or []), md.get_all("License-File")
    # the test and dask extras need dask-ml 2025, which needs Python 3.10
    assert md["Requires-Python"] == ">=3.10"


def test_import_leaves_the_network_modules_alone():
    # urllib.request brings ssl, http and email: about 46 ms, for a download that rarely happens
    proc = run_python("import sys, fastshallow; "
                      "print(sorted(m for m in ('urllib.request', 'http.client', 'ssl') "
                      "if m in sys.modules))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# ---- show_config ------------------------------------------------------------------------------

def test_show_config_reports_the_build(capsys):
    fs.show_config()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"fastshallow {fs.__version__}"
    fields = {}
    for line in lines[1:]:
        key, sep, value = line.strip().partition(":")
        assert sep, f"not a 'key: value' line: {line!r}"
        fields[key] = value.strip()
    for key in ("python", "compiler", "openmp", "simd", "threads", "extension"):
        assert fields.get(key), f"show_config has no {key!r} line:\n{out}"
    assert fields["compiler"] == _kernels.compiler()
    assert fields["simd"] == _kernels.isa()
    on = _kernels.openmp_enabled()
    assert fields["openmp"].split()[0] == ("on" if on else "off"), fields["openmp"]
    assert fields["threads"] == str(fs.get_num_threads())
    assert Path(fields["extension"]).resolve() == Path(_kernels.__file__).resolve()
    assert fields["python"] == sys.version.split()[0]


def test_show_config_writes_to_a_given_file(capsys):
    buf = io.StringIO()
    fs.show_config(file=buf)
    assert capsys.readouterr().out == ""
    assert buf.getvalue().startswith(f"fastshallow {fs.__version__}\n")


# ---- public names -----------------------------------------------------------------------------

def test_all_names_exist_once():
    assert len(fs.__all__) == len(set(fs.__all__)), "duplicates in fastshallow.__all__"
    missing = [name for name in fs.__all__ if not hasattr(fs, name)]
    assert not missing, f"fastshallow.__all__ names that do not exist: {missing}"
    for name in ("show_config", "get_num_threads", "set_num_threads", "__version__"):
        assert name in fs.__all__


def test_star_import_gives_all():
    ns: dict = {}
    exec("from fastshallow import *", ns)
    assert set(fs.__all__) <= set(ns)


# ---- typing files -----------------------------------------------------------------------------

def test_typing_files_ship_beside_the_module():
    root = importlib.resources.files("fastshallow")
    assert root.joinpath("py.typed").is_file(), "py.typed is not installed"
    assert root.joinpath("_kernels.pyi").is_file(), "_kernels.pyi is not installed"
    ext_dir = Path(_kernels.__file__).resolve().parent
    assert (ext_dir / "_kernels.pyi").is_file(), f"no _kernels.pyi beside {_kernels.__file__}"


def _stub_functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse((PKG_DIR / "_kernels.pyi").read_text(), "_kernels.pyi")
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _public_functions(module) -> dict[str, object]:
    return {name: obj for name, obj in vars(module).items()
            if not name.startswith("_") and callable(obj) and not inspect.ismodule(obj)
            and getattr(obj, "__module__", module.__name__) == module.__name__}


def test_stub_declares_every_compiled_function():
    stub = _stub_functions()
    runtime = _public_functions(_kernels)
    assert runtime, "found no public functions in the compiled module"
    assert not set(runtime) - set(stub), f"missing from _kernels.pyi: {sorted(set(runtime) - set(stub))}"
    assert not set(stub) - set(runtime), f"in _kernels.pyi but not compiled: {sorted(set(stub) - set(runtime))}"


def test_stub_parameters_match_the_compiled_functions():
    stub = _stub_functions()
    for name, func in _public_functions(_kernels).items():
        got = [a.arg for a in stub[name].args.args]
        want = list(inspect.signature(func).parameters)
        assert got == want, f"_kernels.pyi declares {name}({', '.join(got)}), compiled: {want}"
        assert stub[name].returns is not None, f"{name} has no return annotation in the stub"


# ---- missing compiled extension ------------------------------------------------------------------

_NO_KERNELS = """
    import importlib.abc, importlib.machinery, sys

    class Unloadable(importlib.abc.Loader):
        # A compiled module that is found but cannot be loaded (say, libgomp is missing).
        def create_module(self, spec):
            raise ImportError("simulated: libgomp.so.1: cannot open shared object file")

        def exec_module(self, module):
            pass

    class NoKernels(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "fastshallow._kernels":
                return None
            if MODE == "missing":  # a source tree, or an install without the extension
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return importlib.machinery.ModuleSpec(name, Unloadable())

    sys.meta_path.insert(0, NoKernels())
    try:
        import fastshallow
    except ImportError as exc:
        print("ImportError:", exc)
        print("cause:", repr(exc.__cause__))
        sys.exit(0)
    print("imported", fastshallow.__file__)
    sys.exit(3)
"""


@pytest.mark.parametrize("mode", ["missing", "unloadable"])
def test_missing_extension_says_how_to_build(mode):
    proc = run_python(f"MODE = {mode!r}\n" + textwrap.dedent(_NO_KERNELS))
    assert proc.returncode == 0, f"import fastshallow did not raise ImportError:\n{proc.stdout}{proc.stderr}"
    msg = proc.stdout
    assert "fastshallow._kernels" in msg, msg
    assert "pip install" in msg, msg
    assert "build_ext --inplace" in msg, msg
    assert "cause: None" not in msg, "the original error should be chained"
    if mode == "unloadable":
        assert "simulated: libgomp.so.1" in msg, "the loader's error should be quoted"


# ---- threads ----------------------------------------------------------------------------------

_THREADS = "import fastshallow as fs, fastshallow._kernels as k; print(fs.get_num_threads(), k.max_threads())"


def test_omp_num_threads_1_gives_one_thread():
    proc = run_python(_THREADS, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1"]


def test_omp_num_threads_is_followed():
    proc = run_python(_THREADS, OMP_NUM_THREADS="3")
    assert proc.returncode == 0, proc.stderr
    expected = ["3", "3"] if _kernels.openmp_enabled() else ["1", "1"]
    assert proc.stdout.split() == expected


@pytest.fixture
def restore_threads():
    saved = _config._num_threads
    yield
    _config._num_threads = saved


@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, "2", True, False, [2]])
def test_set_num_threads_rejects(bad, restore_threads):
    before = fs.get_num_threads()
    with pytest.raises(ValueError, match="num_threads"):
        fs.set_num_threads(bad)
    assert fs.get_num_threads() == before


def test_threadpoolctl_limits_are_followed(restore_threads):
    # scikit-learn users bound every OpenMP library at once this way
    from threadpoolctl import threadpool_limits

    fs.set_num_threads(None)
    default = fs.get_num_threads()
    with threadpool_limits(limits=default + 1, user_api="openmp"):
        assert fs.get_num_threads() == (default + 1 if _kernels.openmp_enabled() else 1)
        fs.set_num_threads(1)  # an explicit count still comes first
        assert fs.get_num_threads() == 1
        fs.set_num_threads(None)
    with threadpool_limits(limits=1, user_api="openmp"):
        assert fs.get_num_threads() == 1
    assert fs.get_num_threads() == default


def test_default_count_starts_a_team_only_for_large_calls(restore_threads):
    # A call on the default count waits for every thread: beside a busy process that can be a
    # time slice, so only calls long enough to pay for it start a team.  A count asked for is
    # honoured from SERIAL_WORK on; the fused path's minibatches, re-timed as they go, too.
    from fastshallow._config import DEFAULT_SERIAL_WORK, SERIAL_WORK, resolve_threads

    fs.set_num_threads(2)
    team = 2 if _kernels.openmp_enabled() else 1
    per_batch = 256 * 784 * 10  # a Fashion-MNIST minibatch's product
    assert SERIAL_WORK <= per_batch < DEFAULT_SERIAL_WORK
    assert resolve_threads(None, per_batch) == 1
    assert resolve_threads(None, DEFAULT_SERIAL_WORK) == team
    assert resolve_threads(None) == team
    assert resolve_threads(2, per_batch) == team
    assert resolve_threads(2, SERIAL_WORK - 1) == 1
    assert resolve_threads(None, per_batch, default_floor=SERIAL_WORK) == team


def test_a_forked_child_of_a_process_whose_teams_ran_computes_on_one_thread():
    """GNU OpenMP's first team in such a child waited forever for threads fork did not copy (a
    multiprocessing 'fork' pool hung).  The child computes on one thread, the same bits; its
    parent keeps its team.  In a fresh interpreter, with an alarm in the child, so that a hang
    fails here instead of stopping the tests."""
    res = run_python("""
        import os, signal
        import numpy as np
        import fastshallow as fs
        X, W = np.ones((2000, 300), np.float32), np.ones((300, 50), np.float32)
        want = fs.kernels.matmul_bias(X, W, num_threads=2)
        order = fs.kernels.permutation(1 << 20, 3, num_threads=2)
        fs.set_num_threads(2)
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)
            same = (np.array_equal(fs.kernels.matmul_bias(X, W, num_threads=2), want)
                    and np.array_equal(fs.kernels.permutation(1 << 20, 3), order))
            os._exit(0 if same and fs.get_num_threads() == 1 else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), fs.get_num_threads())
        """, OMP_NUM_THREADS="2")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0", "2"], (res.stdout, res.stderr)


def test_set_num_threads_sets_and_resets(restore_threads):
    fs.set_num_threads(None)
    default = fs.get_num_threads()  # OMP_NUM_THREADS or the cores (see the subprocess tests)
    fs.set_num_threads(5)
    assert fs.get_num_threads() == (5 if _kernels.openmp_enabled() else 1)
    fs.set_num_threads(None)
    assert fs.get_num_threads() == default
