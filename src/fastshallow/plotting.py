"""Plotting helpers for the "Linear Neural Networks" workflow: line plots, a live training plot
(:class:`Animator`), image grids and a prediction grid.

matplotlib is an optional dependency (``pip install "fastshallow[plot]"``); it is imported only
when one of these functions is called. IPython is never required: inside a running Jupyter kernel
:class:`Animator` redraws its figure in place, anywhere else it can rewrite an image file after
every point instead. On a machine without a display, pyplot is put on the off-screen Agg backend
unless a backend was already chosen (``MPLBACKEND``, ``matplotlib.use``, Jupyter's inline backend).

Differences from the textbook's helpers, all deliberate:

* :func:`plot` without ``axes`` draws on a new figure of size ``figsize`` instead of on pyplot's
  current axes, and it does not change the global default figure size; consecutive calls in a
  script therefore never draw over each other.
* :func:`set_figsize` makes the *next* figure that size: after something was drawn on pyplot's
  current figure it starts a new one, so the book's ``set_figsize(...); plt.scatter(...)``
  after a :func:`plot` in the same script or cell does not draw over the plot.
* A line with a single finite point gets a dot (a '-' line through one point is invisible),
  and an :class:`Animator`'s legend lists only the lines that have a finite point yet.
* :func:`prediction_grid` titles wrong predictions in red.
* Line formats cycle when there are more lines than ``fmts`` (the book silently dropped them).
* Mismatched inputs (x and y of different lengths, a legend with the wrong number of entries,
  titles that do not match the images) raise ``ValueError`` instead of being truncated.
* Figures made here use matplotlib's constrained layout, so axis labels and two-line titles stay
  inside saved images even at the book's small figure sizes.
* :class:`Animator` draws on a figure that pyplot does not track, so a notebook shows it once (not
  a second time at the end of the cell) and long scripts do not accumulate open figures.
"""
from __future__ import annotations

import io
import itertools
import math
import numbers
import os
import sys
import time
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._checks import digits, positive_int, real
from ._io import atomic_write

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "use_svg_display",
    "set_figsize",
    "set_axes",
    "plot",
    "Animator",
    "show_images",
    "prediction_grid",
]

PathLike = Union[str, "os.PathLike[str]"]
DEFAULT_FMTS: Tuple[str, ...] = ("-", "m--", "g-.", "r:")
_INSTALL_HINT = 'pip install "fastshallow[plot]"'


# --------------------------------------------------------------------------------------------
# matplotlib / IPython plumbing
# --------------------------------------------------------------------------------------------

def _import_matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError(
            f"fastshallow's plotting functions need matplotlib, which is not installed; "
            f"install it with: {_INSTALL_HINT}") from exc
    return matplotlib


def _backend_chosen(mpl) -> bool:
    """True when the user (or Jupyter, via MPLBACKEND) already picked a backend, or pyplot
    already resolved one; False while matplotlib would still auto-select."""
    getter = getattr(mpl.rcParams, "_get_backend_or_none", None)
    if getter is not None:
        return getter() is not None
    sentinel = getattr(getattr(mpl, "rcsetup", None), "_auto_backend_sentinel", None)
    return dict.__getitem__(mpl.rcParams, "backend") is not sentinel


def _has_display() -> bool:
    if sys.platform.startswith(("win", "cygwin", "darwin")):
        return True  # these have a native GUI whenever a user session runs
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _pyplot():
    """matplotlib.pyplot, switched to Agg first when nothing chose a backend and no display
    exists (a backend someone chose is never overridden)."""
    mpl = _import_matplotlib()
    if not _backend_chosen(mpl) and not _in_notebook() and not _has_display():
        mpl.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _in_notebook() -> bool:
    """True only inside a running IPython kernel (Jupyter, Colab, VS Code notebooks).

    IPython is never imported here: a kernel has always imported it already, so its absence from
    ``sys.modules`` answers the question. A terminal IPython shell has no kernel and counts as
    "not a notebook"."""
    if sys.modules.get("IPython") is None:
        return False
    try:
        from IPython import get_ipython
        shell = get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def use_svg_display() -> None:
    """Ask Jupyter's inline backend to show figures as SVG (sharper than PNG).

    Outside a notebook, or without ``matplotlib-inline``, it does nothing (and never raises for
    lack of IPython). :class:`Animator` shows SVG in notebooks either way."""
    if not _in_notebook():
        return
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:
        return
    try:
        set_matplotlib_formats("svg")
    except Exception:  # an unusual frontend; plain PNG output still works
        pass


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------

# Past these a figure is not something to look at, and drawing it takes minutes and gigabytes
# (every subplot is a matplotlib Axes; a 100-inch side is 10,000 pixels at the default dpi).
MAX_SUBPLOTS = 1024
MAX_INCHES = 100.0
MAX_DPI = 1200.0
# show_images' default side of a cell (an image and its title), in inches
CELL_INCHES = 1.5


def _check_figsize(name: str, figsize) -> Tuple[float, float]:
    try:
        w, h = figsize
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a (width, height) pair in inches, "
                        f"got {figsize!r}") from None
    out = []
    for v in (w, h):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must hold two real numbers, got {figsize!r}")
        if not (math.isfinite(float(v)) and 0 < float(v) <= MAX_INCHES):
            raise ValueError(f"{name} must hold two numbers in (0, {MAX_INCHES:g}] (inches), "
                             f"got {figsize!r}")
        out.append(float(v))
    return out[0], out[1]


def _check_grid(rows_name: str, rows, cols_name: str, cols) -> Tuple[int, int]:
    rows, cols = positive_int(rows_name, rows), positive_int(cols_name, cols)
    if rows * cols > MAX_SUBPLOTS:
        raise ValueError(f"{rows_name} * {cols_name} must be at most {MAX_SUBPLOTS} subplots, "
                         f"got {rows} * {cols} = {rows * cols}")
    return rows, cols


def _check_legend(legend, n_lines: Optional[int] = None) -> Optional[List[str]]:
    if legend is None:
        return None
    if isinstance(legend, str):  # a bare string would otherwise label one line per character
        legend = [legend]
    try:
        labels = [str(s) for s in legend]
    except TypeError:
        raise TypeError(f"legend must be a sequence of strings, got {legend!r}") from None
    if n_lines is not None and labels and len(labels) != n_lines:
        raise ValueError(f"legend has {len(labels)} entries but there are {n_lines} lines")
    return labels


def _check_fmts(fmts) -> Tuple[str, ...]:
    if fmts is None:
        return ("-",)
    if isinstance(fmts, str):
        fmts = (fmts,)
    fmts = tuple(fmts)
    if not fmts or not all(isinstance(f, str) for f in fmts):
        raise TypeError(f"fmts must be a non-empty sequence of format strings, got {fmts!r}")
    return fmts


def _check_save_path(name: str, path) -> Tuple[str, str]:
    """(path as str, image format taken from the extension); the folder must exist."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    # The format registry, not fig.canvas: savefig switches canvases per format, so a figure on
    # e.g. the svg backend still writes PNG.
    _import_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase
    supported = FigureCanvasBase.get_supported_filetypes()
    if ext not in supported:
        raise ValueError(f"{name} must end in an image extension such as .png or .svg "
                         f"(supported: {', '.join(sorted(supported))}), got {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{name}: folder {folder!r} does not exist")
    return path, ext


def _save_figure(fig: "Figure", path, dpi=None) -> str:
    """Write `fig` to `path` atomically, so a reader never sees a half-written image."""
    path, fmt = _check_save_path("path", path)
    with atomic_write(path) as fh:
        fig.savefig(fh, format=fmt, dpi=dpi if dpi is not None else "figure")
    return path


def _as_series(name: str, a) -> List[np.ndarray]:
    """One or several 1-D numeric series from a 1-D array, a 2-D array (one series per row), a
    list of numbers, or a list of 1-D array-likes."""
    if isinstance(a, (str, bytes)):
        raise TypeError(f"{name} must be numeric data, got {type(a).__name__}")
    if hasattr(a, "ndim") and hasattr(a, "shape"):  # ndarray, torch/mxnet tensors, ...
        arr = np.asarray(a)
        if arr.ndim == 1:
            return [_numeric_1d(name, arr)]
        if arr.ndim == 2:
            return [_numeric_1d(f"{name}[{i}]", row) for i, row in enumerate(arr)]
        raise ValueError(f"{name} must be 1-D or 2-D (one series per row), got shape {arr.shape}")
    try:
        items = list(a)
    except TypeError:
        raise TypeError(f"{name} must be an array or a sequence, got {type(a).__name__}") from None
    if not items:
        raise ValueError(f"{name} must not be empty")
    if all(np.ndim(v) == 0 for v in items):
        return [_numeric_1d(name, items)]
    return [_numeric_1d(f"{name}[{i}]", v) for i, v in enumerate(items)]


def _numeric_1d(name: str, v) -> np.ndarray:
    try:
        arr = np.asarray(v)
    except Exception as exc:
        raise TypeError(f"{name} must be array-like, got {type(v).__name__} ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


# --------------------------------------------------------------------------------------------
# the textbook's helpers
# --------------------------------------------------------------------------------------------

def set_figsize(figsize: Sequence[float] = (3.5, 2.5)) -> None:
    """Make the next figure ``figsize`` inches: set matplotlib's default size and, when
    pyplot's current figure already has axes, start a new figure of that size, so that
    ``d2l.plt.scatter(...)`` after :func:`plot` (as the book does) draws a figure of its own
    rather than over the plot."""
    w, h = _check_figsize("figsize", figsize)
    _import_matplotlib().rcParams["figure.figsize"] = (w, h)
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:  # pyplot not imported yet: it has no current figure
        return
    _drop_blank_figure(plt)
    if plt.get_fignums() and plt.gcf().axes:
        plt.figure(figsize=(w, h))._fastshallow_blank = True


def _drop_blank_figure(plt) -> None:
    """Close pyplot's current figure if set_figsize started it and nothing has drawn on it:
    it would stay open, blank (a blank window at plt.show()), when the next drawing makes its
    own figure or set_figsize starts another."""
    if plt.get_fignums():
        fig = plt.gcf()
        if getattr(fig, "_fastshallow_blank", False) and not fig.axes:
            plt.close(fig)


def set_axes(axes: "Axes", xlabel: Optional[str], ylabel: Optional[str],
             xlim: Optional[Sequence[float]], ylim: Optional[Sequence[float]],
             xscale: str, yscale: str, legend: Optional[Sequence[str]]) -> None:
    """Configure one matplotlib Axes: labels, scales, limits, legend, and a grid.

    ``None`` leaves the corresponding property alone (limits stay automatic)."""
    _import_matplotlib()
    if xlabel is not None:
        axes.set_xlabel(xlabel)
    if ylabel is not None:
        axes.set_ylabel(ylabel)
    axes.set_xscale(xscale)
    axes.set_yscale(yscale)
    if xlim is not None:
        axes.set_xlim(xlim)
    if ylim is not None:
        axes.set_ylim(ylim)
    labels = _check_legend(legend)
    if labels:
        axes.legend(labels)
    axes.grid(True)


def plot(X, Y=None, xlabel: Optional[str] = None, ylabel: Optional[str] = None,
         legend: Optional[Sequence[str]] = None, xlim: Optional[Sequence[float]] = None,
         ylim: Optional[Sequence[float]] = None, xscale: str = "linear",
         yscale: str = "linear", fmts: Sequence[str] = DEFAULT_FMTS,
         figsize: Sequence[float] = (3.5, 2.5), axes: Optional["Axes"] = None,
         path: Optional[PathLike] = None) -> "Axes":
    """Plot one or several lines and return the Axes.

    ``X`` and ``Y`` may each be a 1-D array, a list of numbers, a 2-D array (one line per row) or
    a list of 1-D arrays. With ``Y=None`` each series in ``X`` is drawn against its index. A single
    x series is shared by every y series; otherwise there must be as many x series as y series.
    Line formats come from ``fmts`` in turn (cycling when there are more lines).

    Without ``axes`` a new figure of size ``figsize`` is created; given ``axes`` are cleared first.
    ``path`` additionally saves the whole figure there, atomically, in the format its extension
    names (any matplotlib writes, such as .png, .svg, .pdf or .jpg; others raise ValueError).
    """
    if Y is None:
        ys = _as_series("X", X)
        xs = [np.arange(len(y)) for y in ys]
    else:
        xs = _as_series("X", X)
        ys = _as_series("Y", Y)
        if len(xs) == 1:
            xs = xs * len(ys)
        elif len(xs) != len(ys):
            raise ValueError(f"X holds {len(xs)} series but Y holds {len(ys)}; give one x series "
                             f"for all lines or one per line")
    for i, (x, y) in enumerate(zip(xs, ys)):
        if len(x) != len(y):
            raise ValueError(f"line {i}: x has {len(x)} points but y has {len(y)}")
    labels = _check_legend(legend, len(ys))
    fmts = _check_fmts(fmts)
    if path is not None:
        _check_save_path("path", path)
    if axes is None:
        w, h = _check_figsize("figsize", figsize)
        plt = _pyplot()
        _drop_blank_figure(plt)
        # constrained layout keeps axis labels inside the saved image at small figure sizes
        _, axes = plt.subplots(figsize=(w, h), layout="constrained")
    else:
        _import_matplotlib()
    axes.cla()
    for x, y, fmt in zip(xs, ys, itertools.cycle(fmts)):
        line, = axes.plot(x, y, fmt)
        _mark_lone_point(line, line.get_marker())
    set_axes(axes, xlabel, ylabel, xlim, ylim, xscale, yscale, labels)
    if path is not None:
        _save_figure(axes.figure, path)
    return axes


class Animator:
    """A line plot that grows one point per line at a time, e.g. loss and accuracy per epoch.

    Where the figure goes after each :meth:`add`:

    * inside a running Jupyter kernel it is redrawn in place in the cell's output (as SVG);
    * when ``path`` is given (``.png``, ``.svg``, or another extension matplotlib can write),
      that file is rewritten atomically, so an image viewer or a browser tab can follow training;
    * otherwise nothing is shown; the data stays in :attr:`X` / :attr:`Y` and the figure in
      :attr:`fig`, and :meth:`save` writes it whenever wanted.

    Drawing takes a tenth of a second or more, longer than a fast epoch: with ``min_interval``
    seconds, a point added sooner than that after the last drawing (or the Animator's creation)
    is kept and drawn with the next one, or by :meth:`flush` (and :meth:`close`).

    Only the first of ``nrows * ncols`` subplots is drawn on; the others are left for the caller.
    Drawing updates its lines without clearing it, so what is set on it (tick locators, a
    title) stays.
    The number of lines is fixed by ``legend`` when given, else by the first :meth:`add`.
    """

    def __init__(self, xlabel: Optional[str] = None, ylabel: Optional[str] = None,
                 legend: Optional[Sequence[str]] = None,
                 xlim: Optional[Sequence[float]] = None,
                 ylim: Optional[Sequence[float]] = None, xscale: str = "linear",
                 yscale: str = "linear", fmts: Sequence[str] = DEFAULT_FMTS, nrows: int = 1,
                 ncols: int = 1, figsize: Sequence[float] = (3.5, 2.5),
                 path: Optional[PathLike] = None, min_interval: float = 0.0) -> None:
        nrows, ncols = _check_grid("nrows", nrows, "ncols", ncols)
        figsize = _check_figsize("figsize", figsize)
        self.min_interval: float = real("min_interval", min_interval, low=0.0)  # seconds
        self.legend: Optional[List[str]] = _check_legend(legend) or None
        self.fmts: Tuple[str, ...] = _check_fmts(fmts)
        self.path: Optional[str] = None
        if path is not None:
            self.path, _ = _check_save_path("path", path)
        _import_matplotlib()
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        # A Figure that pyplot does not track: no GUI window, no duplicate notebook output, no
        # "too many open figures" warning, and it renders the same with or without a display.
        self.fig: Figure = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(self.fig)
        grid = self.fig.subplots(nrows, ncols, squeeze=False)
        self.axes: List[Axes] = list(np.asarray(grid).flat)
        # Set once: drawing updates the lines and never clears the axes, so what a caller sets
        # on them (ticks, a title) stays.
        set_axes(self.axes[0], xlabel, ylabel, xlim, ylim, xscale, yscale, None)
        self._lines: List[Tuple[Any, str]] = []  # (Line2D, its format's marker) per series
        n = len(self.legend) if self.legend else None
        self.X: List[List[Any]] = [[] for _ in range(n)] if n else []
        self.Y: List[List[Any]] = [[] for _ in range(n)] if n else []
        self._n_lines: Optional[int] = n
        self._handle = None
        self._closed = False
        self._shown_at = time.monotonic()  # when the figure was last published (or made)
        self._pending = False  # points added since then

    @property
    def n_lines(self) -> Optional[int]:
        """How many lines the plot has (None until the first add when no legend was given)."""
        return self._n_lines

    def add(self, x, y) -> None:
        """Append one point to each line and redraw.

        ``y`` is a number (one line) or a sequence with one value per line; a ``None`` value
        leaves that line without a point this time. ``x`` is one number shared by every line, or
        a sequence with one x per line."""
        if self._closed:
            raise RuntimeError("this Animator was closed")
        ys = list(y) if _is_sequence(y) else [y]
        if not ys:
            raise ValueError("y must hold at least one value")
        if self._n_lines is None:
            self._n_lines = len(ys)
            self.X = [[] for _ in ys]
            self.Y = [[] for _ in ys]
        if len(ys) != self._n_lines:
            raise ValueError(f"y has {len(ys)} values but the plot has {self._n_lines} lines"
                             + (" (one per legend entry)" if self.legend else ""))
        if _is_sequence(x):
            xs = list(x)
            if len(xs) != len(ys):
                raise ValueError(f"x has {len(xs)} values but y has {len(ys)}")
        else:
            xs = [x] * len(ys)
        points = []  # check every value before touching the data, so a bad call changes nothing
        for i, (a, b) in enumerate(zip(xs, ys)):
            if a is None or b is None:
                continue
            for what, v in (("x", a), ("y", b)):
                if not _is_real_scalar(v):
                    raise TypeError(f"{what} values must be real numbers or None, "
                                    f"got {type(v).__name__} {v!r} for line {i}")
            points.append((i, _as_float("x", a, i), _as_float("y", b, i)))
        for i, a, b in points:
            self.X[i].append(a)
            self.Y[i].append(b)
        self._pending = True
        if time.monotonic() - self._shown_at >= self.min_interval:
            self.flush()

    def flush(self) -> None:
        """Draw and publish the points added since the figure was last published, if any."""
        if self._pending and not self._closed:
            self._draw()
            self._publish()
            self._pending = False
            self._shown_at = time.monotonic()

    def _draw(self) -> None:
        ax = self.axes[0]
        while len(self._lines) < len(self.X):
            line, = ax.plot([], [], self.fmts[len(self._lines) % len(self.fmts)])
            self._lines.append((line, line.get_marker()))
        names = self.legend or [None] * len(self.X)
        listed = []
        for (line, marker), xs, ys, name in zip(self._lines, self.X, self.Y, names):
            line.set_data(xs, ys)
            if _mark_lone_point(line, marker) and name is not None:
                listed.append((line, name))
        ax.relim()
        ax.autoscale_view()
        # Only series with something to see are listed (a regression run has no accuracies);
        # the others join as their data arrives.
        if listed:
            ax.legend(*zip(*listed))
        elif ax.get_legend() is not None:
            ax.get_legend().remove()

    def _publish(self) -> None:
        if self.path is not None:
            _save_figure(self.fig, self.path)
        if _in_notebook():
            self._show_in_notebook()

    def _show_in_notebook(self) -> None:
        from IPython import display as ipd

        buf = io.BytesIO()
        self.fig.savefig(buf, format="svg")
        bundle = {"image/svg+xml": buf.getvalue().decode("utf-8")}
        if self._handle is None:  # first picture: create the output area
            handle = ipd.display(bundle, raw=True, display_id=True)
            self._handle = handle if handle is not None else False
        elif self._handle is False:  # very old IPython without display handles
            ipd.clear_output(wait=True)
            ipd.display(bundle, raw=True)
        else:
            self._handle.update(bundle, raw=True)

    def save(self, path: PathLike, dpi: Optional[float] = None) -> str:
        """Write the current figure, with every point added so far, to ``path`` (format from the
        extension), atomically, at ``dpi`` dots per inch (default: the figure's own).  Returns
        the path written.  Raises RuntimeError once the
        Animator is closed: close() released the figure, whose image would be blank."""
        if self._closed:
            raise RuntimeError("this Animator was closed, which released its figure: save() "
                               "before close()")
        if dpi is not None:  # beyond print resolutions, a figure of inches is gigapixels
            dpi = real("dpi", dpi, low=0.0, low_open=True, high=MAX_DPI)
        if self._pending:
            self._draw()
        return _save_figure(self.fig, path, dpi=dpi)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: :meth:`add` and :meth:`save` then raise."""
        return self._closed

    def close(self) -> None:
        """Publish any points not shown yet, then release the figure. Further :meth:`add` and
        :meth:`save` calls raise; closing twice is harmless."""
        if not self._closed:
            try:
                self.flush()
            finally:
                self._closed = True
                self.fig.clear()

    def __enter__(self) -> "Animator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        points = sum(len(x) for x in self.X)
        return (f"Animator(lines={self._n_lines}, points={points}, path={self.path!r}"
                f"{', closed' if self._closed else ''})")


def _mark_lone_point(line, marker: str) -> int:
    """Give `line` a dot when it has a single finite point, which a marker-less format such as
    '-' does not draw at all (a one-epoch training curve came out empty), and `marker` (its
    format's own) otherwise.  Returns the number of finite points."""
    x = np.asarray(line.get_xdata(), float)
    y = np.asarray(line.get_ydata(), float)
    n = int(np.count_nonzero(np.isfinite(x) & np.isfinite(y)))
    line.set_marker("o" if n == 1 and marker == "None" else marker)
    return n


def _epoch_animator(num_epochs: int, **kwargs) -> Animator:
    """The Animator of training's per-epoch loss and accuracies (``kwargs`` go to it)."""
    # One epoch gets a range around it: [1, 1] is singular (matplotlib warns) and on [1, 2]
    # its only points sit on the edge, half cut off.
    xlim = [1, num_epochs] if num_epochs > 1 else [0.5, 1.5]
    animator = Animator(xlabel="epoch", xlim=xlim,
                        legend=["train loss", "train acc", "test acc"], **kwargs)
    from matplotlib.ticker import MaxNLocator  # importable: the Animator needed matplotlib

    # whole epochs only (no 1.5), as densely as matplotlib's default ticks
    animator.axes[0].xaxis.set_major_locator(
        MaxNLocator(nbins="auto", integer=True, min_n_ticks=1))
    return animator


def _is_real_scalar(v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, numbers.Real):
        return True
    return isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iuf"


def _as_float(what: str, v, line: int) -> float:
    try:
        return float(v)
    except OverflowError:  # an int (or Fraction) past the float range: no point to draw
        raise ValueError(f"{what} values must fit a float (at most about 1.8e308), got a number "
                         f"of about {digits(v)} digits for line {line}") from None


def _is_sequence(v) -> bool:
    if isinstance(v, (str, bytes)):
        return False
    if isinstance(v, np.ndarray):
        return v.ndim > 0
    return hasattr(v, "__len__") and hasattr(v, "__iter__")


# --------------------------------------------------------------------------------------------
# image grids
# --------------------------------------------------------------------------------------------

def _as_images(imgs) -> np.ndarray:
    """(N, H, W) grayscale images from (N, H, W), (N, 1, H, W) or (N, H, W, 1)."""
    try:
        arr = np.asarray(imgs)
    except Exception as exc:
        raise TypeError(f"imgs must be array-like, got {type(imgs).__name__} ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"imgs must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim == 4:
        if arr.shape[1] == 1:
            arr = arr[:, 0]
        elif arr.shape[3] == 1:
            arr = arr[..., 0]
        else:
            raise ValueError(f"imgs must be grayscale: (N, H, W), (N, 1, H, W) or (N, H, W, 1), "
                             f"got shape {arr.shape}")
    elif arr.ndim != 3:
        hint = " (for one image pass img[None])" if arr.ndim == 2 else ""
        raise ValueError(f"imgs must be (N, H, W), (N, 1, H, W) or (N, H, W, 1), "
                         f"got shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise ValueError("imgs must hold at least one image")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"images must have a positive height and width, got shape {arr.shape}")
    return arr


def _color_range(img: np.ndarray) -> Tuple[Optional[float], Optional[float]]:
    if img.dtype == np.uint8:
        return 0.0, 255.0
    if img.dtype.kind == "b":
        return 0.0, 1.0
    finite = img[np.isfinite(img)] if img.dtype.kind == "f" else img
    if finite.size and finite.min() >= 0 and finite.max() <= 1:
        return 0.0, 1.0  # pixel intensities already scaled to [0, 1]
    return None, None  # anything else: stretch each image over the gray ramp


def show_images(imgs, num_rows: int, num_cols: int, titles: Optional[Sequence[Any]] = None,
                scale: float = CELL_INCHES, path: Optional[PathLike] = None) -> np.ndarray:
    """Draw grayscale images in a ``num_rows`` x ``num_cols`` grid and return the flat array of
    its ``num_rows * num_cols`` Axes.

    ``imgs`` is (N, H, W), (N, 1, H, W) or (N, H, W, 1), float or uint8. uint8 maps 0..255 and
    floats within [0, 1] map 0..1 onto black..white; other floats are stretched per image. Images
    beyond the grid's cells are ignored; cells beyond the images are left blank. ``titles`` gives
    one title per image (or per cell shown). Each cell is ``scale`` inches square. ``path``
    additionally saves the figure there, atomically, in the format its extension names (any
    matplotlib writes, such as .png, .svg, .pdf or .jpg; others raise ValueError).
    """
    num_rows, num_cols = _check_grid("num_rows", num_rows, "num_cols", num_cols)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a real number, got {scale!r}")
    if not (math.isfinite(float(scale)) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if max(num_rows, num_cols) * float(scale) > MAX_INCHES:
        raise ValueError(f"the figure would be {num_cols * float(scale):g} x "
                         f"{num_rows * float(scale):g} inches (num_cols and num_rows times "
                         f"scale); at most {MAX_INCHES:g} on a side")
    images = _as_images(imgs)
    shown = min(len(images), num_rows * num_cols)
    title_list: Optional[List[str]] = None
    if titles is not None:
        if isinstance(titles, str):
            raise TypeError("titles must be a sequence of strings (one per image), not a string")
        try:
            title_list = [str(t) for t in titles]
        except TypeError:
            raise TypeError(f"titles must be a sequence, got {type(titles).__name__}") from None
        if len(title_list) not in (len(images), shown):
            raise ValueError(f"titles has {len(title_list)} entries but there are "
                             f"{len(images)} images ({shown} shown)")
    if path is not None:
        _check_save_path("path", path)
    plt = _pyplot()
    _drop_blank_figure(plt)
    figsize = (num_cols * float(scale), num_rows * float(scale))
    _, axes = plt.subplots(num_rows, num_cols, figsize=figsize, squeeze=False,
                           layout="constrained")  # room for (two-line) titles
    axes = axes.flatten()
    for i, ax in enumerate(axes):
        if i >= shown:
            ax.set_axis_off()
            continue
        img = images[i]
        vmin, vmax = _color_range(img)
        ax.imshow(img, cmap="gray", vmin=vmin, vmax=vmax)
        ax.get_xaxis().set_visible(False)
        ax.get_yaxis().set_visible(False)
        if title_list is not None:
            ax.set_title(title_list[i])
    if path is not None:
        _save_figure(axes[0].figure, path)
    return axes


def check_prediction_count(n) -> int:
    """`n` for prediction_grid: a positive int that fits one row of show_images' cells."""
    n = positive_int("n", n)
    most = int(MAX_INCHES // CELL_INCHES)
    if n > most:
        raise ValueError(f"n must be at most {most} (one row of {CELL_INCHES:g}-inch images, at "
                         f"most {MAX_INCHES:g} inches wide), got {n}")
    return n


def prediction_grid(images, true_labels: Sequence[Any], pred_labels: Sequence[Any], n: int = 6,
                    path: Optional[PathLike] = None) -> np.ndarray:
    """Show the first ``n`` images in one row, each titled with its true label over the
    predicted one (``"true\\npred"``), in red where they differ, and return the Axes (see
    :func:`show_images`).

    Labels are shown as given (pass text names, e.g. Fashion-MNIST class names), one of each
    per image. ``images`` may also be flat (N, D) rows when D is a perfect square; they are
    reshaped to sqrt(D) x sqrt(D). ``path`` additionally saves the figure there, as in
    :func:`show_images`.
    """
    n = check_prediction_count(n)
    arr = np.asarray(images)
    if arr.ndim == 2:
        side = math.isqrt(arr.shape[1])
        if side == 0 or side * side != arr.shape[1]:
            raise ValueError(f"images given as flat rows must have a square number of pixels "
                             f"per row, got shape {arr.shape}")
        arr = arr.reshape(arr.shape[0], side, side)
    arr = _as_images(arr)
    trues = _label_texts("true_labels", true_labels)
    preds = _label_texts("pred_labels", pred_labels)
    for name, labels in (("true_labels", trues), ("pred_labels", preds)):
        if len(labels) != len(arr):
            raise ValueError(f"{name} has {len(labels)} entries but there are {len(arr)} images")
    if path is not None:
        _check_save_path("path", path)
    k = min(n, len(arr))
    titles = [f"{t}\n{p}" for t, p in zip(trues[:k], preds[:k])]
    axes = show_images(arr[:k], 1, k, titles=titles)
    for ax, t, p in zip(axes, trues, preds):
        if t != p:  # otherwise a mistake hides among right answers in the same black text
            ax.title.set_color("red")
    if path is not None:
        _save_figure(axes[0].figure, path)
    return axes


def _label_texts(name: str, labels) -> List[str]:
    if isinstance(labels, str):
        raise TypeError(f"{name} must be a sequence of labels, not a string")
    try:
        return [str(v) for v in labels]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of labels, "
                        f"got {type(labels).__name__}") from None
