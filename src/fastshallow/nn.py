"""Layers: ``Dense``, ``Flatten`` and ``Sequential``, with saving and loading (sections 3.3, 3.7).

``Dense(units)`` computes ``X @ W + b`` with W of shape (in_units, units) -- the layout the
kernels read -- initialized N(0, 0.01^2) with a zero bias unless told otherwise.  The input size is
inferred on the first call (inputs of more than two dimensions are flattened, as for images).
Calling a layer returns a :class:`~fastshallow.autograd.Tensor` whose ``backward`` fills
``weight.grad`` and ``bias.grad``.
"""
from __future__ import annotations

import itertools
import json
import math
import os
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Tuple, Union

import numpy as np

from . import _checks as C
from . import _config
from . import init as _init
from ._config import get_num_threads, resolve_threads
from ._ext import kernels as _k
from ._io import atomic_write
from .autograd import Parameter, Tensor, _tensor
from .kernels import matmul_bias, matmul_bias_backward
from .random import default_rng

if TYPE_CHECKING:  # pragma: no cover - for type checkers only
    from numpy.typing import ArrayLike, DTypeLike

    # An initializer: fastshallow.init's, or a callable of the user's taking the same
    # (shape, dtype, generator) and returning values of that shape.
    InitializerLike = Callable[[Tuple[int, ...], np.dtype, np.random.Generator], ArrayLike]

__all__ = ["Block", "Dense", "Flatten", "Sequential", "load"]

_FORMAT = "fastshallow-model-1"


class Block:
    """Base of layers and containers."""

    def parameters(self) -> List[Parameter]:
        """The trainable parameters, in a fixed order."""
        return []

    def collect_params(self) -> List[Parameter]:
        """Gluon's name for :meth:`parameters`."""
        return self.parameters()

    def initialize(self, init: Optional[_init.Initializer] = None, force_reinit: bool = False,
                   rng: Union[None, int, np.random.Generator] = None) -> "Block":
        """Set the weight initializer of every layer and return this block.

        init: the weight initializer for this and later draws (e.g. ``init.Normal(0.01)``;
        None keeps each layer's own).  Layers whose input size is known draw their weights
        again now when `init` is given or `force_reinit` is true; the others draw them at
        their first call.  Biases keep their own initializer (zeros).  rng: the generator (or
        an int seed for a new one) of this and later draws; None keeps each layer's own (by
        default the library's stream, see :func:`fastshallow.random.seed`)."""
        return self

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero.  Rarely needed: ``backward()`` overwrites
        the gradients (as Gluon does) rather than adding to them."""
        for p in self.parameters():
            p.zero_grad()

    def __call__(self, X):
        """``forward(X)``: the block's output for the minibatch X."""
        return self.forward(X)

    def forward(self, X):  # pragma: no cover - abstract
        """The block's output for the minibatch X (first axis: examples); when it depends on
        parameters, a :class:`~fastshallow.autograd.Tensor` whose ``backward()`` fills their
        ``.grad``."""
        raise NotImplementedError

    # -- saving ----------------------------------------------------------------------------
    def _config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, path) -> None:
        """Write the architecture and parameters to an ``.npz`` file (no pickle), atomically:
        an interrupted save leaves any previous file intact."""
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        arrays = {f"p{i}": p.data for i, p in enumerate(self.parameters())}
        # load refuses such a file (a model that diverged is no model), so it is not written
        for name, a in arrays.items():
            if not np.isfinite(a).all():
                raise ValueError(f"parameter {name[1:]} (shape {a.shape}) holds NaN or inf: "
                                 "training diverged; nothing was saved")
        meta = json.dumps({"format": _FORMAT, "model": self._config()})
        arrays["__meta__"] = np.frombuffer(meta.encode(), dtype=np.uint8)
        with atomic_write(path) as f:
            np.savez(f, **arrays)

    save_parameters = save

    def load_parameters(self, path) -> "Block":
        """Load parameters saved by :meth:`save` into this network (same architecture)."""
        other = load(path)
        if not _compatible(self, other):
            raise ValueError(f"{os.fsdecode(path)} holds a different architecture: "
                             f"{other._config()} (this network: {self._config()})")
        # Every layer is checked before any takes the file's values: a refusal halfway would
        # leave a network that is neither the old one nor the file's.  Deferred layers draw
        # their initial weights while the plan is made, so a refusal also puts back the random
        # streams they drew from.
        streams = [(g, g.bit_generator.state) for g in _random_streams(self)]
        try:
            plan = self._plan_adopt(other, os.fsdecode(path), None)
        except BaseException:
            for g, state in streams:
                g.bit_generator.state = state
            raise
        for apply in plan:
            apply()
        return self

    def _plan_adopt(self, other: "Block", path: str, where: Optional[str]) -> list:
        """Check that `other`'s parameters fit this block (`where`: its index path in the
        network, None at the top) and return the calls that copy them in."""
        raise NotImplementedError  # pragma: no cover - abstract


def _random_streams(block: Block) -> list:
    """The generators the layers of `block` draw initial weights from (each once)."""
    gens = {id(default_rng()): default_rng()}
    for b in _within([block]):
        g = getattr(b, "_rng", None)
        if g is not None:
            gens[id(g)] = g
    return list(gens.values())


def _within(blocks: list):
    """`blocks` and every block they contain, each as often as it occurs.  A loop, not
    recursion: no depth limit; and a Sequential's blocks are taken only after it was yielded,
    so a caller that stops at a repeat never follows a cycle."""
    todo = list(blocks)
    while todo:
        blk = todo.pop()
        yield blk
        if isinstance(blk, Sequential):
            todo.extend(blk._blocks)


def _compatible(a: Block, b: Block) -> bool:
    """Same architecture up to input sizes not yet known on `a`."""
    ca, cb = a._config(), b._config()
    return json.dumps(_strip_in(ca)) == json.dumps(_strip_in(cb))


def _strip_in(cfg):
    if isinstance(cfg, dict):
        return {k: _strip_in(v) for k, v in cfg.items() if k != "in_units"}
    if isinstance(cfg, list):
        return [_strip_in(v) for v in cfg]
    return cfg


def _rows(X: np.ndarray) -> np.ndarray:
    """(batch, ...) as (batch, features).  The width is computed, not left to reshape's -1,
    which cannot be inferred from an empty batch."""
    return X.reshape(X.shape[0], math.prod(X.shape[1:]))


def _initial(name: str, fn, shape: tuple, dtype: np.dtype, rng) -> np.ndarray:
    """`fn`'s values for a new parameter of `shape`, checked: an initializer may be the user's
    own, and a parameter keeps the shape it is first given, so a wrong one would make every
    later call fail."""
    values = fn(shape, dtype, rng)
    with np.errstate(over="ignore"):  # a value the dtype cannot hold is refused just below
        arr = C.as_array(f"the {name}'s result", values, dtype=dtype, finite=True)
    if arr.shape != shape:
        raise ValueError(f"{name} must return an array of the shape it is given, {shape}, got "
                         f"shape {arr.shape}")
    return arr


def _refuse_backward(layer: "Dense", X: np.ndarray, shape: tuple, W: Parameter,
                     b: Optional[Parameter]) -> None:
    """Raise for what keeps a Dense layer's backward from writing its gradient: the input or a
    gradient buffer changed in place since the forward pass (Y's `shape`)."""
    n, m = shape
    if X.shape != (n, W.data.shape[0]) or X.dtype != layer.dtype or not (
            X.flags.c_contiguous and X.flags.aligned):
        raise ValueError(f"the input this layer's output was computed from has changed in "
                         f"place since (now {X.dtype} of shape {X.shape}, not {layer.dtype} "
                         f"({n}, {W.data.shape[0]}) C-contiguous rows): backward cannot use it")
    C.gradient_buffer(W.name, W._grad, (X.shape[1], m), X.dtype)
    if b is None:
        raise ValueError(f"the gradient buffer of {W.name!r} shares memory with the input: "
                         f"backward would overwrite what it reads")
    C.gradient_buffer(b.name, b._grad, (m,), X.dtype)
    raise ValueError(f"the gradient buffers of {W.name!r} and {b.name!r} share memory with each "
                     f"other or with the input: backward would overwrite what it reads")


class Dense(Block):
    """A fully connected layer ``Y = X @ W + b``.

    units: outputs.  in_units: inputs (None: inferred on the first call).  use_bias: whether
    the layer has the bias b (without it ``Y = X @ W``, and training runs the per-batch loop:
    the fused kernels need a bias).  dtype: parameter dtype (float32 or float64); inputs are
    converted to it.  flatten: reshape inputs of more than two dimensions to (batch, -1).
    weight_initializer / bias_initializer default to ``init.Normal(0.01)`` and ``init.Zeros()``
    (any callable taking shape, dtype and a numpy Generator and returning values of that
    shape will do).  rng: generator for the initial weights, or an int seed for a new one
    (default: the library's stream, see :func:`fastshallow.random.seed`)."""

    def __init__(self, units: int, in_units: Optional[int] = None, use_bias: bool = True,
                 flatten: bool = True, dtype: DTypeLike = np.float32,
                 weight_initializer: Optional[InitializerLike] = None,
                 bias_initializer: Optional[InitializerLike] = None,
                 rng: Union[None, int, np.random.Generator] = None):
        self._units = C.positive_int("units", units)
        self._in_units = None if in_units is None else C.positive_int("in_units", in_units)
        self.use_bias = bool(use_bias)
        self.flatten = bool(flatten)
        self._dtype = C.float_dtype("dtype", dtype)
        for name, fn in (("weight_initializer", weight_initializer),
                         ("bias_initializer", bias_initializer)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a fastshallow.init initializer (a callable "
                                f"taking shape, dtype and rng), got {type(fn).__name__} {fn!r:.60}")
        self.weight_initializer = weight_initializer or _init.Normal(0.01)
        self.bias_initializer = bias_initializer or _init.Zeros()
        self._rng = None if rng is None else C.seed_or_rng("rng", rng)
        self.weight = Parameter(name="weight", dtype=self.dtype)
        self.bias = Parameter(name="bias", dtype=self.dtype) if self.use_bias else None
        if self.in_units is not None:
            self._create(self.in_units)

    # Read-only: the parameters' shapes and dtype follow these, and the compiled training path
    # sizes its buffers from them, so they may not drift apart.
    @property
    def units(self) -> int:
        """The number of outputs."""
        return self._units

    @property
    def in_units(self) -> Optional[int]:
        """The number of inputs (None until the first call when it was not given)."""
        return self._in_units

    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype."""
        return self._dtype

    def _draw(self, in_units: int, weight_init, rng) -> tuple:
        """Initial (weight, bias) for `in_units` inputs, checked before the layer takes them."""
        rng = rng or default_rng()
        W = _initial("weight_initializer", weight_init, (in_units, self.units), self.dtype, rng)
        b = None if self.bias is None else _initial("bias_initializer", self.bias_initializer,
                                                    (self.units,), self.dtype, rng)
        return W, b

    def _set(self, in_units: int, W: np.ndarray, b: Optional[np.ndarray]) -> None:
        self._in_units = in_units
        self.weight.initialize(W)
        if b is not None:
            self.bias.initialize(b)

    def _create(self, in_units: int) -> None:
        # Drawn first, set after: a failing initializer leaves a deferred layer deferred.
        self._set(in_units, *self._draw(in_units, self.weight_initializer, self._rng))

    def initialize(self, init: Optional[_init.Initializer] = None, force_reinit: bool = False,
                   rng: Union[None, int, np.random.Generator] = None) -> "Dense":
        if init is not None and not isinstance(init, _init.Initializer):
            raise TypeError(f"init must be a fastshallow.init initializer, got {init!r}")
        rng = self._rng if rng is None else C.seed_or_rng("rng", rng)
        weight_init = self.weight_initializer if init is None else init
        if self.in_units is not None and (force_reinit or init is not None):
            self._set(self.in_units, *self._draw(self.in_units, weight_init, rng))
        self.weight_initializer, self._rng = weight_init, rng
        return self

    @property
    def initialized(self) -> bool:
        """Whether the weights exist (False until the input size is known)."""
        return self.weight.initialized

    def parameters(self) -> List[Parameter]:
        """[weight, bias] (or [weight]); deferred until the input size is known."""
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def _prepare(self, X) -> np.ndarray:
        X = C.as_array("X", X, dtype=self.dtype if not isinstance(X, np.ndarray)
                       or X.dtype != self.dtype else None)
        if X.ndim < 1:
            raise ValueError(f"X must have a batch dimension, got shape {X.shape}")
        if X.ndim == 1:
            X = X.reshape(-1, 1) if self.in_units in (None, 1) else X.reshape(1, -1)
        elif X.ndim > 2:
            if not self.flatten:
                raise ValueError(f"X must be 2-D for a Dense layer with flatten=False, "
                                 f"got shape {X.shape}")
            X = _rows(X)
        if self.in_units is None:
            self._create(C.positive_int("the number of input features", X.shape[1]))
        elif X.shape[1] != self.in_units:
            raise ValueError(f"X must have {self.in_units} features per example (this layer's "
                             f"in_units), got shape {X.shape}")
        return X

    def forward(self, X) -> Tensor:
        """``X @ W + b`` for a minibatch X of shape (batch, in_units), or (batch, ...) flattened
        when `flatten`; a 1-D X is one feature per example when in_units is 1 or not known yet,
        else a single example.  The first call fixes in_units when it was not given.  Returns a
        :class:`~fastshallow.autograd.Tensor` whose ``backward()`` fills ``weight.grad`` and
        ``bias.grad`` and, when X is itself such a Tensor, sends the gradient on to X's
        producer."""
        src = X
        W = self.weight
        b = self.bias
        Y = None
        if W._data is not None:
            # Rows already of this layer's dtype and width are recognized in compiled code,
            # without the Python-level preparation (it costs as much as a small batch's product).
            Y = _k().matmul_bias_if_plain(X, W._data, None if b is None else b._data, None,
                                          get_num_threads(), _config.DEFAULT_SERIAL_WORK)
        if Y is None:
            X = self._prepare(X)
            Y = matmul_bias(X, W.data, None if b is None else b.data)
        upstream = src.grad_fn if isinstance(src, Tensor) else None
        # As they are now: the caller holds X and Y, and could reshape them in place.
        shape, k = Y.shape, X.shape[1]

        def backward(G: Optional[np.ndarray]) -> None:
            G = np.ones(shape, self.dtype) if G is None else \
                np.ascontiguousarray(G.reshape(shape), dtype=self.dtype)
            if G.size and k:
                # X was C-contiguous rows of the layer's dtype and width (made so by _prepare or
                # recognized by matmul_bias_if_plain), G has Y's shape and dtype, and the outputs
                # are the parameters' own gradient buffers: the compiled backward writes them
                # directly, without the wrapper's copies, which cost more than a small
                # minibatch's gradient does.  It checks them first in a few compiled tests: the
                # caller holds X and the buffers and may have changed them in place since.
                gb = None if b is None else b._grad
                if not _k().matmul_bias_backward_into_if_plain(
                        X, G, W._grad, gb, resolve_threads(None, G.size * k)):
                    _refuse_backward(self, X, shape, W, b)
            else:
                dW, db = matmul_bias_backward(X, G)
                W.grad[...] = dW
                if b is not None:
                    b.grad[...] = db
            if upstream is not None:
                upstream((G @ W.data.T).reshape(np.shape(src)))

        return _tensor(Y, backward)

    def _config(self) -> dict:
        return {"type": "Dense", "units": self.units, "in_units": self.in_units,
                "use_bias": self.use_bias, "flatten": self.flatten, "dtype": self.dtype.name}

    def _plan_adopt(self, other: "Dense", path: str, where: Optional[str]) -> list:
        if self.in_units is not None and self.in_units != other.in_units:
            layer = "this layer" if where is None else f"layer {where}"
            raise ValueError(f"{path} does not fit {layer}, {self!r}: the file's has "
                             f"{other.in_units} inputs; nothing was loaded")
        # A deferred layer is created (then overwritten) as it always was, drawing from the
        # random stream that later layers draw from too -- but drawn now, so that a failing
        # initializer also stops the load before anything changed.
        drawn = None if self.in_units is not None else \
            self._draw(other.in_units, self.weight_initializer, self._rng)

        def apply():
            if drawn is not None:
                self._set(other.in_units, *drawn)
            for mine, theirs in zip(self.parameters(), other.parameters()):
                mine.set_data(theirs.data)

        return [apply]

    def __repr__(self) -> str:
        return (f"Dense({self.in_units if self.in_units is not None else '?'} -> {self.units}, "
                f"{self.dtype.name})")


class Flatten(Block):
    """Reshape (batch, ...) to (batch, -1)."""

    def forward(self, X):
        """X of shape (batch, ...) as (batch, features); a Tensor passing the gradient back
        when X is one, else a plain array."""
        arr = np.asarray(X)
        if arr.ndim < 1:
            raise ValueError(f"X must have a batch dimension, got shape {arr.shape}")
        out = _rows(arr)
        upstream = X.grad_fn if isinstance(X, Tensor) else None
        if upstream is None:
            return out
        # `upstream` may be a grad_fn of the user's, which takes arrays only.
        return _tensor(out, lambda G: upstream(
            np.ones(arr.shape, arr.dtype) if G is None else G.reshape(arr.shape)))

    def _config(self):
        return {"type": "Flatten"}

    def _plan_adopt(self, other, path, where):
        return []

    def __repr__(self):
        return "Flatten()"


# Changes whenever any Sequential gains blocks, so that a network re-checks its blocks only
# then, not on every call.
_generations = itertools.count()
_generation = next(_generations)


def _refuse_repeats(blocks: list, verb: str) -> None:
    """Raise if a block occurs twice among `blocks` and the blocks they contain."""
    seen = set()
    for blk in _within(blocks):  # a cycle is a repeat too
        if id(blk) in seen:
            raise ValueError(f"{blk!r} {verb} twice in this network: use a separate block for "
                             "each place (a layer used twice would get only its last use's "
                             "gradient and be updated twice)")
        seen.add(id(blk))


class Sequential(Block):
    """Blocks applied in order.  ``add(*blocks)`` appends; ``net[i]`` is the i-th block.  A
    block may appear once per network (separate networks may share it)."""

    # The value of _generation when this network's blocks were last found distinct.
    _verified = -1

    def __init__(self, *blocks: Block):
        self._blocks: List[Block] = []
        self.add(*blocks)

    def add(self, *blocks: Block) -> "Sequential":
        """Append `blocks` in order and return this network.  A block already in this network
        (or containing it) is refused with ValueError: a layer used twice would get only its
        last use's gradient and be updated twice."""
        # A block may appear once per network.  Layers overwrite their gradients (as in Gluon),
        # so a layer used twice would get its last use's gradient instead of the sum, and
        # parameters() would list it twice, for SGD to update twice.  Refusing is simpler
        # than accumulating gradients for a use the book never makes.
        for blk in blocks:
            if not isinstance(blk, Block):
                raise TypeError(f"Sequential holds fastshallow blocks, got {type(blk).__name__}")
        _refuse_repeats([self, *blocks], "would appear")
        self._blocks.extend(blocks)
        global _generation
        _generation = next(_generations)
        return self

    def _check_distinct(self) -> None:
        """Called when _verified is stale: a block contained here may have been added to
        another part of this network since it was built (net[0].add(net[1]))."""
        seen = _generation  # an add during the walk leaves this stale, to check again
        _refuse_repeats([self], "appears")
        self._verified = seen

    def __getitem__(self, i) -> Block:
        return self._blocks[i]

    def __len__(self) -> int:
        return len(self._blocks)

    def __iter__(self) -> Iterator[Block]:
        return iter(self._blocks)

    def parameters(self) -> List[Parameter]:
        if self._verified != _generation:
            self._check_distinct()
        return [p for blk in self._blocks for p in blk.parameters()]

    def initialize(self, init: Optional[_init.Initializer] = None, force_reinit: bool = False,
                   rng: Union[None, int, np.random.Generator] = None) -> "Sequential":
        for blk in self._blocks:
            blk.initialize(init, force_reinit, rng)
        return self

    def forward(self, X):
        """X through every block in order (RuntimeError when there is none)."""
        if not self._blocks:
            raise RuntimeError("this Sequential is empty: add layers with net.add(...)")
        if self._verified != _generation:
            self._check_distinct()
        for blk in self._blocks:
            X = blk(X)
        return X

    def _config(self):
        return {"type": "Sequential", "blocks": [b._config() for b in self._blocks]}

    def _plan_adopt(self, other, path, where):
        return [apply for i, (mine, theirs) in enumerate(zip(self._blocks, other._blocks))
                for apply in mine._plan_adopt(theirs, path,
                                              str(i) if where is None else f"{where}.{i}")]

    def __repr__(self):
        inner = ", ".join(repr(b) for b in self._blocks)
        return f"Sequential({inner})"


# A model description nested deeper than this is not one this library wrote.
_MAX_DEPTH = 64


def _build(cfg: dict, dense: list, depth: int = 0) -> Block:
    """The network `cfg` describes, with every Dense layer still deferred (nothing of the sizes
    the file claims is allocated yet); each Dense layer and its saved in_units go to `dense`, in
    parameter order."""
    if not isinstance(cfg, dict):
        raise ValueError(f"a block description must be an object, got {cfg!r:.60}")
    if depth > _MAX_DEPTH:
        raise ValueError(f"blocks nested more than {_MAX_DEPTH} deep")
    kind = cfg.get("type")
    if kind == "Dense":
        sizes = {k: cfg[k] for k in ("units", "in_units")}
        for k, v in sizes.items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"a saved Dense layer needs a positive int {k}, got {v!r:.60}")
        layer = Dense(sizes["units"], use_bias=bool(cfg["use_bias"]),
                      flatten=bool(cfg["flatten"]), dtype=cfg["dtype"])
        dense.append((layer, sizes["in_units"]))
        return layer
    if kind == "Flatten":
        return Flatten()
    if kind == "Sequential":
        blocks = cfg["blocks"]
        if not isinstance(blocks, list):
            raise ValueError(f"a Sequential's blocks must be a list, got {blocks!r:.60}")
        return Sequential(*[_build(c, dense, depth + 1) for c in blocks])
    raise ValueError(f"unknown block type {kind!r:.60}")


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def load(path) -> Block:
    """A network saved with ``net.save(path)``.  The file is read without pickle; a truncated
    or altered file gives a ValueError naming it.  The sizes the file's description claims are
    checked against the arrays it holds before any parameter is allocated."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fsdecode(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
        if magic not in _ZIP_MAGIC:
            raise ValueError(f"it does not start like an .npz (zip) archive ({magic!r})")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable fastshallow model file ({exc})") from None
    try:
        meta = json.loads(bytes(arrays.pop("__meta__")).decode())
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
        if meta.get("format") != _FORMAT:
            raise ValueError(f"unknown format {meta.get('format')!r:.60}")
        dense: list = []
        net = _build(meta["model"], dense)
        expected = []
        for layer, in_units in dense:
            expected.append((layer, in_units, layer.weight, (in_units, layer.units)))
            if layer.bias is not None:
                expected.append((layer, in_units, layer.bias, (layer.units,)))
        if len(expected) != len(arrays):
            raise ValueError(f"expected {len(expected)} parameter arrays, found {len(arrays)}")
        for i, (_, _, p, shape) in enumerate(expected):
            a = arrays[f"p{i}"]
            if a.shape != shape or a.dtype != p.dtype:
                raise ValueError(f"parameter {i} has shape {a.shape} and dtype {a.dtype}, "
                                 f"expected {shape} and {p.dtype}")
            if not np.isfinite(a).all():
                raise ValueError(f"parameter {i} holds NaN or inf")
        for i, (layer, in_units, p, _) in enumerate(expected):
            layer._in_units = in_units
            p.initialize(arrays[f"p{i}"])
    except (KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError,
            RecursionError) as exc:
        raise ValueError(f"{path} is not a valid fastshallow model file: {exc}") from None
    return net
