"""Files the library reads and writes, damaged on purpose (issue 6).

Reading: every truncation and every single-byte corruption of a small IDX file (plain and
gzip) and of a saved model is either refused with a DataFileError / ValueError naming the file,
or -- for bytes that carry no content, such as a gzip timestamp or a zip date -- decodes to
exactly the original values.  Nothing is ever decoded to different numbers.  A bad copy found in
one place is skipped for a good one found later (recovery).  A gzip "bomb" and absurd headers
are refused with bounded memory.

Writing: every file the library writes (saved models, plot images, the decoded dataset cache,
downloads) goes to a temporary file that is renamed over the target only when complete; an
exception raised from inside the write leaves the previous file byte-for-byte intact and no
temporary file behind.  (test_idx_and_download.py, test_nn.py and test_plotting.py test the
ordinary cases; this file sweeps the damage systematically.)
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest

import fastshallow as fs
from fastshallow import cli, nn
from fastshallow._io import check_writable
from fastshallow.datasets import DataFileError, FashionMNIST, read_idx
from fastshallow.datasets import _download
from fastshallow.datasets._download import FileSpec

from conftest import assert_bits_equal

# The sweeps below report how many damaged files they tried; the totals are checked so that a
# change that silently skips most of them is noticed.
COUNTS: dict = {}


def idx_bytes(arr: np.ndarray) -> bytes:
    return (bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
            + np.ascontiguousarray(arr).tobytes())


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def leftovers(folder) -> list:
    return sorted(f for f in os.listdir(folder) if f.startswith(".") or f.endswith((".part",
                                                                                   ".tmp")))


# ---- reading damaged IDX files --------------------------------------------------------------

def _damaged(data: bytes):
    """(kind, bytes) for every truncation and every single-byte flip of `data`."""
    for cut in range(len(data)):
        yield f"truncated at {cut}", data[:cut]
    for pos in range(len(data)):
        b = bytearray(data)
        b[pos] ^= 0xFF
        yield f"byte {pos} flipped", bytes(b)
    yield "one byte appended", data + b"\x00"
    yield "garbage appended", data + b"not part of the file"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_every_damaged_idx_file_is_refused_or_decodes_to_the_original(tmp_path, compress):
    arr = np.random.default_rng(0).integers(0, 256, (6, 4, 5), dtype=np.uint8)
    raw = idx_bytes(arr)
    spec = FileSpec("x-idx3-ubyte", arr.shape, hashlib.sha256(raw).hexdigest())
    good = gz(raw) if compress else raw
    refused = same = 0
    path = tmp_path / "x.gz"
    for kind, data in _damaged(good):
        path.write_bytes(data)
        try:
            got = _download._load_verified(path, spec)
        except DataFileError as exc:
            assert str(path) in str(exc), kind
            refused += 1
            continue
        # Accepted: only possible when the decompressed content is exactly the original (the
        # sha256 of the raw bytes is checked), e.g. a flipped gzip timestamp or OS byte.
        np.testing.assert_array_equal(got, arr, err_msg=kind)
        same += 1
    COUNTS[f"idx {'gzip' if compress else 'plain'}"] = (refused, same)
    assert refused + same == 2 * len(good) + 2
    if not compress:
        assert same == 0  # every byte of a plain IDX file is content
    else:
        assert same <= 10  # header bytes only (mtime, XFL, OS)


def test_corrupt_local_copies_are_skipped_for_a_good_one_but_never_in_a_named_folder(
        tmp_path, monkeypatch):
    """Recovery: damaged copies in the user cache are skipped, with a warning naming them, in
    favour of a good copy in the system folder; the data is the good copy's, every time.  The
    same damaged copies in a folder the user named (root=) are errors naming them: the user
    would otherwise believe their copy was used."""
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": (np.arange(8) % 10).astype(np.uint8)}
    raw = {n: idx_bytes(a) for n, a in arrays.items()}
    monkeypatch.setattr(_download, "FILES", {
        n: FileSpec(n, a.shape, hashlib.sha256(raw[n]).hexdigest()) for n, a in arrays.items()})
    system, root = tmp_path / "system", tmp_path / "root"
    system.mkdir()
    root.mkdir()
    monkeypatch.setattr(_download, "SYSTEM_DIRS", [str(system)])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cache = _download.cache_dir()
    cache.mkdir(parents=True)
    monkeypatch.delenv("FASTSHALLOW_DATA", raising=False)
    monkeypatch.setenv("FASTSHALLOW_MIRRORS", "")
    for n, r in raw.items():
        (system / (n + ".gz")).write_bytes(gz(r))
    good_labels = gz(raw["train-labels-idx1-ubyte"])
    (root / "train-labels-idx1-ubyte.gz").write_bytes(good_labels)
    good_images = gz(raw["train-images-idx3-ubyte"])
    recovered = refused = 0
    variants = [d for i, d in enumerate(_damaged(good_images)) if i % 41 == 0]
    for kind, data in variants:
        for folder in (cache, root):
            (folder / "train-images-idx3-ubyte.gz").write_bytes(data)
        for f in cache.glob("*.npy"):
            f.unlink()  # the decoded cache would otherwise serve every later load
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = FashionMNIST(download=False)
        np.testing.assert_array_equal(ds.data, arrays["train-images-idx3-ubyte"], err_msg=kind)
        if caught:
            assert "skipping a bad copy" in str(caught[0].message), kind
            assert ds.files["train-images-idx3-ubyte"].startswith(str(system)), kind
            recovered += 1
        try:
            named = FashionMNIST(root, download=False)
        except DataFileError as exc:
            assert str(root / "train-images-idx3-ubyte.gz") in str(exc), kind
            refused += 1
        else:  # damage that leaves the content intact (a gzip header byte): root's copy is read
            np.testing.assert_array_equal(named.data, arrays["train-images-idx3-ubyte"],
                                          err_msg=kind)
            assert named.files["train-images-idx3-ubyte"].startswith(str(root)), kind
    COUNTS["idx recovered"] = recovered
    assert recovered >= len(variants) - 3
    assert refused == recovered  # the same copies are bad wherever they are


def test_gzip_bomb_and_absurd_headers_are_refused_with_bounded_memory(tmp_path):
    # A header promising 6000 images, followed by 64 MB of zeros that compress to ~64 kB.
    header = bytes([0, 0, 8, 3]) + struct.pack(">III", 6000, 28, 28)
    comp = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = comp.compress(header) + b"".join(comp.compress(bytes(1 << 20)) for _ in range(64))
    bomb += comp.flush()
    (tmp_path / "bomb.gz").write_bytes(bomb)
    (tmp_path / "absurd.gz").write_bytes(gz(bytes([0, 0, 8, 3]) + struct.pack(
        ">III", 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    (tmp_path / "overflow").write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">II", 2**16, 2**16))
    (tmp_path / "rank").write_bytes(bytes([0, 0, 8, 255]) + struct.pack(">255I", *[1] * 255))
    tracemalloc.start()
    try:
        with pytest.raises(DataFileError, match=r"bomb\.gz: the IDX header says dimensions "
                                                r"\(6000, 28, 28\).*more data"):
            read_idx(tmp_path / "bomb.gz")
        with pytest.raises(DataFileError, match=r"absurd\.gz: IDX header claims"):
            read_idx(tmp_path / "absurd.gz")
        # 2**16 * 2**16 wraps to 0 in 32-bit arithmetic; the reader multiplies exactly.
        with pytest.raises(DataFileError, match=r"overflow: IDX header claims dimensions "
                                                r"\(65536, 65536\) = 4294967296 values"):
            read_idx(tmp_path / "overflow")
        with pytest.raises(DataFileError, match=r"rank: IDX header claims 255 dimensions"):
            read_idx(tmp_path / "rank")
        with pytest.raises(DataFileError, match=r"rank: IDX header claims 255 dimensions"):
            fs.open_idx(tmp_path / "rank")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * 6000 * 784 + (8 << 20)  # what the header promised, not the 64 MB


# ---- reading damaged model files -------------------------------------------------------------

def test_every_damaged_model_file_is_refused_or_loads_the_original(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Dense(3, in_units=4, rng=0))
    path = tmp_path / "m.npz"
    net.save(path)
    good = path.read_bytes()
    X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    want = np.asarray(net(X))
    refused = same = 0
    for kind, data in _damaged(good):
        path.write_bytes(data)
        try:
            back = nn.load(path)
        except ValueError as exc:
            assert str(path) in str(exc), kind
            refused += 1
            continue
        np.testing.assert_array_equal(np.asarray(back(X)), want, err_msg=kind)
        same += 1
    COUNTS["model"] = (refused, same)
    assert refused + same == 2 * len(good) + 2
    # Zip dates, attributes and the like carry no content; everything else is CRC-protected.
    assert refused > 0.8 * (refused + same)


def test_model_file_claiming_huge_layers_is_refused_before_allocating(tmp_path):
    """The description in a model file is checked against the arrays it holds before any
    parameter is allocated: a file saying 60000 x 60000 (13 GiB) with a 2 x 3 array is refused
    at once instead of allocating and filling 13 GiB."""
    import json

    meta = {"format": "fastshallow-model-1",
            "model": {"type": "Dense", "units": 60000, "in_units": 60000, "use_bias": True,
                      "flatten": True, "dtype": "float32"}}
    path = tmp_path / "big.npz"
    np.savez(path, __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8),
             p0=np.zeros((2, 3), np.float32), p1=np.zeros(3, np.float32))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"big\.npz is not a valid fastshallow model file: "
                                             r"parameter 0 has shape \(2, 3\)"):
            nn.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    # Nested too deeply for the parser or the builder: a ValueError, not a RecursionError.
    for depth in (100, 5000):
        deep = ('{"format": "fastshallow-model-1", "model": '
                + '{"type": "Sequential", "blocks": [' * depth + "]}" * depth + "}")
        np.savez(path, __meta__=np.frombuffer(deep.encode(), np.uint8))
        with pytest.raises(ValueError, match=r"not a valid fastshallow model file"):
            nn.load(path)


# ---- interrupted writes ----------------------------------------------------------------------

class Interrupted(Exception):
    pass


def _assert_intact(path, old: bytes):
    assert path.read_bytes() == old
    assert leftovers(path.parent) == []


@pytest.mark.parametrize("exc", [Interrupted, KeyboardInterrupt, OSError])
def test_interrupted_model_save_keeps_the_old_file(tmp_path, monkeypatch, exc):
    path = tmp_path / "model.npz"
    old_net = nn.Dense(2, in_units=3, rng=0)
    old_net.save(path)
    old = path.read_bytes()
    real_savez = np.savez

    def half_then_fail(f, **arrays):
        buf = io.BytesIO()
        real_savez(buf, **arrays)
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        raise exc("interrupted mid-write")

    monkeypatch.setattr(np, "savez", half_then_fail)
    with pytest.raises(exc):
        nn.Dense(2, in_units=3, rng=1).save(path)
    _assert_intact(path, old)
    monkeypatch.undo()
    np.testing.assert_array_equal(nn.load(path).weight.data, old_net.weight.data)
    COUNTS["model save interrupted"] = COUNTS.get("model save interrupted", 0) + 1


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        nn.Dense(2, in_units=3, rng=0).save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "m.npz").st_mode & 0o777) == 0o644


def test_interrupted_plot_writes_keep_the_old_image(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from fastshallow import plotting

    real = Figure.savefig
    png = tmp_path / "curve.png"
    anim = plotting.Animator(legend=["a"], path=png)
    anim.add(1, 1.0)
    old = png.read_bytes()
    assert old.startswith(b"\x89PNG")

    def partial_then_fail(self, fh, **kw):
        fh.write(b"\x89PNG partial")
        raise Interrupted("disk full")

    monkeypatch.setattr(Figure, "savefig", partial_then_fail)
    with pytest.raises(Interrupted):
        anim.add(2, 0.5)
    _assert_intact(png, old)
    # The training loop's live plot: a drawing whose image write fails leaves the last good one.
    monkeypatch.setattr(Figure, "savefig", real)
    X, y = fs.synthetic_data([1.0, 2.0], 0.5, 40, seed=0)
    net = nn.Dense(1, in_units=2, rng=0)
    calls = []

    def fail_on_second(self, fh, **kw):
        calls.append(1)
        if len(calls) == 1:  # a fast run's one drawing, after its last epoch, fails
            fh.write(b"junk")
            raise KeyboardInterrupt
        return real(self, fh, **kw)

    monkeypatch.setattr(Figure, "savefig", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        fs.train(net, fs.load_array((X, y), 10, seed=0), None, fs.losses.L2Loss(), 3,
                 fs.optim.SGD(net.parameters(), lr=0.03), verbose=False, plot_path=png)
    _assert_intact(png, old)  # the image from before the run
    assert leftovers(tmp_path) == []
    COUNTS["plot interrupted"] = 2


@pytest.fixture
def synth(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "train-labels-idx1-ubyte": (np.arange(10) % 10).astype(np.uint8)}
    raw = {n: idx_bytes(a) for n, a in arrays.items()}
    monkeypatch.setattr(_download, "FILES", {
        n: FileSpec(n, a.shape, hashlib.sha256(raw[n]).hexdigest()) for n, a in arrays.items()})
    system = tmp_path / "system"
    system.mkdir()
    monkeypatch.setattr(_download, "SYSTEM_DIRS", [str(system)])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("FASTSHALLOW_DATA", raising=False)
    monkeypatch.setenv("FASTSHALLOW_MIRRORS", "")
    return arrays, raw, system, _download.cache_dir()


def test_interrupted_decoded_cache_write_keeps_the_old_cache(synth, monkeypatch):
    arrays, raw, system, cache = synth
    for n, r in raw.items():
        (system / (n + ".gz")).write_bytes(gz(r))
    FashionMNIST(download=False)  # writes the decoded cache
    npy = sorted(cache.glob("train-images*.npy"))
    assert len(npy) == 1
    old = npy[0].read_bytes()
    # Damage the cache so that the next load decodes again and rewrites it -- and make that
    # rewrite fail half way, once with an OSError (skipped quietly) and once with Ctrl-C.
    npy[0].write_bytes(old[:100])
    damaged = npy[0].read_bytes()
    real_save = np.save

    for exc in (OSError, KeyboardInterrupt):
        def half_then_fail(fh, arr, **kw):
            buf = io.BytesIO()
            real_save(buf, arr, **kw)
            fh.write(buf.getvalue()[:500])
            raise exc("interrupted")

        monkeypatch.setattr(np, "save", half_then_fail)
        if exc is OSError:
            ds = FashionMNIST(download=False)  # the cache is an optimisation: load goes on
            np.testing.assert_array_equal(ds.data, arrays["train-images-idx3-ubyte"])
        else:
            with pytest.raises(KeyboardInterrupt):
                FashionMNIST(download=False)
        _assert_intact(npy[0], damaged)
    monkeypatch.setattr(np, "save", real_save)
    ds = FashionMNIST(download=False)
    assert npy[0].read_bytes() == old  # rewritten whole once the write is allowed to finish
    np.testing.assert_array_equal(ds.data, arrays["train-images-idx3-ubyte"])
    COUNTS["cache interrupted"] = 2


def test_interrupted_download_leaves_nothing_and_keeps_the_old_file(synth, monkeypatch):
    """A download stopped from inside the write loop (here: Ctrl-C from the progress bar
    after the first chunk) or while the downloaded file is checked removes its partial file; a
    file that was already in the cache is left exactly as it was."""
    import http.server
    import threading

    import tqdm

    arrays, raw, system, cache = synth
    body = gz(raw["train-images-idx3-ubyte"] + b"") + b""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            data = {"/train-images-idx3-ubyte.gz": body,
                    "/train-labels-idx1-ubyte.gz": gz(raw["train-labels-idx1-ubyte"])}.get(
                self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("FASTSHALLOW_MIRRORS", f"http://127.0.0.1:{srv.server_address[1]}/")
        cache.mkdir(parents=True)
        stale = cache / "train-images-idx3-ubyte.gz"
        stale.write_bytes(b"an old, bad copy")  # skipped as bad, so a download starts
        real_tqdm = tqdm.tqdm

        class StopAfterFirstChunk(real_tqdm):
            def update(self, n=1):
                raise KeyboardInterrupt

        def interrupted_download():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with pytest.raises(KeyboardInterrupt):
                    FashionMNIST(download=True)
            _assert_intact(stale, b"an old, bad copy")

        monkeypatch.setattr(tqdm, "tqdm", StopAfterFirstChunk)
        monkeypatch.setattr(_download, "_CHUNK", 256)
        interrupted_download()
        monkeypatch.setattr(tqdm, "tqdm", real_tqdm)
        # Ctrl-C after the download, while the whole file is decompressed and checked
        real_verify = _download._load_verified

        def stop_while_checking(path, spec):
            if str(path).endswith(".part"):
                raise KeyboardInterrupt
            return real_verify(path, spec)

        monkeypatch.setattr(_download, "_load_verified", stop_while_checking)
        interrupted_download()
        monkeypatch.setattr(_download, "_load_verified", real_verify)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = FashionMNIST(download=True)
        np.testing.assert_array_equal(ds.data, arrays["train-images-idx3-ubyte"])
        assert stale.read_bytes() == body and leftovers(cache) == []
    finally:
        srv.shutdown()
        srv.server_close()
    COUNTS["download interrupted"] = 1


def test_command_line_refuses_an_impossible_save_path_before_training(tmp_path, monkeypatch):
    """`fastshallow train --save` refuses an impossible path before training, and a save that
    fails leaves the previous model in place."""
    bad = tmp_path / "no-such-folder" / "m.npz"
    assert cli.main(["train", "--save", str(bad)]) == 2
    assert not bad.parent.exists()


def _refuse_new_files_in(folder, monkeypatch):
    """As in a folder that exists but takes no new file (a read-only mount, /proc): os.open
    fails there, which root's permission bits would not arrange."""
    real_open = os.open

    def refusing_open(path, *args, **kwargs):
        if os.path.dirname(os.fspath(path)) == str(folder):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)


@pytest.mark.parametrize("flag, name", [("--save", "m.npz"), ("--plot", "curve.png"),
                                        ("--predictions", "grid.png")])
def test_command_line_refuses_an_unwritable_folder_before_training(tmp_path, monkeypatch,
                                                                   capsys, flag, name):
    """The folder exists, but no file can be created in it: found out before the data is read
    (the loader would fail the test), and the message names the user's path."""
    _refuse_new_files_in(tmp_path, monkeypatch)
    monkeypatch.setattr("fastshallow.datasets.load_data_fashion_mnist",
                        lambda *a, **k: pytest.fail("training started"))
    path = tmp_path / name
    assert cli.main(["train", "--plot", "", "--predictions", "", flag, str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{flag}: [Errno 13] cannot write {path}: Permission denied" in err
    assert os.listdir(tmp_path) == []


def test_a_file_name_near_the_length_limit_is_written(tmp_path):
    """The temporary file beside it takes only the name's start: a 250-byte name is valid,
    and a temporary name 25 bytes longer would not be."""
    path = tmp_path / ("m" * 246 + ".npz")
    nn.Dense(2, in_units=3, rng=0).save(path)
    fs.Animator().save(tmp_path / ("c" * 246 + ".png"))
    assert sorted(os.listdir(tmp_path)) == sorted([path.name, "c" * 246 + ".png"])
    check_writable(path)  # the command line's check before training, which refused it too


def test_failed_writes_name_the_file_not_its_temporary(tmp_path, monkeypatch):
    net = nn.Dense(2, in_units=3, rng=0)
    _refuse_new_files_in(tmp_path, monkeypatch)
    with pytest.raises(PermissionError, match=f"cannot write {tmp_path / 'm.npz'}: "):
        net.save(tmp_path / "m.npz")
    with pytest.raises(PermissionError, match="cannot write .*curve.png: Permission denied"):
        fs.Animator().save(tmp_path / "curve.png")
    assert os.listdir(tmp_path) == []


def test_damage_counts():
    """Runs last in this file: the sweeps above tried what they claim."""
    if len(COUNTS) < 3:
        pytest.skip("run with the whole file")
    total = sum(sum(v) if isinstance(v, tuple) else v for v in COUNTS.values())
    print(f"\ndamaged files tried: {total} -- {COUNTS}")
    assert total > 1000


def test_saving_through_a_link_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real.npz").write_bytes(b"old")
    (tmp_path / "link.npz").symlink_to("real.npz")
    net = nn.Dense(2, in_units=3, rng=0)
    net.save(tmp_path / "link.npz")
    assert (tmp_path / "link.npz").is_symlink()
    assert_bits_equal(nn.load(tmp_path / "real.npz").weight.data, net.weight.data)
    assert sorted(os.listdir(tmp_path)) == ["link.npz", "real.npz"]


@pytest.mark.parametrize("kind, exc, match", [
    ("folder", IsADirectoryError, r"cannot write .*out.png: it is a folder"),
    ("pipe", OSError, r"cannot write .*out.png: it is not a regular file"),
])
def test_writes_never_put_a_file_in_place_of_a_folder_or_a_pipe(tmp_path, kind, exc, match):
    """A rename would replace an empty folder, a named pipe or (as root) a device node such as
    /dev/null with the file.  (A pipe stands for the device: a failing test must not break
    the machine.)"""
    path = tmp_path / "out.png"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    before = os.stat(path)
    with pytest.raises(exc, match=match):
        nn.Dense(2, in_units=3, rng=0).save(path)
    with pytest.raises(exc, match=match):
        fs.Animator().save(path)
    with pytest.raises(exc, match=match):
        check_writable(path)
    after = os.stat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert os.listdir(tmp_path) == ["out.png"]
