"""Finding, downloading and verifying the Fashion-MNIST files, and the decoded cache.

Where the files are looked for, in order (DESIGN.md section 5):

1. the folder given as ``root=``;
2. the folder in ``$FASTSHALLOW_DATA``;
3. the user cache, ``$XDG_CACHE_HOME/fastshallow/fashion-mnist`` (``~/.cache/...`` by default);
4. the folders of :data:`SYSTEM_DIRS`: where Debian's ``dataset-fashion-mnist`` package puts them;
5. else each missing file is downloaded into the user cache from the first of :data:`MIRRORS`
   (or ``$FASTSHALLOW_MIRRORS``) that serves a good copy.

A folder the user names (1, or else 2) is the only place read: it must exist and hold good copies
of the files asked for, or the load fails with an error naming each missing or bad file.  Passing
over it for another copy would leave the user believing their files were used.  Only places 3-5,
which the user did not choose, are searched past, a bad copy there costing a warning.

Every copy is verified before use: the sha256 of its *decompressed* bytes must match the table
below, so a recompressed (or uncompressed) copy is as good as the published one, while a truncated,
corrupt or different file is never used.  Downloads stream into a temporary file in the cache
folder and are moved into place (``os.replace``, atomic) only once verified, so an interrupted
download never leaves a half-written file where a good one is expected.  Only the user cache is
ever written to; ``root``, ``$FASTSHALLOW_DATA`` and the system folders are only read.

Decoding 26 MB of gzip takes a third of a second, so the decoded arrays are also kept in the user
cache as ``.npy`` files named after the sha256 of the content they hold: a later load memory-maps
them in a millisecond (fashion_mnist then copies the images out, for 2 MB pages), and a change of
the expected content (a new table) can never pick up a stale one.  A named folder's file is served
from them only when its bytes hash (about a fourteenth of the time of decoding) to those of a file
verified before, recorded by an empty marker file in the cache.
"""
from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from ._idx import DataFileError, read_idx

__all__ = [
    "FileSpec", "FILES", "MIRRORS", "SYSTEM_DIRS", "DatasetNotFoundError", "DownloadError",
    "cache_dir", "check_folder", "mirrors", "load_files",
]


class FileSpec(NamedTuple):
    """What one IDX file must contain: its name (without ``.gz``), the array shape and the
    sha256 of the raw IDX bytes (header included)."""

    name: str
    shape: Tuple[int, ...]
    sha256: str

    @property
    def raw_size(self) -> int:
        """Size of the decompressed IDX file: 4-byte magic, 4 bytes per dimension, the values."""
        return 4 + 4 * len(self.shape) + math.prod(self.shape)

    @property
    def gz_name(self) -> str:
        return self.name + ".gz"


#: The expected content of the four files (DESIGN.md section 5).  Tests swap in their own.
FILES: Dict[str, FileSpec] = {
    s.name: s for s in (
        FileSpec("train-images-idx3-ubyte", (60000, 28, 28),
                 "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        FileSpec("train-labels-idx1-ubyte", (60000,),
                 "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        FileSpec("t10k-images-idx3-ubyte", (10000, 28, 28),
                 "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        FileSpec("t10k-labels-idx1-ubyte", (10000,),
                 "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    )
}

#: Base URLs tried in order; each must serve ``<name>.gz``.  ``$FASTSHALLOW_MIRRORS`` (URLs
#: separated by commas or spaces) replaces this list; set it to an empty string to never download.
MIRRORS: List[str] = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # the dataset authors' host
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "https://ossci-datasets.s3.amazonaws.com/fashion-mnist/",
]

#: Read-only folders searched after the user cache (Debian's ``dataset-fashion-mnist``).
SYSTEM_DIRS: List[str] = ["/usr/share/datasets/fashion-mnist"]

#: Seconds a download may wait for the server before trying the next mirror.
TIMEOUT = 30.0

_CHUNK = 1 << 16
# mkstemp creates files only the owner can read; cached data is not secret.
_FILE_MODE = 0o644
_GET_FILES = (
    "To get the data: install Debian's package (`sudo apt-get install dataset-fashion-mnist`, "
    "which puts the files in /usr/share/datasets/fashion-mnist), or copy the four files "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
    "t10k-labels-idx1-ubyte.gz (from https://github.com/zalandoresearch/fashion-mnist) into a "
    "folder and pass it as root=... (--data-dir on the command line) or name it in the "
    "FASTSHALLOW_DATA environment variable"
)
# A named folder is never downloaded into: the download clause is for the default places only.
_HOW_TO_GET = _GET_FILES + ", or, with internet access, let it download them (download=True)."
# What to do instead of naming a folder, by how it was named.
_INSTEAD = {"root=": "use root=None (on the command line: no --data-dir) to read the folder "
                     "$FASTSHALLOW_DATA names or, when it is not set, to search the user cache "
                     "and Debian's folder, then download",
            "$FASTSHALLOW_DATA": "unset FASTSHALLOW_DATA to search the user cache and Debian's "
                                 "folder, then download"}
ROOT_HINT = "root= names the folder holding the Fashion-MNIST files; " + _INSTEAD["root="]


class DatasetNotFoundError(FileNotFoundError):
    """No usable copy of a dataset file was found anywhere and none could be downloaded."""


class DownloadError(OSError):
    """One download attempt failed (the caller moves on to the next mirror).  `unreachable` is
    True when the host could not be reached at all (as opposed to an HTTP error or a bad body)."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


def cache_dir() -> Path:
    """The user cache folder of Fashion-MNIST (it need not exist yet)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    # XDG says a relative value is invalid and must be ignored.
    root = Path(base) if os.path.isabs(base) else Path(os.path.expanduser("~")) / ".cache"
    return root / "fastshallow" / "fashion-mnist"


def mirrors() -> List[str]:
    """The base URLs to download from: ``$FASTSHALLOW_MIRRORS`` when set, else :data:`MIRRORS`."""
    env = os.environ.get("FASTSHALLOW_MIRRORS")
    if env is not None:
        return [u for u in env.replace(",", " ").split() if u]
    return list(MIRRORS)


def _places(root) -> List[Tuple[str, Optional[Path]]]:
    """(description, folder or None when not given) in search order."""
    env = os.environ.get("FASTSHALLOW_DATA") or None
    places: List[Tuple[str, Optional[Path]]] = [
        ("root= argument", None if root is None else Path(root).expanduser()),
        ("$FASTSHALLOW_DATA", None if env is None else Path(env).expanduser()),
        ("user cache", cache_dir()),
    ]
    places += [("system folder (Debian package dataset-fashion-mnist)", Path(d))
               for d in SYSTEM_DIRS]
    return places


def check_folder(what: str, folder, instead: str) -> Path:
    """`folder` (``~`` expanded) when it is an existing folder, else FileNotFoundError or
    NotADirectoryError naming it by `what`, followed by `instead` (what to do)."""
    path = Path(os.path.expanduser(os.fspath(folder)))
    if not path.is_dir():
        kind, state = ((NotADirectoryError, "is not a folder") if path.exists()
                       else (FileNotFoundError, "does not exist"))
        raise kind(f"{what}: {os.fsdecode(os.fspath(path))!r} {state} ({instead})")
    return path


def _named_folder(root) -> Optional[Tuple[str, Path]]:
    """(how it was named, folder) for the folder the user named -- root=, else
    $FASTSHALLOW_DATA -- or None.  A named folder that is missing is an error: a typo or an
    unmounted disk would otherwise go unnoticed while another copy is used."""
    if root is not None:
        return "root=", check_folder("root", root, ROOT_HINT)
    env = os.environ.get("FASTSHALLOW_DATA") or None  # set but empty counts as unset
    if env is None:
        return None
    return "$FASTSHALLOW_DATA", check_folder(
        "$FASTSHALLOW_DATA", env, "it names the folder holding the Fashion-MNIST files; "
        + _INSTEAD["$FASTSHALLOW_DATA"])


# ---- verification ---------------------------------------------------------------------------

def _load_verified(path, spec: FileSpec, file_hash=None) -> np.ndarray:
    """The decoded content of `path`, or DataFileError when it is not exactly `spec`'s.
    `file_hash`, when given, is fed the file's bytes as read (see read_idx)."""
    arr, digest = read_idx(path, expected_ndim=len(spec.shape), file_hash=file_hash)
    if arr.shape != spec.shape:
        raise DataFileError(path, f"holds an array of shape {arr.shape}, expected {spec.shape} "
                                  f"for {spec.name}")
    if digest != spec.sha256:
        raise DataFileError(path, f"checksum mismatch: the decompressed content has sha256 "
                                  f"{digest}, expected {spec.sha256} for {spec.name} (a corrupt "
                                  "or different file)")
    return arr


# ---- the decoded cache ----------------------------------------------------------------------

def _decoded_path(cache: Path, spec: FileSpec) -> Path:
    return cache / f"{spec.name}.{spec.sha256[:16]}.npy"


def _load_decoded(cache: Path, spec: FileSpec) -> Optional[np.ndarray]:
    """The memory-mapped decoded array, or None when absent or not of the expected shape.

    The name carries the content's sha256 and the file is only ever written complete (temporary
    file + rename) from verified data, so a file of the right shape is the right data; re-hashing
    47 MB on every load would cost more than loading it."""
    path = _decoded_path(cache, spec)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if arr.dtype != np.uint8 or arr.shape != spec.shape or not arr.flags.c_contiguous:
        return None
    return arr


def _save_decoded(cache: Path, spec: FileSpec, arr: np.ndarray) -> None:
    """Write the decoded cache atomically; a cache that cannot be written is silently skipped
    (it only saves time, and a read-only home directory is legitimate)."""
    tmp = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{spec.name}.", suffix=".npy.part")
        os.chmod(tmp, _FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arr), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())  # else a crash soon after the rename can leave it empty
        os.replace(tmp, _decoded_path(cache, spec))
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)


def _verified_marker(cache: Path, spec: FileSpec, file_sha256: str) -> Path:
    # Says: a file whose bytes have this sha256 was decoded and found to hold spec's content.
    return cache / f"{spec.name}.{spec.sha256[:16]}.verified-file-{file_sha256}"


def _mark_verified(cache: Path, spec: FileSpec, file_sha256: str) -> None:
    try:
        _verified_marker(cache, spec, file_sha256).touch()  # empty: never half-written
    except OSError:
        pass  # like the decoded cache, it only saves time


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise DataFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    return h.hexdigest()


def _unlink_quietly(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ---- downloading ----------------------------------------------------------------------------

def _stream_to_temp(url: str, folder: Path, spec: FileSpec) -> str:
    """Download `url` into a new temporary file in `folder`; returns its path.

    Raises DownloadError (with the temporary file removed) when the server refuses, the body is
    larger than the file could possibly be, or the connection ends before Content-Length bytes."""
    # imported here so that loading the package stays cheap (urllib brings ssl, http, email)
    import http.client
    import urllib.error
    import urllib.request

    from tqdm import tqdm  # a dependency

    # Compressed data is never much larger than the raw bytes (deflate's worst case is 0.03%
    # over); anything bigger is not this file, and we stop before filling the disk with it.
    limit = spec.raw_size + spec.raw_size // 100 + (1 << 16)
    req = urllib.request.Request(url, headers={"User-Agent": "fastshallow (python urllib)"})
    tmp = None
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise DownloadError(f"{url}: the server announces {total} bytes, more than "
                                    f"{spec.gz_name} can be ({limit} at most)")
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{spec.gz_name}.", suffix=".part")
            os.chmod(tmp, _FILE_MODE)
            got = 0
            with os.fdopen(fd, "wb") as out, tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=f"Downloading {spec.gz_name}", leave=False, disable=None) as bar:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > limit:
                        raise DownloadError(f"{url}: more than {limit} bytes received, more "
                                            f"than {spec.gz_name} can be")
                    out.write(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            # http.client returns a short body without complaint when the peer closes early.
            if total is not None and got != total:
                raise DownloadError(f"{url}: the connection closed after {got} of {total} bytes")
        result, tmp = tmp, None
        return result
    except DownloadError:
        raise
    except urllib.error.HTTPError as exc:
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"{url}: {exc.reason}", unreachable=True) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadError(f"{url}: {type(exc).__name__}: {exc}") from None
    finally:
        # Also on KeyboardInterrupt: never leave a partial file behind.
        if tmp is not None:
            _unlink_quietly(tmp)


def _download(spec: FileSpec, cache: Path, failures: List[str],
              unreachable: set) -> Optional[Tuple[np.ndarray, Path]]:
    """Fetch `spec` from the first mirror that serves a verified copy; returns the decoded
    array and where the file now lies, or None after recording why each mirror failed.
    Mirrors in `unreachable` are skipped, and the ones found unreachable are added to it, so an
    offline machine does not wait for every host once per file."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        failures.append(f"cannot create the cache folder {cache} ({exc.strerror or exc})")
        return None
    final = cache / spec.gz_name
    for base in mirrors():
        if base in unreachable:
            continue
        url = base if base.endswith("/") else base + "/"
        url += spec.gz_name
        try:
            tmp = _stream_to_temp(url, cache, spec)
        except DownloadError as exc:
            failures.append(str(exc))
            if exc.unreachable:
                unreachable.add(base)
            continue
        try:
            arr = _load_verified(tmp, spec)
            os.replace(tmp, final)  # atomic: readers see the old file or the whole new one
        except DataFileError as exc:
            failures.append(f"{url}: {exc.reason}")
            _unlink_quietly(tmp)
            continue
        except OSError as exc:
            failures.append(f"{url}: cannot move the download into {final} ({exc})")
            _unlink_quietly(tmp)
            continue
        except BaseException:  # Ctrl-C while it is checked: no partial file left behind either
            _unlink_quietly(tmp)
            raise
        return arr, final
    return None


# ---- putting it together --------------------------------------------------------------------

def load_files(names, root=None, download: bool = True) -> Tuple[Dict[str, np.ndarray],
                                                                   Dict[str, str]]:
    """The decoded, verified arrays of the files `names` (keys of :data:`FILES`).

    Returns ``(arrays, sources)``: sources says where each array came from (a file path, with
    " (decoded cache)" when the ``.npy`` cache served it).  When the user named a folder
    (`root`, else ``$FASTSHALLOW_DATA``), see :func:`_load_named`.  Otherwise a bad copy found
    on the way is reported with a warning and skipped.  When some file has no good copy anywhere
    and cannot be downloaded, raises one error that names every file, every place searched,
    every bad copy and every failed download, and says how to get the data: DataFileError when
    bad copies were found, DatasetNotFoundError otherwise."""
    cache = cache_dir()
    named = _named_folder(root)
    if named is not None:
        return _load_named(names, *named, cache)
    places = _places(root)
    arrays: Dict[str, np.ndarray] = {}
    sources: Dict[str, str] = {}
    bad: List[DataFileError] = []
    failures: List[str] = []
    missing: List[str] = []
    unreachable: set = set()
    for name in names:
        spec = FILES[name]
        arr = _load_decoded(cache, spec)
        if arr is not None:
            arrays[name], sources[name] = arr, f"{_decoded_path(cache, spec)} (decoded cache)"
            continue
        found = None
        for _, folder in places:
            if folder is None:
                continue
            for fname in (spec.gz_name, spec.name):  # an uncompressed copy is fine too
                path = folder / fname
                if not path.is_file():
                    continue
                try:
                    found = (_load_verified(path, spec), path)
                    break
                except DataFileError as exc:
                    bad.append(exc)
                    # stacklevel 4: the caller of FashionMNIST(...), through _load_split.
                    warnings.warn(f"skipping a bad copy of {spec.gz_name}: {exc}", RuntimeWarning,
                                  stacklevel=4)
            if found is not None:
                break
        if found is None and download:
            found = _download(spec, cache, failures, unreachable)
        if found is None:
            missing.append(name)
            continue
        arr, path = found
        _save_decoded(cache, spec, arr)
        arrays[name], sources[name] = arr, os.fspath(path)
    if missing:
        raise _not_found(missing, places, bad, failures, download)
    return arrays, sources


def _named_file(folder: Path, spec: FileSpec) -> Optional[Path]:
    """`spec`'s file in the folder the user named: ``<name>.gz``, else ``<name>``, or None."""
    return next((folder / f for f in (spec.gz_name, spec.name) if (folder / f).is_file()), None)


def refuse_missing_named(names, root=None) -> None:
    """When the user named a folder (`root`, else ``$FASTSHALLOW_DATA``), raise its
    DatasetNotFoundError if any file of `names` is not there: a loader of both splits names
    every missing file at once, before it decodes any (bad copies are found as each split is
    read)."""
    named = _named_folder(root)
    if named is None:
        return
    what, folder = named
    missing = [n for n in names if _named_file(folder, FILES[n]) is None]
    if missing:
        raise _named_unusable(what, folder, missing, [])


def _load_named(names, what: str, folder: Path, cache: Path):
    """:func:`load_files` from the one folder the user named by `what`: its files, or an error.

    Each file is hashed first (about a fourteenth of the time of decoding it): when a file of
    exactly these bytes was verified before, the decoded cache holds its arrays and serves
    them, the source reading "<file> (same bytes as verified before; decoded cache)".  Any
    other file is decoded and verified in full.  Where both ``<name>.gz`` and ``<name>`` are
    there, the ``.gz`` is the one read.  A missing or bad file is never replaced by another copy:
    one error names each (DataFileError when some are bad, else DatasetNotFoundError)."""
    arrays: Dict[str, np.ndarray] = {}
    sources: Dict[str, str] = {}
    missing: List[str] = []
    bad: List[DataFileError] = []
    for name in names:
        spec = FILES[name]
        path = _named_file(folder, spec)
        if path is None:
            missing.append(name)
            continue
        try:
            digest = _file_sha256(path)
            arr = (_load_decoded(cache, spec)
                   if _verified_marker(cache, spec, digest).is_file() else None)
            if arr is not None:
                arrays[name] = arr
                sources[name] = f"{path} (same bytes as verified before; decoded cache)"
                continue
            # The marker names the bytes actually decoded: the file may change meanwhile.
            file_hash = hashlib.sha256()
            arr = _load_verified(path, spec, file_hash)
        except DataFileError as exc:
            bad.append(exc)
            continue
        _save_decoded(cache, spec, arr)
        _mark_verified(cache, spec, file_hash.hexdigest())
        arrays[name], sources[name] = arr, os.fspath(path)
    if missing or bad:
        raise _named_unusable(what, folder, missing, bad)
    return arrays, sources


def _named_unusable(what, folder, missing, bad) -> Exception:
    failed = [os.path.basename(exc.path) for exc in bad] + [FILES[n].gz_name for n in missing]
    lines = [f"Fashion-MNIST data not available: no good copy of {', '.join(failed)} in "
             f"{folder}, the folder named by {what}"
             f"{' (--data-dir on the command line)' if what == 'root=' else ''}."]
    if bad:
        lines.append("Bad copies there (not used):")
        lines += [f"  - {exc}" for exc in bad]
    if missing:
        lines.append("Missing there (as .gz or uncompressed): "
                     + ", ".join(FILES[n].gz_name for n in missing) + ".")
    lines.append(f"A folder you name is the only place read, so that no other copy is used "
                 f"unseen: put good copies of these files there, or {_INSTEAD[what]}.")
    if missing:
        lines.append(_GET_FILES + ".")
    msg = "\n".join(lines)
    if bad:
        return DataFileError(bad[0].path, bad[0].reason, message=msg)
    return DatasetNotFoundError(msg)


def _not_found(missing, places, bad, failures, download) -> Exception:
    lines = ["Fashion-MNIST data not available: no good copy of "
             + ", ".join(FILES[n].gz_name for n in missing) + "."]
    lines.append("Searched, in this order:")
    for what, folder in places:
        if folder is None:
            lines.append(f"  - {what}: not given")
        else:
            lines.append(f"  - {what}: {folder}")
    if bad:
        lines.append("Bad copies found (not used):")
        lines += [f"  - {exc}" for exc in bad]
    if not download:
        lines.append("Downloading was not tried (download=False).")
    elif failures:
        lines.append("Downloading failed:")
        lines += [f"  - {f}" for f in failures]
    else:
        lines.append("Downloading was not tried: no mirror configured ($FASTSHALLOW_MIRRORS or "
                     "fastshallow.datasets._download.MIRRORS is empty).")
    lines.append(_HOW_TO_GET)
    msg = "\n".join(lines)
    if bad:
        return DataFileError(bad[0].path, bad[0].reason, message=msg)
    return DatasetNotFoundError(msg)
