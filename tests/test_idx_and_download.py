"""The IDX reader and the find / download / verify / cache machinery, on small synthetic files.

Nothing here touches the network or the real Fashion-MNIST files: the expected-content table is
swapped for the synthetic files' checksums, the system folder for an empty temporary one, and
downloads go to an HTTP server the tests start on 127.0.0.1.
"""
from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import re
import socket
import struct
import threading
import tracemalloc
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from fastshallow.datasets import (
    Compose,
    DataFileError,
    DatasetNotFoundError,
    FashionMNIST,
    Resize,
    ToTensor,
    load_data_fashion_mnist,
    read_idx,
)
from fastshallow.datasets import _download
from fastshallow.datasets._download import FileSpec

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
TRAIN = (TRAIN_IMAGES, TRAIN_LABELS)


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file of `arr` written independently of the reader under test."""
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + np.ascontiguousarray(arr).tobytes()


def gz(data: bytes, level: int = 6) -> bytes:
    return gzip.compress(data, compresslevel=level, mtime=0)


def leftovers(folder) -> list:
    """Temporary or partial files left in `folder`."""
    if not os.path.isdir(folder):
        return []
    return sorted(f for f in os.listdir(folder) if f.startswith(".") or f.endswith(".part"))


@pytest.fixture
def synth(tmp_path, monkeypatch):
    """Synthetic train (40 examples) and test (20) files, and an environment that finds
    nothing: empty temporary cache, no $FASTSHALLOW_DATA, an empty system folder, no mirrors."""
    rng = np.random.default_rng(1234)
    arrays = {
        TRAIN_IMAGES: rng.integers(0, 256, (40, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: (np.arange(40) * 7 % 10).astype(np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        TEST_LABELS: (np.arange(20) % 10).astype(np.uint8),
    }
    arrays[TRAIN_IMAGES][0, 0, 0] = 255  # so that scaled values reach exactly 1
    raw = {n: idx_bytes(a) for n, a in arrays.items()}
    specs = {n: FileSpec(n, a.shape, hashlib.sha256(raw[n]).hexdigest())
             for n, a in arrays.items()}
    monkeypatch.setattr(_download, "FILES", specs)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("FASTSHALLOW_DATA", raising=False)
    monkeypatch.setenv("FASTSHALLOW_MIRRORS", "")
    system = tmp_path / "system"
    system.mkdir()
    monkeypatch.setattr(_download, "SYSTEM_DIRS", [str(system)])
    cache = _download.cache_dir()
    assert str(cache).startswith(str(tmp_path))  # never the real user cache
    return SimpleNamespace(arrays=arrays, raw=raw, gz={n: gz(r) for n, r in raw.items()},
                           cache=cache, system=system, tmp=tmp_path, specs=specs)


def put(folder, files: dict) -> None:
    os.makedirs(folder, exist_ok=True)
    for fname, data in files.items():
        with open(os.path.join(folder, fname), "wb") as fh:
            fh.write(data)


def good_gz(s, names=TRAIN) -> dict:
    return {n + ".gz": s.gz[n] for n in names}


def assert_train_equal(ds, s):
    np.testing.assert_array_equal(ds.data, s.arrays[TRAIN_IMAGES])
    np.testing.assert_array_equal(ds.targets, s.arrays[TRAIN_LABELS].astype(np.int64))
    assert ds.targets.dtype == np.int64


# ---- a local HTTP server --------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        kind, body = route
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "drop":
            # Announce the whole body, send half, hang up.
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.routes, srv.hits = {}, []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def serve(srv, prefix: str, files: dict, kind: str = "ok") -> str:
    """Serve `files` (name -> bytes) under /prefix/; returns the mirror's base URL."""
    for fname, body in files.items():
        srv.routes[f"/{prefix}/{fname}"] = (kind, body)
    return f"{srv.base}/{prefix}/"


def refused_url() -> str:
    """A URL on a local port nobody listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"


def flip_middle(data: bytes) -> bytes:
    m = len(data) // 2
    return data[:m] + bytes([data[m] ^ 0xFF]) + data[m + 1:]


def use_mirrors(monkeypatch, *urls):
    monkeypatch.setenv("FASTSHALLOW_MIRRORS", ",".join(urls))


# ---- IDX parser -----------------------------------------------------------------------------

def test_read_idx_round_trip_gz_plain_and_multimember(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(a)
    put(tmp_path, {"a.gz": gz(raw), "a": raw, "m.gz": gz(raw[:10]) + gz(raw[10:])})
    for fname in ("a.gz", "a", "m.gz"):
        arr, digest = read_idx(tmp_path / fname, expected_ndim=3)
        np.testing.assert_array_equal(arr, a)
        assert arr.dtype == np.uint8 and not arr.flags.writeable
        assert digest == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("magic, match", [
    (b"\x12\x34\x08\x03", "magic number 0x12340803"),
    (b"\x00\x00\x07\x03", "magic number 0x00000703"),
    (b"\x00\x00\x0d\x03", "float32 .* not supported"),
    (b"\x00\x00\x08\x01", "1 dimension.* expected 3"),
])
def test_read_idx_bad_magic(tmp_path, magic, match):
    raw = magic + idx_bytes(np.zeros((2, 3, 4), np.uint8))[4:]
    path = tmp_path / "bad-idx3.gz"
    put(tmp_path, {path.name: gz(raw)})
    with pytest.raises(DataFileError, match=match) as info:
        read_idx(path, expected_ndim=3)
    assert str(path) in str(info.value) and info.value.path == str(path)


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_dims_disagree_with_size(tmp_path, compress):
    a = np.ones((5, 3, 4), np.uint8)
    body = idx_bytes(a)[16:]
    claims_more = bytes([0, 0, 8, 3]) + struct.pack(">III", 6, 3, 4) + body
    claims_less = bytes([0, 0, 8, 3]) + struct.pack(">III", 4, 3, 4) + body
    wrap = gz if compress else (lambda b: b)
    put(tmp_path, {"more": wrap(claims_more), "less": wrap(claims_less),
                   "short": wrap(bytes([0, 0, 8, 3, 0, 0]))})
    with pytest.raises(DataFileError, match=r"dimensions \(6, 3, 4\), i\.e\. 88 bytes.* 76 bytes"):
        read_idx(tmp_path / "more")
    with pytest.raises(DataFileError, match="more data" if compress else "64 bytes.* 76"):
        read_idx(tmp_path / "less")
    with pytest.raises(DataFileError, match="truncated IDX header"):
        read_idx(tmp_path / "short")


def _peak_alloc(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_absurd_header_refused_before_allocating(tmp_path, compress):
    huge = bytes([0, 0, 8, 3]) + struct.pack(">III", 100000, 100000, 100000) + b"\0" * 100
    # Under the absurdity bound but far beyond the data: refused from the data's size alone.
    big = bytes([0, 0, 8, 3]) + struct.pack(">III", 2**31 // 784, 28, 28) + b"\0" * 100
    wrap = gz if compress else (lambda b: b)
    put(tmp_path, {"huge": wrap(huge), "big": wrap(big)})

    def expect(name, match):
        with pytest.raises(DataFileError, match=match):
            read_idx(tmp_path / name)

    # A few MB of I/O buffers at most, not the 10**15 (or 2 GB) bytes the headers ask for.
    assert _peak_alloc(lambda: expect("huge", "1000000000000000 values, more than")) < 8 << 20
    assert _peak_alloc(lambda: expect("big", "truncated or corrupt")) < 8 << 20


def test_read_idx_truncated_and_corrupt_gzip(tmp_path):
    raw = idx_bytes(np.random.default_rng(0).integers(0, 256, (50, 28, 28), dtype=np.uint8))
    data = gz(raw)
    bad_crc = bytearray(data)
    bad_crc[-6] ^= 0xFF  # inside the CRC32 trailer
    put(tmp_path, {"half.gz": data[: len(data) // 2], "notrailer.gz": data[:-8],
                   "crc.gz": bytes(bad_crc), "junk.gz": data + b"trailing junk",
                   "empty": b""})
    for name in ("half.gz", "notrailer.gz"):
        with pytest.raises(DataFileError, match="truncated gzip") as info:
            read_idx(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(DataFileError, match="corrupt gzip data"):
        read_idx(tmp_path / "crc.gz")
    with pytest.raises(DataFileError, match="corrupt gzip|after the gzip"):
        read_idx(tmp_path / "junk.gz")
    with pytest.raises(DataFileError, match="too short"):
        read_idx(tmp_path / "empty")
    with pytest.raises(DataFileError, match="cannot be read"):
        read_idx(tmp_path / "does-not-exist")


# ---- finding local copies -------------------------------------------------------------------

def test_search_order_root_env_cache_system(synth, monkeypatch):
    s = synth
    put(s.system, good_gz(s))
    ds = FashionMNIST(download=False)
    assert_train_equal(ds, s)
    assert ds.files[TRAIN_IMAGES] == str(s.system / (TRAIN_IMAGES + ".gz"))

    env = s.tmp / "env"
    put(env, good_gz(s))
    monkeypatch.setenv("FASTSHALLOW_DATA", str(env))
    for f in os.listdir(s.cache):  # drop the decoded cache so that the files are looked up
        os.unlink(s.cache / f)
    assert FashionMNIST(download=False).files[TRAIN_IMAGES] == str(env / (TRAIN_IMAGES + ".gz"))

    root = s.tmp / "root"
    put(root, good_gz(s))
    for f in os.listdir(s.cache):
        os.unlink(s.cache / f)
    ds = FashionMNIST(root=root, download=False)
    assert ds.files[TRAIN_IMAGES] == str(root / (TRAIN_IMAGES + ".gz"))
    assert_train_equal(ds, s)
    # The decoded cache now answers for root's (unchanged) files, and for the default places.
    ds = FashionMNIST(root=root, download=False)
    assert ds.files[TRAIN_IMAGES] == f"{root / (TRAIN_IMAGES + '.gz')} (same bytes as " \
                                     "verified before; decoded cache)"
    assert_train_equal(ds, s)
    monkeypatch.delenv("FASTSHALLOW_DATA")
    ds = FashionMNIST(download=False)
    assert ds.files[TRAIN_IMAGES] == f"{_download._decoded_path(s.cache, s.specs[TRAIN_IMAGES])} " \
                                     "(decoded cache)"
    assert_train_equal(ds, s)


def test_recompressed_and_uncompressed_copies_pass(synth):
    s = synth
    root = s.tmp / "root"
    put(root, {TRAIN_IMAGES + ".gz": gz(s.raw[TRAIN_IMAGES], level=1),
               TRAIN_LABELS: s.raw[TRAIN_LABELS]})
    assert gz(s.raw[TRAIN_IMAGES], level=1) != s.gz[TRAIN_IMAGES]
    ds = FashionMNIST(root=str(root), download=False)
    assert_train_equal(ds, s)
    assert ds.files[TRAIN_LABELS] == str(root / TRAIN_LABELS)


def test_bad_copy_in_root_is_an_error_not_skipped_for_the_next_place(synth, monkeypatch):
    s = synth
    root, env = s.tmp / "root", s.tmp / "env"
    wrong = s.raw[TRAIN_IMAGES][:-1] + b"\x00"  # same length, different content
    put(root, {TRAIN_IMAGES + ".gz": gz(wrong), TRAIN_LABELS: b"\x00\x00\x08"})
    put(env, good_gz(s))
    monkeypatch.setenv("FASTSHALLOW_DATA", str(env))
    with pytest.raises(DataFileError, match="checksum mismatch") as info:
        FashionMNIST(root=root, download=False)
    msg = str(info.value)  # one message for both bad files, each named with what is wrong
    assert f"{root / (TRAIN_IMAGES + '.gz')}: checksum mismatch" in msg
    assert f"{root / TRAIN_LABELS}: too short for an IDX file" in msg
    assert str(env) not in msg


@pytest.mark.parametrize("damage, match", [
    (lambda s: s.gz[TRAIN_IMAGES][: len(s.gz[TRAIN_IMAGES]) // 2], "truncated gzip"),
    (lambda s: gz(s.raw[TRAIN_IMAGES][:-1] + b"\x07"), "checksum mismatch"),
    (lambda s: gz(idx_bytes(s.arrays[TRAIN_IMAGES][:39])),
     r"shape \(39, 28, 28\), expected \(40, 28, 28\)"),
])
def test_bad_file_without_download_is_a_clear_error(synth, damage, match):
    s = synth
    bad = damage(s)
    put(s.cache, {TRAIN_IMAGES + ".gz": bad, TRAIN_LABELS + ".gz": s.gz[TRAIN_LABELS]})
    with pytest.warns(RuntimeWarning):
        with pytest.raises(DataFileError, match=match) as info:
            FashionMNIST(download=False)
    msg = str(info.value)
    assert str(s.cache / (TRAIN_IMAGES + ".gz")) in msg
    assert "download=False" in msg and "apt-get install dataset-fashion-mnist" in msg
    # The bad file was left alone and never decoded into the cache.
    assert (s.cache / (TRAIN_IMAGES + ".gz")).read_bytes() == bad
    assert not [f for f in os.listdir(s.cache) if f.startswith(TRAIN_IMAGES) and
                f.endswith(".npy")]


def test_label_file_checks(synth, monkeypatch):
    s = synth
    labels = s.arrays[TRAIN_LABELS].copy()
    labels[3] = 10
    raw = idx_bytes(labels)
    specs = dict(s.specs)
    specs[TRAIN_LABELS] = FileSpec(TRAIN_LABELS, labels.shape, hashlib.sha256(raw).hexdigest())
    monkeypatch.setattr(_download, "FILES", specs)
    put(s.system, {TRAIN_IMAGES + ".gz": s.gz[TRAIN_IMAGES], TRAIN_LABELS + ".gz": gz(raw)})
    with pytest.raises(DataFileError, match="label 10.* 10 classes"):
        FashionMNIST(download=False)

    labels = s.arrays[TRAIN_LABELS][:-1]
    raw = idx_bytes(labels)
    specs[TRAIN_LABELS] = FileSpec(TRAIN_LABELS, labels.shape, hashlib.sha256(raw).hexdigest())
    put(s.system, {TRAIN_LABELS + ".gz": gz(raw)})
    with pytest.raises(DataFileError, match="39 labels .* 40 images"):
        FashionMNIST(download=False)


def test_stale_or_damaged_decoded_cache_is_ignored(synth):
    s = synth
    put(s.system, good_gz(s))
    FashionMNIST(download=False)
    npy = [f for f in os.listdir(s.cache) if f.startswith(TRAIN_IMAGES) and f.endswith(".npy")]
    assert npy == [f"{TRAIN_IMAGES}.{s.specs[TRAIN_IMAGES].sha256[:16]}.npy"]
    path = s.cache / npy[0]
    np.save(path, np.zeros((3, 28, 28), np.uint8))  # wrong shape under the right name
    ds = FashionMNIST(download=False)
    assert ds.files[TRAIN_IMAGES] == str(s.system / (TRAIN_IMAGES + ".gz"))
    assert_train_equal(ds, s)
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    ds = FashionMNIST(download=False)
    assert not ds.files[TRAIN_IMAGES].endswith("(decoded cache)")
    assert_train_equal(ds, s)
    assert FashionMNIST(download=False).files[TRAIN_IMAGES].endswith("(decoded cache)")


# ---- a folder named by root= or $FASTSHALLOW_DATA ------------------------------------------

NAMED = pytest.mark.parametrize("how", ["root", "env"])


def name_folder(how, folder, monkeypatch) -> dict:
    """The FashionMNIST arguments that name `folder`, by root= or by $FASTSHALLOW_DATA."""
    if how == "root":
        return {"root": folder}
    monkeypatch.setenv("FASTSHALLOW_DATA", str(folder))
    return {}


def good_copies_elsewhere(s) -> None:
    """Good copies in the system folder and decoded in the cache: what a named folder used to
    be passed over for, without a word."""
    put(s.system, good_gz(s, s.arrays))
    FashionMNIST(download=False)
    FashionMNIST(train=False, download=False)


@NAMED
def test_a_named_folder_without_the_files_is_an_error_not_a_reason_to_look_elsewhere(
        synth, server, monkeypatch, how):
    s = synth
    good_copies_elsewhere(s)
    use_mirrors(monkeypatch, serve(server, "good", good_gz(s, s.arrays)))
    empty = s.tmp / "empty"
    empty.mkdir()
    kw = name_folder(how, empty, monkeypatch)
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNIST(**kw)
    msg = str(info.value)
    for what in (str(empty), TRAIN_IMAGES + ".gz", TRAIN_LABELS + ".gz",
                 "root=" if how == "root" else "$FASTSHALLOW_DATA"):
        assert what in msg, what
    assert server.hits == []  # nor downloaded
    # A folder with some of the files: the others are missing from it, not taken elsewhere.
    partial = s.tmp / "partial"
    put(partial, good_gz(s))
    kw = name_folder(how, partial, monkeypatch)
    assert FashionMNIST(**kw).files[TRAIN_IMAGES] == str(partial / (TRAIN_IMAGES + ".gz"))
    with pytest.raises(DatasetNotFoundError, match=re.escape(TEST_LABELS + ".gz")):
        FashionMNIST(train=False, **kw)


@NAMED
def test_loaders_name_every_file_missing_from_a_named_folder_at_once(synth, monkeypatch, how):
    """load_data_fashion_mnist read the splits one after the other, so a folder lacking the
    files of both was reported a split at a time; now every missing file, before any decoding
    (the train files are there, and are not read)."""
    s = synth
    monkeypatch.setattr(_download, "_load_verified",
                        lambda *a, **k: pytest.fail("a file was decoded"))
    for present, absent in (((), TRAIN + (TEST_IMAGES, TEST_LABELS)),
                            (TRAIN, (TEST_IMAGES, TEST_LABELS))):
        folder = s.tmp / f"with-{len(present)}"
        folder.mkdir()
        put(folder, good_gz(s, present))
        kw = name_folder(how, folder, monkeypatch)
        with pytest.raises(DatasetNotFoundError) as info:
            load_data_fashion_mnist(8, **kw)
        missing = str(info.value).split("Missing there (as .gz or uncompressed): ")[1]
        assert missing.split(".\n")[0] == ", ".join(n + ".gz" for n in absent)


@NAMED
@pytest.mark.parametrize("damage, match", [
    (lambda s: s.gz[TRAIN_IMAGES][: len(s.gz[TRAIN_IMAGES]) // 2], "truncated gzip"),
    (lambda s: gz(s.raw[TRAIN_IMAGES][:-1] + b"\x07"), "checksum mismatch"),
], ids=["truncated", "wrong checksum"])
def test_a_bad_file_in_a_named_folder_is_an_error_though_good_copies_exist(
        synth, monkeypatch, how, damage, match):
    s = synth
    good_copies_elsewhere(s)
    mine = s.tmp / "mine"
    put(mine, {TRAIN_IMAGES + ".gz": damage(s), TRAIN_LABELS + ".gz": s.gz[TRAIN_LABELS]})
    kw = name_folder(how, mine, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an error, not a warning and another copy
        with pytest.raises(DataFileError, match=match) as info:
            FashionMNIST(**kw)
    assert info.value.path == str(mine / (TRAIN_IMAGES + ".gz"))
    assert str(mine / (TRAIN_IMAGES + ".gz")) in str(info.value)


@NAMED
def test_good_files_in_a_named_folder_are_the_ones_used_and_later_only_hashed(
        synth, monkeypatch, how):
    s = synth
    good_copies_elsewhere(s)
    mine = s.tmp / "mine"
    put(mine, good_gz(s))
    kw = name_folder(how, mine, monkeypatch)
    ds = FashionMNIST(download=False, **kw)
    assert ds.files == {n: str(mine / (n + ".gz")) for n in TRAIN}
    assert_train_equal(ds, s)
    # The same bytes again: the decoded cache serves them, without decoding, and says so.
    decode = _download.read_idx
    monkeypatch.setattr(_download, "read_idx", lambda *a, **k: pytest.fail("decoded again"))
    ds = FashionMNIST(download=False, **kw)
    assert_train_equal(ds, s)
    for n in TRAIN:
        assert ds.files[n].startswith(str(mine / (n + ".gz")) + " (")
        assert ds.files[n].endswith("decoded cache)")
    monkeypatch.setattr(_download, "read_idx", decode)
    # Other bytes of the same content (recompressed): checked in full, then used.
    put(mine, {TRAIN_IMAGES + ".gz": gz(s.raw[TRAIN_IMAGES], level=1)})
    assert FashionMNIST(**kw).files[TRAIN_IMAGES] == str(mine / (TRAIN_IMAGES + ".gz"))
    # Other, bad bytes: an error, though the decoded cache holds the right arrays.
    put(mine, {TRAIN_IMAGES + ".gz": s.gz[TRAIN_IMAGES][:-8]})
    with pytest.raises(DataFileError, match="truncated gzip"):
        FashionMNIST(**kw)


def test_a_named_file_changed_between_hash_and_decode_is_recorded_by_the_bytes_decoded(
        synth, monkeypatch):
    """The marker that lets the decoded cache serve a named folder's file names the hash of
    the bytes actually decoded: a file replaced after it was hashed must not have its first
    hash marked as verified (another file with those bytes would then skip verification)."""
    s = synth
    mine = s.tmp / "mine"
    put(mine, good_gz(s))
    file_hash = _download._file_sha256
    # as if each file was replaced by other bytes between its hash and its decoding
    monkeypatch.setattr(_download, "_file_sha256", lambda path: "0" * 64)
    FashionMNIST(root=mine, download=False)
    monkeypatch.setattr(_download, "_file_sha256", file_hash)
    cache = _download.cache_dir()
    for n in TRAIN:
        spec = _download.FILES[n]
        assert not _download._verified_marker(cache, spec, "0" * 64).exists(), n
        assert _download._verified_marker(cache, spec, file_hash(mine / (n + ".gz"))).is_file()


def test_fastshallow_data_naming_no_folder_is_an_error_as_for_root(synth, monkeypatch):
    s = synth
    good_copies_elsewhere(s)
    monkeypatch.setenv("FASTSHALLOW_DATA", str(s.tmp / "no-such-folder"))
    with pytest.raises(FileNotFoundError,
                       match=r"\$FASTSHALLOW_DATA: '.*no-such-folder' does not exist"):
        FashionMNIST()
    put(s.tmp, {"a-file": b""})
    monkeypatch.setenv("FASTSHALLOW_DATA", str(s.tmp / "a-file"))
    with pytest.raises(NotADirectoryError, match=r"\$FASTSHALLOW_DATA: '.*a-file' is not a folder"):
        FashionMNIST()
    # root= comes first: $FASTSHALLOW_DATA is then not used, nor looked at.
    root = s.tmp / "root"
    put(root, good_gz(s))
    assert FashionMNIST(root=root).files[TRAIN_IMAGES] == str(root / (TRAIN_IMAGES + ".gz"))
    monkeypatch.setenv("FASTSHALLOW_DATA", "")  # empty: not set
    assert FashionMNIST().files[TRAIN_IMAGES].endswith("(decoded cache)")


# ---- downloading ----------------------------------------------------------------------------

def test_download_good_copy_then_cached(synth, server, monkeypatch):
    s = synth
    use_mirrors(monkeypatch, serve(server, "good", good_gz(s, s.arrays)))
    ds = FashionMNIST(train=True)
    assert_train_equal(ds, s)
    assert sorted(server.hits) == sorted(f"/good/{n}.gz" for n in TRAIN)
    for n in TRAIN:
        assert (s.cache / (n + ".gz")).read_bytes() == s.gz[n]
        assert ds.files[n] == str(s.cache / (n + ".gz"))
    assert leftovers(s.cache) == []
    test = FashionMNIST(train=False)
    np.testing.assert_array_equal(test.data, s.arrays[TEST_IMAGES])
    # Later loads need neither the server nor the .gz files.
    server.routes.clear()
    for n in TRAIN:
        os.unlink(s.cache / (n + ".gz"))
    ds = FashionMNIST(train=True)
    assert_train_equal(ds, s)
    assert all(f.endswith("(decoded cache)") for f in ds.files.values())


def test_module_mirror_list_is_used_when_env_unset(synth, server, monkeypatch):
    s = synth
    monkeypatch.delenv("FASTSHALLOW_MIRRORS")
    monkeypatch.setattr(_download, "MIRRORS", [serve(server, "m", good_gz(s)).rstrip("/")])
    assert_train_equal(FashionMNIST(), s)


def test_mirror_down_or_404_falls_back_to_the_next(synth, server, monkeypatch):
    s = synth
    good = serve(server, "good", good_gz(s))
    use_mirrors(monkeypatch, refused_url(), f"{server.base}/missing/", good)
    assert_train_equal(FashionMNIST(), s)
    assert f"/missing/{TRAIN_IMAGES}.gz" in server.hits
    assert f"/good/{TRAIN_IMAGES}.gz" in server.hits
    assert leftovers(s.cache) == []


@pytest.mark.parametrize("kind, body, match", [
    ("ok", lambda g, r: g[: len(g) // 2], "truncated gzip"),
    ("ok", lambda g, r: gz(flip_middle(r)), "checksum mismatch"),  # right length, wrong bytes
    ("ok", lambda g, r: flip_middle(g), "corrupt gzip|checksum|truncated"),
    ("drop", lambda g, r: g, "connection closed after"),
])
def test_bad_download_is_never_kept(synth, server, monkeypatch, kind, body, match):
    s = synth
    bad = {n + ".gz": body(s.gz[n], s.raw[n]) for n in TRAIN}
    bad_url = serve(server, "bad", bad, kind=kind)
    use_mirrors(monkeypatch, bad_url)
    with pytest.raises(DatasetNotFoundError, match=match) as info:
        FashionMNIST()
    assert f"{bad_url}{TRAIN_IMAGES}.gz" in str(info.value)
    assert os.listdir(s.cache) == []  # no partial, temporary or bad file left behind
    # The same failure followed by a good mirror: the good copy is used and cached.
    use_mirrors(monkeypatch, bad_url, serve(server, "good", good_gz(s)))
    assert_train_equal(FashionMNIST(), s)
    assert leftovers(s.cache) == []
    assert (s.cache / (TRAIN_IMAGES + ".gz")).read_bytes() == s.gz[TRAIN_IMAGES]


def test_bad_cached_file_replaced_by_fresh_download(synth, server, monkeypatch):
    s = synth
    put(s.cache, {TRAIN_IMAGES + ".gz": s.gz[TRAIN_IMAGES][:-100],
                  TRAIN_LABELS + ".gz": s.gz[TRAIN_LABELS]})
    use_mirrors(monkeypatch, serve(server, "good", good_gz(s)))
    with pytest.warns(RuntimeWarning, match="truncated gzip"):
        ds = FashionMNIST()
    assert_train_equal(ds, s)
    assert server.hits == [f"/good/{TRAIN_IMAGES}.gz"]  # the good labels were not fetched
    assert (s.cache / (TRAIN_IMAGES + ".gz")).read_bytes() == s.gz[TRAIN_IMAGES]
    assert leftovers(s.cache) == []


def test_bad_system_file_is_never_touched(synth, server, monkeypatch):
    s = synth
    bad = s.gz[TRAIN_IMAGES][:-100]
    put(s.system, {TRAIN_IMAGES + ".gz": bad, TRAIN_LABELS + ".gz": s.gz[TRAIN_LABELS]})
    before = os.stat(s.system / (TRAIN_IMAGES + ".gz"))
    use_mirrors(monkeypatch, serve(server, "good", good_gz(s)))
    with pytest.warns(RuntimeWarning, match=re.escape(str(s.system))):
        ds = FashionMNIST()
    assert_train_equal(ds, s)
    assert ds.files[TRAIN_IMAGES] == str(s.cache / (TRAIN_IMAGES + ".gz"))
    assert (s.system / (TRAIN_IMAGES + ".gz")).read_bytes() == bad
    assert os.stat(s.system / (TRAIN_IMAGES + ".gz")).st_mtime_ns == before.st_mtime_ns
    assert sorted(os.listdir(s.system)) == sorted(good_gz(s))


def test_nothing_anywhere_gives_one_message_naming_every_place(synth, server, monkeypatch):
    s = synth  # no folder named (a named one is the only place read: see the tests above)
    down, missing = refused_url(), f"{server.base}/missing/"
    use_mirrors(monkeypatch, down, missing)
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNIST()
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for place in ("root= argument: not given", "$FASTSHALLOW_DATA: not given", s.cache, s.system):
        assert str(place) in msg
    for what in ("root=", "FASTSHALLOW_DATA", "apt-get install dataset-fashion-mnist",
                 TRAIN_IMAGES + ".gz", TRAIN_LABELS + ".gz", down + TRAIN_IMAGES + ".gz",
                 missing + TRAIN_LABELS + ".gz", "HTTP 404"):
        assert what in msg, what
    # A host that refused the connection is not asked again for the next file; one that
    # answered (with 404) is.
    assert down + TRAIN_LABELS + ".gz" not in msg
    assert server.hits == [f"/missing/{TRAIN_IMAGES}.gz", f"/missing/{TRAIN_LABELS}.gz"]
    # The search order is the documented one.
    assert msg.index("root= argument") < msg.index("$FASTSHALLOW_DATA") \
        < msg.index(str(s.cache)) < msg.index(str(s.system))
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        FashionMNIST(download=False)
    assert leftovers(s.cache) == []


# ---- datasets and loaders on synthetic data -------------------------------------------------

@pytest.fixture
def local(synth):
    put(synth.system, {n + ".gz": g for n, g in synth.gz.items()})
    return synth


def test_indexing_and_transform_first(local):
    s = local
    ds = FashionMNIST()
    assert len(ds) == 40 and ds.classes[9] == "ankle boot"
    img, label = ds[3]
    assert img.shape == (28, 28) and img.dtype == np.uint8 and type(label) is int
    assert label == s.arrays[TRAIN_LABELS][3]
    X, y = ds[:18]
    assert X.shape == (18, 28, 28) and y.shape == (18,) and y.dtype == np.int64
    np.testing.assert_array_equal(ds[-1][0], s.arrays[TRAIN_IMAGES][-1])
    np.testing.assert_array_equal(ds[[5, 1]][1], s.arrays[TRAIN_LABELS][[5, 1]])
    with pytest.raises(IndexError):
        ds[40]
    with pytest.raises(TypeError):
        ds[1.5]
    Xb, yb = ds.get_batch(np.array([2, 7], np.int64))
    assert Xb.dtype == np.uint8 and Xb.shape == (2, 28, 28) and yb.dtype == np.int64
    assert ds.as_arrays() is None

    t = ds.transform_first(ToTensor())
    img, label = t[3]
    assert img.shape == (1, 28, 28) and img.dtype == np.float32 and type(label) is int
    want = s.arrays[TRAIN_IMAGES][3].astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(img[0], want)
    X, y = t[:18]
    assert X.shape == (18, 1, 28, 28) and X.dtype == np.float32 and y.shape == (18,)
    # A transform the fast path does not know runs per example and gives the same numbers.
    slow = ds.transform_first(lambda im: ToTensor()(im))
    idx = np.array([4, 0, 39, 4], np.int64)
    Xf, yf = t.get_batch(idx)
    Xs, ys = slow.get_batch(idx)
    np.testing.assert_array_equal(Xf, Xs)
    np.testing.assert_array_equal(yf, ys)
    assert slow.as_arrays() is None
    with pytest.raises(TypeError, match="callable"):
        ds.transform_first("ToTensor")


def test_as_arrays_exposes_the_raw_rows(local):
    s = local
    ds = FashionMNIST().transform_first(ToTensor())
    X, y, scale, shape = ds.as_arrays()
    assert X.shape == (40, 784) and X.dtype == np.uint8 and y.dtype == np.int64
    assert shape == (1, 28, 28) and scale == float(np.float32(1 / 255))
    np.testing.assert_array_equal(X[5], s.arrays[TRAIN_IMAGES][5].ravel())
    np.testing.assert_array_equal((X[5] * np.float32(scale)).reshape(shape), ds[5][0])
    assert FashionMNIST().transform_first(Compose([Resize(32), ToTensor()])).as_arrays() is None
    assert FashionMNIST().transform_first(Compose([ToTensor()])).as_arrays() is not None


def test_resized_dataset_batches_match_the_transform(local):
    ds = FashionMNIST()
    for trans, (h, w) in ((Compose([Resize(40), ToTensor()]), (40, 40)),
                          (Compose([ToTensor(), Resize((40, 33))]), (40, 33))):
        t = ds.transform_first(trans)
        X, y = t.get_batch(np.array([1, 2, 3], np.int64))
        assert X.shape == (3, 1, h, w) and X.dtype == np.float32
        # The per-example transform, with scaling before resizing (no uint8 rounding between).
        ref = Compose([ToTensor(), Resize((h, w))])(ds[2][0])
        np.testing.assert_allclose(X[1], ref, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(t[2][0], X[1])


def test_load_data_on_synthetic_files(local):
    s = local
    train_iter, test_iter = load_data_fashion_mnist(8, seed=3, num_workers=4)
    assert len(train_iter) == 5 and len(test_iter) == 3
    batches = list(train_iter)
    X, y = batches[0]
    assert X.shape == (8, 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() >= 0 and X.max() <= 1
    order1 = np.concatenate([b[1] for b in batches])
    order2 = np.concatenate([b[1] for b in train_iter])
    assert sorted(order1) == sorted(s.arrays[TRAIN_LABELS])
    assert not np.array_equal(order1, order2)
    again, _ = load_data_fashion_mnist(8, seed=3)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in again]), order1)
    test_batches = list(test_iter)
    assert [len(b[1]) for b in test_batches] == [8, 8, 4]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in test_batches]),
                                  s.arrays[TEST_LABELS])
    X, _ = next(iter(load_data_fashion_mnist(4, resize=(20, 10))[1]))
    assert X.shape == (4, 1, 20, 10)
