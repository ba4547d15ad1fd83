"""Tests for fastshallow.plotting: real image files, live-plot bookkeeping, notebook detection,
and argument checking. Everything renders off-screen; IPython is never needed."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
import xml.etree.ElementTree as ET

import numpy as np
import pytest

pytest.importorskip("matplotlib")
PIL_Image = pytest.importorskip("PIL.Image")

import fastshallow as fs  # noqa: E402
from fastshallow import plotting  # noqa: E402

NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
         "ankle boot"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


@pytest.fixture
def no_ipython(monkeypatch):
    """Behave as on a machine where IPython is not installed."""
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)


def png_size(path) -> tuple:
    with PIL_Image.open(path) as im:
        im.load()  # decodes the whole image, not just the header
        return im.size


def svg_root(path_or_text):
    if os.path.exists(str(path_or_text)):
        root = ET.parse(path_or_text).getroot()
    else:
        root = ET.fromstring(path_or_text)
    return root


def is_svg_root(root) -> bool:
    return root.tag in ("svg", "{http://www.w3.org/2000/svg}svg")


def expected_px(fig, figsize):
    return (round(figsize[0] * fig.dpi), round(figsize[1] * fig.dpi))


def leftovers(folder):
    return [f for f in os.listdir(folder) if f.endswith(".tmp")]


# ------------------------------------------------------------------------------------------
# optional dependency
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda: plotting.plot([1, 2, 3]),
    lambda: plotting.Animator(),
    lambda: plotting.show_images(np.zeros((2, 4, 4)), 1, 2),
    lambda: plotting.set_figsize((3, 2)),
])
def test_missing_matplotlib_says_how_to_install(monkeypatch, call):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "fastshallow\[plot\]"'):
        call()


def test_importing_the_module_does_not_import_matplotlib():
    code = ("import sys, fastshallow.plotting; "
            "print('matplotlib' in sys.modules, 'IPython' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------------------
# backend choice
# ------------------------------------------------------------------------------------------

def _backend_after_plot(tmp_path, env_extra):
    code = textwrap.dedent(f"""
        import matplotlib
        from fastshallow import plotting
        plotting.plot([1, 2, 3], path={str(tmp_path / 'b.png')!r})
        print(matplotlib.get_backend().lower())
    """)
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_headless_uses_agg(tmp_path):
    assert _backend_after_plot(tmp_path, {}) == "agg"
    assert png_size(tmp_path / "b.png") == (350, 250)


def test_a_chosen_backend_is_kept(tmp_path):
    assert _backend_after_plot(tmp_path, {"MPLBACKEND": "svg"}) == "svg"
    assert png_size(tmp_path / "b.png") == (350, 250)


# ------------------------------------------------------------------------------------------
# notebook detection
# ------------------------------------------------------------------------------------------

def _fake_ipython(monkeypatch, shell):
    mod = types.ModuleType("IPython")
    mod.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", mod)
    return mod


def test_not_a_notebook_under_pytest():
    assert plotting._in_notebook() is False


def test_not_a_notebook_without_ipython(no_ipython):
    assert plotting._in_notebook() is False


def test_not_a_notebook_in_a_terminal_shell(monkeypatch):
    _fake_ipython(monkeypatch, types.SimpleNamespace())  # TerminalInteractiveShell: no kernel
    assert plotting._in_notebook() is False
    _fake_ipython(monkeypatch, None)  # IPython imported, no shell running
    assert plotting._in_notebook() is False


def test_notebook_when_a_kernel_runs(monkeypatch):
    _fake_ipython(monkeypatch, types.SimpleNamespace(kernel=object()))
    assert plotting._in_notebook() is True


def test_broken_ipython_is_not_a_notebook(monkeypatch):
    mod = types.ModuleType("IPython")

    def boom():
        raise RuntimeError("broken install")
    mod.get_ipython = boom
    monkeypatch.setitem(sys.modules, "IPython", mod)
    assert plotting._in_notebook() is False


def test_use_svg_display_without_ipython(no_ipython):
    assert plotting.use_svg_display() is None


# ------------------------------------------------------------------------------------------
# set_figsize / set_axes
# ------------------------------------------------------------------------------------------

def test_set_figsize(monkeypatch):
    import matplotlib
    monkeypatch.setitem(matplotlib.rcParams, "figure.figsize", [6.4, 4.8])
    plotting.set_figsize((4.5, 2.5))
    assert list(matplotlib.rcParams["figure.figsize"]) == [4.5, 2.5]
    plotting.set_figsize()
    assert list(matplotlib.rcParams["figure.figsize"]) == [3.5, 2.5]
    with pytest.raises(ValueError, match="figsize"):
        plotting.set_figsize((0, 2))
    with pytest.raises(TypeError, match="figsize"):
        plotting.set_figsize(3)


def test_set_axes():
    import matplotlib.pyplot as plt
    _, ax = plt.subplots()
    ax.plot([1, 10, 100], [1, 2, 3])
    plotting.set_axes(ax, "x", "y", (1, 100), (0, 4), "log", "linear", ["line"])
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert ax.get_xlim() == (1, 100) and ax.get_ylim() == (0, 4)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["line"]


# ------------------------------------------------------------------------------------------
# plot
# ------------------------------------------------------------------------------------------

def _lines(ax):
    return [(np.asarray(l.get_xdata(), float), np.asarray(l.get_ydata(), float))
            for l in ax.get_lines()]


def test_plot_book_example_normals_to_png(tmp_path):
    x = np.arange(-7, 7, 0.01)
    params = [(0, 1), (0, 2), (3, 1)]
    ys = [np.exp(-0.5 / s ** 2 * (x - m) ** 2) / np.sqrt(2 * np.pi * s ** 2) for m, s in params]
    legend = [f"mean {m}, var {s}" for m, s in params]
    path = tmp_path / "normal.png"
    ax = plotting.plot(x, ys, xlabel="z", ylabel="p(z)", figsize=(4.5, 2.5), legend=legend,
                       path=path)
    lines = _lines(ax)
    assert len(lines) == 3
    for (lx, ly), y in zip(lines, ys):
        np.testing.assert_array_equal(lx, x)
        np.testing.assert_allclose(ly, y)
    assert [l.get_linestyle() for l in ax.get_lines()] == ["-", "--", "-."]
    assert ax.get_xlabel() == "z" and ax.get_ylabel() == "p(z)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == legend
    assert png_size(path) == expected_px(ax.figure, (4.5, 2.5))
    assert leftovers(tmp_path) == []


def test_plot_svg(tmp_path):
    path = tmp_path / "line.svg"
    plotting.plot([3, 1, 2], path=str(path))
    root = svg_root(path)
    assert is_svg_root(root)
    assert root.get("width") == "252pt" and root.get("height") == "180pt"  # 3.5 x 2.5 in


def test_plot_y_none_is_against_index():
    ax = plotting.plot([5.0, 3.0, 4.0])
    (x, y), = _lines(ax)
    np.testing.assert_array_equal(x, [0, 1, 2])
    np.testing.assert_array_equal(y, [5, 3, 4])


def test_plot_list_of_lists_and_2d_arrays():
    ax = plotting.plot([[1, 2, 3], [4, 5, 6]], [[1, 4, 9], [2, 2, 2]])
    got = _lines(ax)
    np.testing.assert_array_equal(got[1][0], [4, 5, 6])
    np.testing.assert_array_equal(got[1][1], [2, 2, 2])
    ax = plotting.plot(np.arange(3), np.array([[1, 2, 3], [3, 2, 1]]))
    got = _lines(ax)
    assert len(got) == 2
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[1][1], [3, 2, 1])
    ax = plotting.plot(np.arange(4).reshape(2, 2))  # rows against their index
    assert len(_lines(ax)) == 2


def test_plot_cycles_formats_beyond_four_lines():
    x = np.arange(5)
    ax = plotting.plot(x, [x * k for k in range(6)])
    assert len(ax.get_lines()) == 6
    assert ax.get_lines()[4].get_linestyle() == ax.get_lines()[0].get_linestyle()


def test_plot_on_given_axes_clears_and_returns_them():
    import matplotlib.pyplot as plt
    _, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = plotting.plot([1, 2], [3, 4], axes=ax)
    assert out is ax
    assert len(ax.get_lines()) == 1


def test_plot_each_call_gets_its_own_figure():
    a = plotting.plot([1, 2])
    b = plotting.plot([3, 4])
    assert a.figure is not b.figure
    assert len(a.get_lines()) == len(b.get_lines()) == 1


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(X=[1, 2, 3], Y=[1, 2]), ValueError, "3 points.*2"),
    (dict(X=[[1, 2], [1, 2]], Y=[[1, 2], [1, 2], [1, 2]]), ValueError, "2 series.*3"),
    (dict(X=[1, 2], Y=[3, 4], legend=["a", "b"]), ValueError, "legend has 2.*1 lines"),
    (dict(X=np.zeros((2, 2, 2))), ValueError, "1-D or 2-D"),
    (dict(X=[]), ValueError, "must not be empty"),
    (dict(X=["a", "b"]), TypeError, "real numbers"),
    (dict(X=[1, 2], figsize=(-1, 2)), ValueError, "figsize"),
    (dict(X=[1, 2], fmts=[]), TypeError, "fmts"),
])
def test_plot_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        plotting.plot(**kwargs)


def test_plot_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="extension"):
        plotting.plot([1, 2], path=tmp_path / "plot.nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plotting.plot([1, 2], path=tmp_path / "missing" / "plot.png")


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    ax = plotting.plot([1, 2, 3], path=path)
    before = path.read_bytes()
    fig = ax.figure

    def failing_savefig(fh, **kw):
        fh.write(b"half an image")
        raise RuntimeError("disk full")
    monkeypatch.setattr(fig, "savefig", failing_savefig)
    with pytest.raises(RuntimeError, match="disk full"):
        plotting._save_figure(fig, path)
    assert path.read_bytes() == before  # the old image survives intact
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------
# Animator
# ------------------------------------------------------------------------------------------

def test_animator_rewrites_png_on_every_add(tmp_path, no_ipython):
    path = tmp_path / "train.png"
    legend = ["train loss", "train acc", "test acc"]
    anim = plotting.Animator(xlabel="epoch", xlim=[1, 5], ylim=[0.0, 1.0], legend=legend,
                             path=path)
    assert not path.exists()  # nothing written before the first point
    seen = set()
    points = [(0.9, 0.5, 0.45), (0.7, 0.6, 0.55), (0.5, 0.7, None), (0.4, 0.75, 0.7)]
    for epoch, ys in enumerate(points, start=1):
        anim.add(epoch, ys)
        data = path.read_bytes()
        assert data not in seen  # a new picture each time
        seen.add(data)
        assert png_size(path) == expected_px(anim.fig, (3.5, 2.5))
        ax = anim.axes[0]
        assert len(ax.get_lines()) == len(legend)
        assert [t.get_text() for t in ax.get_legend().get_texts()] == legend
    assert anim.X == [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 4]]
    assert anim.Y == [[0.9, 0.7, 0.5, 0.4], [0.5, 0.6, 0.7, 0.75], [0.45, 0.55, 0.7]]
    for line, xs, ys in zip(anim.axes[0].get_lines(), anim.X, anim.Y):
        np.testing.assert_array_equal(line.get_xdata(), xs)
        np.testing.assert_array_equal(line.get_ydata(), ys)
    assert anim.axes[0].get_xlabel() == "epoch"
    assert anim.axes[0].get_xlim() == (1, 5)
    assert leftovers(tmp_path) == []


def test_animator_mtime_advances(tmp_path):
    path = tmp_path / "a.png"
    anim = plotting.Animator(path=path)
    anim.add(1, 1.0)
    first = os.stat(path).st_mtime_ns
    os.utime(path, ns=(first - 10 ** 9, first - 10 ** 9))  # make any rewrite visible
    anim.add(2, 2.0)
    assert os.stat(path).st_mtime_ns > first - 10 ** 9


def test_animator_min_interval_draws_the_first_point_then_at_most_that_often(
        tmp_path, monkeypatch, no_ipython):
    """With min_interval, points added sooner than that after the last drawing (or the
    Animator's creation) wait, kept in X / Y, for the next add that comes late enough, flush(),
    save() (which draws them, not publishing) or close()."""
    path = tmp_path / "throttled.png"
    clock = [100.0]
    monkeypatch.setattr(plotting.time, "monotonic", lambda: clock[0])
    writes = []
    real_save = plotting._save_figure
    monkeypatch.setattr(plotting, "_save_figure",
                        lambda fig, p, **kw: writes.append(str(p)) or real_save(fig, p, **kw))
    anim = plotting.Animator(legend=["loss"], path=path, min_interval=1.0)

    def points_drawn():
        return len(anim.axes[0].get_lines()[0].get_xdata()) if anim.axes[0].get_lines() else 0

    clock[0] += 0.5
    anim.add(1, 1.0)  # half a second after creation: waits
    assert writes == [] and not path.exists() and points_drawn() == 0
    clock[0] += 0.5
    anim.add(2, 0.5)  # a second after creation: drawn, with the point before
    assert len(writes) == 1 and points_drawn() == 2
    first = path.read_bytes()
    clock[0] += 0.4
    anim.add(3, 0.3)
    assert len(writes) == 1 and path.read_bytes() == first and points_drawn() == 2
    assert anim.X == [[1, 2, 3]]
    anim.flush()
    assert len(writes) == 2 and path.read_bytes() != first and points_drawn() == 3
    anim.flush()  # nothing new: nothing written
    assert len(writes) == 2
    clock[0] += 1.0
    anim.add(4, 0.2)  # a second after the last drawing: drawn at once
    assert len(writes) == 3 and points_drawn() == 4
    clock[0] += 0.1
    anim.add(5, 0.1)
    other = tmp_path / "copy.png"
    anim.save(other)
    assert points_drawn() == 5 and writes[-1] == str(other) and other.exists()
    anim.close()  # still not published to `path`: close does it
    assert writes[-1] == str(path) and len(writes) == 5


def test_train_draws_its_curve_once_more_after_the_last_epoch(tmp_path):
    """fs.train flushes the animator when it ends: a throttled one shows every epoch."""
    X, y = fs.synthetic_data([1.0, 2.0], 0.5, 40, seed=0)
    net = fs.nn.Dense(1, in_units=2, rng=0)
    anim = plotting.Animator(legend=["train loss", "train acc", "test acc"],
                             path=tmp_path / "c.png", min_interval=1e9)
    fs.train(net, fs.load_array((X, y), 10, seed=0), None, fs.losses.L2Loss(), 4,
             fs.optim.SGD(net.parameters(), lr=0.03), verbose=False, animator=anim)
    assert anim.X[0] == [1, 2, 3, 4]
    np.testing.assert_array_equal(anim.axes[0].get_lines()[0].get_xdata(), [1, 2, 3, 4])


def test_animator_svg_file(tmp_path):
    path = tmp_path / "live.svg"
    anim = plotting.Animator(legend=["loss"], path=path)
    anim.add(1, 0.5)
    first = path.read_text()
    anim.add(2, 0.25)
    second = path.read_text()
    assert first != second
    assert is_svg_root(svg_root(path))


def test_animator_without_path_keeps_data(tmp_path, no_ipython):
    anim = plotting.Animator()
    anim.add(1, 3.0)
    anim.add([2], [4.0])
    assert anim.n_lines == 1
    assert anim.X == [[1, 2]] and anim.Y == [[3.0, 4.0]]
    assert os.listdir(tmp_path) == []
    out = anim.save(tmp_path / "later.png")
    assert png_size(out) == expected_px(anim.fig, (3.5, 2.5))
    anim.save(tmp_path / "later.svg")
    assert is_svg_root(svg_root(tmp_path / "later.svg"))
    assert png_size(anim.save(tmp_path / "hi.png", dpi=50)) == (175, 125)


def test_animator_is_not_a_pyplot_figure():
    import matplotlib.pyplot as plt
    before = len(plt.get_fignums())
    plotting.Animator(nrows=2, ncols=2)
    assert len(plt.get_fignums()) == before


def test_animator_grid_and_numpy_values():
    anim = plotting.Animator(nrows=2, ncols=3)
    assert len(anim.axes) == 6
    anim.add(np.int64(1), np.array([0.5, 0.25]))
    anim.add(np.float32(2), (np.float64(0.4), None))
    assert anim.X == [[1.0, 2.0], [1.0]]
    assert anim.Y[0] == [0.5, pytest.approx(0.4)]


def test_animator_lines_from_legend_and_first_add():
    anim = plotting.Animator(legend=["a", "b"])
    assert anim.n_lines == 2 and anim.X == [[], []]
    with pytest.raises(ValueError, match="3 values.*2 lines"):
        anim.add(1, (1, 2, 3))
    anim2 = plotting.Animator()
    anim2.add(1, (1, 2, 3))
    with pytest.raises(ValueError, match="2 values.*3 lines"):
        anim2.add(2, (1, 2))
    with pytest.raises(ValueError, match="x has 2 values"):
        anim2.add([1, 2], (1, 2, 3))
    with pytest.raises(TypeError, match="real numbers"):
        anim2.add(1, ("a", 2, 3))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(nrows=0), ValueError, "nrows"),
    (dict(ncols=-1), ValueError, "ncols"),
    (dict(nrows=1.5), TypeError, "nrows"),
    (dict(figsize=(3, 0)), ValueError, "figsize"),
    (dict(figsize=(101, 2)), ValueError, "figsize"),
    (dict(nrows=33, ncols=32), ValueError, "nrows . ncols must be at most 1024"),
    (dict(path="curve.txt"), ValueError, "extension"),
    (dict(path="/nonexistent-folder-xyz/curve.png"), FileNotFoundError, "does not exist"),
    (dict(min_interval=-1), ValueError, "min_interval"),
    (dict(min_interval=float("nan")), ValueError, "min_interval"),
    (dict(min_interval="1"), TypeError, "min_interval"),
    (dict(min_interval=True), TypeError, "min_interval"),
])
def test_animator_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        plotting.Animator(**kwargs)


@pytest.mark.parametrize("dpi, exc", [(0, ValueError), (-5, ValueError), (1e6, ValueError),
                                      (float("nan"), ValueError), ("high", TypeError)])
def test_animator_save_refuses_a_bad_dpi_and_writes_nothing(tmp_path, dpi, exc):
    anim = plotting.Animator()
    anim.add(1, 2.0)
    with pytest.raises(exc, match="dpi"):
        anim.save(tmp_path / "curve.png", dpi=dpi)
    assert os.listdir(tmp_path) == []
    anim.save(tmp_path / "curve.png", dpi=50)  # a sensible one is taken
    assert os.listdir(tmp_path) == ["curve.png"]


def test_animator_close():
    with plotting.Animator() as anim:
        anim.add(1, 1.0)
    with pytest.raises(RuntimeError, match="closed"):
        anim.add(2, 1.0)
    anim.close()  # twice is fine
    assert anim.closed


def test_animator_save_after_close_is_refused_rather_than_blank(tmp_path):
    # close() released the figure: what save() wrote then was an empty image.
    anim = plotting.Animator(path=tmp_path / "live.png")
    anim.add(1, 1.0)
    anim.close()
    with pytest.raises(RuntimeError, match=r"closed.*save\(\) before close\(\)"):
        anim.save(tmp_path / "after.png")
    assert os.listdir(tmp_path) == ["live.png"]


@pytest.mark.parametrize("x, y", [(10**400, 1.0), (1, -(10**400))], ids=["x", "y"])
def test_animator_add_refuses_a_number_past_the_float_range(x, y):
    anim = plotting.Animator()
    anim.add(0, 0.5)
    with pytest.raises(ValueError, match=r"(x|y) values must fit a float.*401 digits"):
        anim.add(x, y)
    assert anim.X == [[0.0]] and anim.Y == [[0.5]]  # nothing of the refused call kept


class _FakeHandle:
    def __init__(self, log):
        self.log = log

    def update(self, obj, **kw):
        self.log.append(("update", obj, kw))


@pytest.fixture
def fake_notebook(monkeypatch):
    """A running kernel as far as fastshallow can tell, with a recording IPython.display."""
    log = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())
    disp = types.ModuleType("IPython.display")

    def display(obj, **kw):
        log.append(("display", obj, kw))
        return _FakeHandle(log) if kw.get("display_id") else None
    disp.display = display
    disp.clear_output = lambda wait=False: log.append(("clear", wait, {}))
    ipython.display = disp
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", disp)
    return log


def test_animator_in_notebook_updates_one_output(fake_notebook, tmp_path):
    path = tmp_path / "also.png"
    anim = plotting.Animator(legend=["loss", "acc"], path=path)
    assert fake_notebook == []
    anim.add(1, (1.0, 0.5))
    anim.add(2, (0.5, 0.7))
    anim.add(3, (0.25, 0.8))
    kinds = [k for k, _, _ in fake_notebook]
    assert kinds == ["display", "update", "update"]
    assert fake_notebook[0][2].get("display_id") is True
    for _, bundle, kw in fake_notebook:
        assert kw.get("raw") is True
        assert is_svg_root(svg_root(bundle["image/svg+xml"]))
    assert fake_notebook[1][1] != fake_notebook[2][1]
    assert png_size(path) == expected_px(anim.fig, (3.5, 2.5))  # the file is kept too


def test_animator_without_notebook_never_displays(fake_notebook, monkeypatch):
    monkeypatch.setattr(plotting, "_in_notebook", lambda: False)
    anim = plotting.Animator()
    anim.add(1, 1.0)
    assert fake_notebook == []


# ------------------------------------------------------------------------------------------
# show_images / prediction_grid
# ------------------------------------------------------------------------------------------

def test_show_images_grid(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.random((18, 28, 28)).astype(np.float32)
    titles = [NAMES[i % 10] for i in range(18)]
    path = tmp_path / "grid.png"
    axes = plotting.show_images(imgs, 2, 9, titles=titles, path=path)
    assert isinstance(axes, np.ndarray) and axes.shape == (18,)
    assert [ax.get_title() for ax in axes] == titles
    for ax, img in zip(axes, imgs):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), img)
        assert ax.get_images()[0].get_clim() == (0.0, 1.0)
        assert not ax.get_xaxis().get_visible() and not ax.get_yaxis().get_visible()
    assert png_size(path) == expected_px(axes[0].figure, (9 * 1.5, 2 * 1.5))
    assert leftovers(tmp_path) == []


def test_show_images_layouts_and_uint8(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, size=(3, 5, 7), dtype=np.uint8)
    for imgs in (base, base[:, None], base[..., None], list(base)):
        axes = plotting.show_images(imgs, 1, 3)
        assert len(axes) == 3
        for ax, img in zip(axes, base):
            np.testing.assert_array_equal(ax.get_images()[0].get_array(), img)
            assert ax.get_images()[0].get_clim() == (0.0, 255.0)
            assert ax.get_title() == ""
    axes = plotting.show_images(base, 1, 1, scale=2, path=tmp_path / "one.svg")
    assert len(axes) == 1
    root = svg_root(tmp_path / "one.svg")
    assert is_svg_root(root) and root.get("width") == "144pt"


def test_show_images_extra_images_and_extra_cells():
    imgs = np.zeros((5, 4, 4))
    axes = plotting.show_images(imgs, 1, 3, titles=list("abcde"))  # 2 images dropped
    assert [ax.get_title() for ax in axes] == ["a", "b", "c"]
    axes = plotting.show_images(imgs, 2, 4, titles=list("abcde"))  # 3 cells blank
    assert len(axes) == 8
    assert sum(bool(ax.get_images()) for ax in axes) == 5
    assert all(not ax.axison for ax in axes[5:])
    axes = plotting.show_images(imgs, 1, 3, titles=list("xyz"))  # one title per cell shown
    assert [ax.get_title() for ax in axes] == ["x", "y", "z"]


def test_show_images_standardized_floats_are_stretched():
    img = np.linspace(-3, 5, 16).reshape(1, 4, 4)
    ax, = plotting.show_images(img, 1, 1)
    assert ax.get_images()[0].get_clim() == (-3.0, 5.0)


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((np.zeros((2, 4, 4)), 0, 2), {}, ValueError, "num_rows"),
    ((np.zeros((2, 4, 4)), 1, -3), {}, ValueError, "num_cols"),
    ((np.zeros((2, 4, 4)), 1.0, 2), {}, TypeError, "num_rows"),
    ((np.zeros((4, 4)), 1, 1), {}, ValueError, "shape"),
    ((np.zeros((2, 3, 4, 4)), 1, 2), {}, ValueError, "grayscale"),
    ((np.zeros((2, 4, 4, 4, 1)), 1, 2), {}, ValueError, "shape"),
    ((np.zeros((0, 4, 4)), 1, 2), {}, ValueError, "at least one"),
    ((np.zeros((2, 4, 4)), 1, 2), dict(titles=["a"]), ValueError, "titles has 1"),
    ((np.zeros((2, 4, 4)), 1, 2), dict(titles="ab"), TypeError, "titles"),
    ((np.zeros((2, 4, 4)), 1, 2), dict(scale=0), ValueError, "scale"),
    # a grid of 90,000 subplots took minutes and gigabytes before it was refused
    ((np.zeros((1, 2, 2)), 300, 300), {}, ValueError, "num_rows . num_cols must be at most"),
    ((np.zeros((1, 2, 2)), 1, 30), dict(scale=4), ValueError, "120 x 4 inches"),
    ((np.array([[["a"]]]), 1, 1), {}, TypeError, "real numbers"),
])
def test_show_images_bad_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        plotting.show_images(*args, **kwargs)


def test_prediction_grid(tmp_path):
    rng = np.random.default_rng(2)
    imgs = rng.random((10, 1, 28, 28))
    true = [NAMES[i] for i in range(10)]
    pred = [NAMES[(3 * i) % 10] for i in range(10)]
    path = tmp_path / "pred.png"
    axes = plotting.prediction_grid(imgs, true, pred, path=path)
    assert len(axes) == 6
    assert [ax.get_title() for ax in axes] == [f"{t}\n{p}" for t, p in zip(true, pred)][:6]
    np.testing.assert_array_equal(axes[5].get_images()[0].get_array(), imgs[5, 0])
    assert png_size(path) == expected_px(axes[0].figure, (6 * 1.5, 1.5))


def test_prediction_grid_flat_rows_and_small_batches():
    imgs = np.arange(3 * 16, dtype=np.float64).reshape(3, 16)
    axes = plotting.prediction_grid(imgs, [0, 1, 2], np.array([2, 1, 0]), n=6)
    assert len(axes) == 3  # fewer images than n
    assert [ax.get_title() for ax in axes] == ["0\n2", "1\n1", "2\n0"]
    np.testing.assert_array_equal(axes[1].get_images()[0].get_array(), imgs[1].reshape(4, 4))


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((np.zeros((3, 15)), [0] * 3, [0] * 3), {}, ValueError, "square"),
    ((np.zeros((3, 4, 4)), [0] * 2, [0] * 3), {}, ValueError, "true_labels has 2"),
    ((np.zeros((3, 4, 4)), [0] * 3, [0] * 4), {}, ValueError, "pred_labels has 4"),
    ((np.zeros((3, 4, 4)), [0] * 3, [0] * 3), dict(n=0), ValueError, "n must"),
    # one row of 1.5-inch cells, at most 100 inches: the message speaks of n, not of the grid
    ((np.zeros((3, 4, 4)), [0] * 3, [0] * 3), dict(n=67), ValueError, "n must be at most 66"),
    ((np.zeros((3, 4, 4)), "abc", [0] * 3), {}, TypeError, "true_labels"),
])
def test_prediction_grid_bad_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        plotting.prediction_grid(*args, **kwargs)


@pytest.mark.parametrize("chosen, display, expect_agg", [
    (None, None, True),          # nothing chosen, headless: switch to Agg
    (None, ":0", False),         # a display: leave matplotlib's own choice alone
    ("tkagg", None, False),      # the user's choice is never overridden
])
def test_backend_decision(monkeypatch, chosen, display, expect_agg):
    calls = []
    fake = types.SimpleNamespace(
        rcParams=types.SimpleNamespace(_get_backend_or_none=lambda: chosen),
        use=lambda name: calls.append(name))
    monkeypatch.setattr(plotting, "_import_matplotlib", lambda: fake)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if display is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", display)
    plotting._pyplot()
    assert calls == (["Agg"] if expect_agg else [])


def test_animator_bad_add_changes_nothing():
    anim = plotting.Animator(legend=["a", "b"])
    anim.add(1, (1.0, 2.0))
    with pytest.raises(TypeError, match="line 1"):
        anim.add(2, (3.0, "oops"))
    assert anim.X == [[1.0], [1.0]] and anim.Y == [[1.0], [2.0]]


def test_animator_with_real_ipython_display_machinery():
    """The calls fastshallow makes are the ones IPython's display module really accepts: one
    display with a display_id, then updates of that same output (run in a child process so the
    IPython shell singleton does not leak into other tests)."""
    pytest.importorskip("IPython")
    code = textwrap.dedent("""
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.kernel = object()  # what a Jupyter kernel's shell carries
        sent = []
        shell.display_pub.publish = lambda data, metadata=None, **kw: sent.append(
            (sorted(data), (kw.get("transient") or {}).get("display_id"), bool(kw.get("update"))))
        from fastshallow import plotting
        anim = plotting.Animator(legend=["loss", "acc"])
        for epoch in range(3):
            anim.add(epoch + 1, (1.0 / (epoch + 1), 0.5 + 0.1 * epoch))
        print(sent)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    sent = eval(out.stdout.strip().splitlines()[-1])
    assert [s[0] for s in sent] == [["image/svg+xml"]] * 3
    assert len({s[1] for s in sent}) == 1 and sent[0][1]
    assert [s[2] for s in sent] == [False, True, True]


# ------------------------------------------------------------------------------------------
# what a learner's review of the plots found
# ------------------------------------------------------------------------------------------

def png_pixels(path) -> np.ndarray:
    with PIL_Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=int)


def count_color(pixels, rgb, tol=40) -> int:
    return int(np.all(np.abs(pixels - np.array(rgb)) <= tol, axis=-1).sum())


C0 = (31, 119, 180)  # matplotlib's first line color, the '-' format's
RED = (255, 0, 0)


def legend_texts(ax):
    legend = ax.get_legend()
    return None if legend is None else [t.get_text() for t in legend.get_texts()]


@pytest.fixture
def made_animators(monkeypatch):
    """Every Animator made by fastshallow (as fs.train's plot_path does) while the test runs."""
    made = []

    class Recording(plotting.Animator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)
    monkeypatch.setattr(plotting, "Animator", Recording)
    return made


def regression_run(tmp_path, epochs, **kw):
    X, y = fs.synthetic_data([1.0, 2.0], 0.5, 40, seed=0)
    net = fs.nn.Dense(1, in_units=2, rng=0)
    return fs.train(net, fs.load_array((X, y), 10, seed=0), None, fs.losses.L2Loss(), epochs,
                    fs.optim.SGD(net.parameters(), lr=0.03), verbose=False, **kw)


def classification_run(epochs, test_iter=True, **kw):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 4)).astype(np.float32)
    y = (X @ rng.standard_normal((4, 3))).argmax(1)
    net = fs.nn.Dense(3, in_units=4, rng=0)
    return fs.train(net, fs.load_array((X, y), 20, seed=0),
                    fs.load_array((X, y), 20, False) if test_iter else None,
                    fs.losses.SoftmaxCrossEntropyLoss(), epochs,
                    fs.optim.SGD(net.parameters(), lr=0.1), verbose=False, **kw)


def test_set_figsize_after_a_plot_starts_the_books_scatter_on_a_figure_of_its_own(tmp_path):
    """Sections 3.1 then 3.2 in one script: plot() leaves its figure current, and the scatter
    after set_figsize used to land on it, at its size."""
    import matplotlib.pyplot as plt
    x = np.arange(-7, 7, 0.01)
    ax = plotting.plot(x, [np.exp(-x ** 2 / 2), np.exp(-x ** 2 / 8)], xlabel="z",
                       ylabel="p(z)", figsize=(4.5, 2.5), legend=["a", "b"])
    plotting.set_figsize((3.5, 2.5))
    plt.scatter(x, -x, 1)
    plt.savefig(tmp_path / "scatter.png")
    assert plt.gcf() is not ax.figure and len(ax.collections) == 0  # the plot is left alone
    assert png_size(tmp_path / "scatter.png") == expected_px(plt.gcf(), (3.5, 2.5))
    assert len(plt.gcf().axes) == 1 and len(plt.gcf().axes[0].collections) == 1


def test_set_figsize_leaves_no_blank_figure_behind():
    import matplotlib.pyplot as plt
    plt.close("all")
    plotting.set_figsize((3, 2))  # nothing drawn yet (or a notebook cell's figures closed)
    assert plt.get_fignums() == []
    mine = plt.figure(figsize=(5, 5))
    plotting.set_figsize((3, 2))  # an empty current figure is kept, not replaced
    assert plt.get_fignums() == [mine.number]
    plt.close("all")
    a = plotting.plot([1, 2])
    plotting.set_figsize((3, 2))
    plotting.set_figsize((4, 2))  # a blank figure of the first call is not left behind
    assert len(plt.get_fignums()) == 2 and tuple(plt.gcf().get_size_inches()) == (4, 2)
    b = plotting.plot([3, 4])  # makes its own figure, at its own size, and drops the blank
    c = plotting.show_images(np.zeros((2, 4, 4)), 1, 2)[0]
    figs = [plt.figure(n) for n in plt.get_fignums()]
    assert figs == [a.figure, b.figure, c.figure] and all(f.axes for f in figs)
    assert len(a.get_lines()) == len(b.get_lines()) == 1
    assert tuple(b.figure.get_size_inches()) == (3.5, 2.5)


def test_animator_legend_lists_only_series_with_finite_points():
    anim = plotting.Animator(legend=["loss", "acc", "test"])
    anim.add(1, (1.0, None, float("nan")))
    assert legend_texts(anim.axes[0]) == ["loss"]
    anim.add(2, (0.5, 0.7, float("nan")))  # entries appear as their data does
    assert legend_texts(anim.axes[0]) == ["loss", "acc"]
    handles = anim.axes[0].get_legend().legend_handles
    assert [h.get_linestyle() for h in handles] == ["-", "--"]  # each with its own line's style
    empty = plotting.Animator(legend=["a", "b"])
    empty.add(1, (float("nan"), None))
    assert legend_texts(empty.axes[0]) is None


def test_train_curve_legend_shows_no_accuracy_it_has_not_got(tmp_path, made_animators):
    regression_run(tmp_path, 3, plot_path=tmp_path / "linreg.png")
    classification_run(3, test_iter=False, plot_path=tmp_path / "no_test.png")
    regression, no_test = made_animators
    assert legend_texts(regression.axes[0]) == ["train loss"]
    assert legend_texts(no_test.axes[0]) == ["train loss", "train acc"]


def test_a_lone_point_is_marked(tmp_path):
    anim = plotting.Animator(path=tmp_path / "one.png")
    anim.add(1, 0.5)
    assert anim.axes[0].get_lines()[0].get_marker() == "o"
    assert count_color(png_pixels(tmp_path / "one.png"), C0) > 20  # a dot, not an empty plot
    anim.add(2, 0.25)  # a line now: no markers on the book's '-' format
    assert anim.axes[0].get_lines()[0].get_marker() == "None"
    anim = plotting.Animator(legend=["a", "b"], fmts=["-", "rx"])
    anim.add(1, (float("nan"), 1.0))
    anim.add(2, (0.5, 2.0))
    assert [l.get_marker() for l in anim.axes[0].get_lines()] == ["o", "x"]  # a format's kept
    assert plotting.plot([5.0]).get_lines()[0].get_marker() == "o"
    assert plotting.plot([5.0, 6.0]).get_lines()[0].get_marker() == "None"


def test_a_one_epoch_training_curve_shows_its_points(tmp_path, made_animators):
    classification_run(1, plot_path=tmp_path / "one_epoch.png")
    anim, = made_animators
    ax = anim.axes[0]
    assert [l.get_marker() for l in ax.get_lines()] == ["o", "o", "o"]
    lo, hi = ax.get_xlim()
    assert lo < 1 < hi  # the points are inside the axes, not half cut off on an edge
    assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1]


def test_train_curve_ticks_whole_epochs(tmp_path, made_animators):
    classification_run(3, plot_path=tmp_path / "curve.png")
    regression_run(tmp_path, 10, plot_path=tmp_path / "long.svg")
    for anim, epochs in zip(made_animators, (3, 10)):
        ax = anim.axes[0]
        anim.fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if 1 <= t <= epochs]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    # what the caller set on the axes survives the drawing of later points
    anim = plotting.Animator()
    anim.axes[0].set_title("mine")
    anim.add(1, 1.0)
    anim.add(2, 2.0)
    assert anim.axes[0].get_title() == "mine"


def test_predict_takes_as_many_batches_as_hold_n_images(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.random((10, 16)).astype(np.float32)
    y = np.arange(10) % 3
    loader = fs.load_array((X, y), 4, False)
    net = fs.nn.Dense(3, in_units=16, rng=0)
    axes = fs.predict(net, loader, n=10, labels=lambda ys: [f"c{int(v)}" for v in ys])
    assert len(axes) == 10  # not the first batch's 4
    assert [ax.get_title().split("\n")[0] for ax in axes] == [f"c{v}" for v in y]
    np.testing.assert_array_equal(axes[9].get_images()[0].get_array(), X[9].reshape(4, 4))
    assert len(fs.predict(net, loader, n=3)) == 3  # within one batch: the book's grid
    assert len(fs.predict(net, loader, n=50)) == 10  # the loader runs out


def test_prediction_grid_shows_wrong_predictions_in_red(tmp_path):
    from matplotlib.colors import to_rgba
    imgs = np.zeros((4, 8, 8))
    path = tmp_path / "pred.png"
    axes = plotting.prediction_grid(imgs, ["a", "b", "c", "d"], ["a", "x", "c", "y"], path=path)
    assert [ax.get_title() for ax in axes] == ["a\na", "b\nx", "c\nc", "d\ny"]  # the book's
    red = [to_rgba(ax.title.get_color()) == to_rgba("red") for ax in axes]
    assert red == [False, True, False, True]
    assert count_color(png_pixels(path), RED) > 50  # the saved image has them too
    plotting.prediction_grid(imgs, list("abcd"), list("abcd"), path=path)
    assert count_color(png_pixels(path), RED) == 0
