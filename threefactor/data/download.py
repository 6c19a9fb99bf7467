"""Locating and downloading the datasets used by :mod:`threefactor.data`.

:func:`search_dirs` lists where a dataset is looked for and
:func:`find_dataset` picks the first complete directory. Missing files are
fetched with :mod:`urllib` from the dataset authors' public
locations (see :data:`MIRRORS`), streamed to a temporary file in the target
directory, checked against the checksum published by the authors (see
:data:`CHECKSUMS`) and only then moved into place with :func:`os.replace`,
so that an interrupted or corrupted download never leaves a file under its
final name.

The base URL of every dataset can be overridden, e.g. to point at a local
mirror, either by editing :data:`MIRRORS` or by setting the environment
variable ``THREEFACTOR_MIRROR`` to a base URL under which the files are
served as ``<base>/<dataset name>/<file name>``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from threefactor.data.formats import CIFAR_BATCH_DIR, CIFAR_FILES, IDX_FILES, DataError, _idx_path
from threefactor.training.atomic import umask_mode

__all__ = [
    "SYSTEM_DIRS",
    "cache_dir",
    "search_dirs",
    "find_dataset",
    "MIRRORS",
    "CHECKSUMS",
    "CIFAR_ARCHIVE",
    "ChecksumError",
    "download_file",
    "download_dataset",
    "extract_cifar10",
    "not_found_message",
]

#: Base URL(s) of each dataset. A value may be a single URL or a tuple of URLs
#: that are tried in order (the next one is used only on network errors).
MIRRORS: dict[str, str | tuple[str, ...]] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fmnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "kmnist": "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
}

#: Name of the CIFAR-10 archive (python version).
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"

#: Expected checksums of the downloaded files as published by the dataset
#: authors (or, for MNIST, by torchvision). Values are ``"<algorithm>:<hex>"``
#: with any algorithm known to :func:`hashlib.new`.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fmnist": {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83fd310",
    },
    "kmnist": {
        "train-images-idx3-ubyte.gz": "md5:bdb82020997e1d708af4cf47b453dcf7",
        "train-labels-idx1-ubyte.gz": "md5:e144d726b3acfaa3e44228e80efcd344",
        "t10k-images-idx3-ubyte.gz": "md5:5c965bf0a639b31b8f53240b1b52f4d7",
        "t10k-labels-idx1-ubyte.gz": "md5:7320c461ea6c1c855c0b718fb2a4b134",
    },
    "cifar10": {
        CIFAR_ARCHIVE: "md5:c58f30108f718f92721af3b95e74349a",
    },
}

_CHUNK = 1 << 16


class ChecksumError(DataError):
    """A downloaded file does not match its published checksum."""


#: Directories where system packages install a dataset (Debian's
#: ``dataset-fashion-mnist`` installs the four ``.gz`` files here).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {"fmnist": ("/usr/share/datasets/fashion-mnist",)}


def _missing_files(name: str, directory: Path) -> list[str]:
    if name == "cifar10":
        batch_dir = directory if directory.name == CIFAR_BATCH_DIR else directory / CIFAR_BATCH_DIR
        return [str(batch_dir / f) for f in CIFAR_FILES if not (batch_dir / f).is_file()]
    return [str(directory / s) + "[.gz]" for s in IDX_FILES.values() if _idx_path(directory, s) is None]


def not_found_message(name: str, root: str | os.PathLike | None, target: Path, why: str) -> str:
    """The one message of a dataset that is not on disk and could not be had: why, where it was
    looked for, and the fixes."""
    looked = "; ".join(
        f"{d} (lacks {', '.join(Path(f).name for f in _missing_files(name, d))})" if d.is_dir() else f"{d} (absent)"
        for d in search_dirs(name, root)
    )
    files = (f"{CIFAR_BATCH_DIR}/ (the python version of CIFAR-10)" if name == "cifar10"
             else "its four IDX files (" + ", ".join(s + "[.gz]" for s in IDX_FILES.values()) + ")")
    system = [f"apt-get install dataset-fashion-mnist ({', '.join(SYSTEM_DIRS[name])})"] if name in SYSTEM_DIRS else []
    fixes = system + [f"put {files} in DIR/{name}/ and set $THREEFACTOR_DATA=DIR or give --data-root DIR "
                      f"(root= in Python)",
                      f"with network access it is downloaded to {target} (checksums checked; a mirror: "
                      f"$THREEFACTOR_MIRROR)"]
    return f"{name}: dataset not found and {why}; looked in: {looked}; fixes: " + "; or ".join(fixes)


def cache_dir(name: str | None = None) -> Path:
    """Return the user cache directory, ``$XDG_CACHE_HOME/threefactor[/name]``.

    Parameters
    ----------
    name : str, optional
        Dataset name appended to the path.

    Returns
    -------
    pathlib.Path
        ``$XDG_CACHE_HOME/threefactor/<name>`` (``~/.cache`` when
        ``XDG_CACHE_HOME`` is unset or empty).
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "threefactor"
    return base / name if name else base


def search_dirs(name: str, root: str | os.PathLike | None = None) -> list[Path]:
    """List the directories searched for dataset ``name``, in order.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : str or path-like, optional
        Explicit data root: ``root/<name>`` then ``root`` itself are tried.

    Returns
    -------
    list of pathlib.Path
        ``root/<name>``, ``root``, ``$THREEFACTOR_DATA/<name>``, the system
        directories of :data:`SYSTEM_DIRS` (Fashion-MNIST:
        ``/usr/share/datasets/fashion-mnist``) and :func:`cache_dir`.
    """
    dirs = []
    if root is not None:
        dirs += [Path(root) / name, Path(root)]
    if os.environ.get("THREEFACTOR_DATA"):
        dirs.append(Path(os.environ["THREEFACTOR_DATA"]) / name)
    dirs += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    dirs.append(cache_dir(name))
    return dirs


def find_dataset(name: str, root: str | os.PathLike | None = None) -> Path | None:
    """Return the first directory of :func:`search_dirs` holding all files.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    root : str or path-like, optional
        Explicit data root, searched first.

    Returns
    -------
    pathlib.Path or None
        The directory, or None when no searched directory is complete.
    """
    for d in search_dirs(name, root):
        if d.is_dir() and not _missing_files(name, d):
            return d
    return None


def _base_urls(name: str) -> tuple[str, ...]:
    env = os.environ.get("THREEFACTOR_MIRROR")
    if env:
        return (env.rstrip("/") + "/" + name + "/",)
    value = MIRRORS[name]
    urls = (value,) if isinstance(value, str) else tuple(value)
    return tuple(u if u.endswith("/") else u + "/" for u in urls)


def _split_checksum(checksum: str) -> tuple[str, str]:
    algo, sep, digest = checksum.partition(":")
    if not sep:  # bare hex digest: md5 (32 chars) or sha256 (64 chars)
        algo, digest = ("md5" if len(checksum) == 32 else "sha256"), checksum
    return algo.lower(), digest.lower()


def download_file(
    url: str,
    dest: str | os.PathLike,
    checksum: str | None = None,
    *,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its checksum.

    Parameters
    ----------
    url : str
        Address of the file (any scheme understood by :mod:`urllib`).
    dest : str or path-like
        Final path of the file. Its directory is created if needed.
    checksum : str, optional
        Expected digest as ``"<algorithm>:<hex>"`` (e.g. ``"md5:…"``,
        ``"sha256:…"``); a bare hex string is taken as MD5 (32 digits) or
        SHA-256 (64 digits). ``None`` skips verification.
    progress : bool, default True
        Show a :mod:`tqdm` progress bar on stderr.
    timeout : float, default 60
        Socket timeout in seconds.

    Returns
    -------
    pathlib.Path
        ``dest``.

    Raises
    ------
    DataError
        On a network error, or (as the subclass :class:`ChecksumError`) on a
        checksum mismatch; the message names the file, the URL and both
        checksums, and the downloaded file is removed.
    """
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    algo, expected = _split_checksum(checksum) if checksum else ("md5", None)
    hasher = hashlib.new(algo)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, umask_mode())   # mkstemp makes 0600: the data should read like any download
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = resp.headers.get("Content-Length")
                    with tqdm(
                        total=int(total) if total and total.isdigit() else None,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                        disable=None if progress else True,   # None: none where stderr is no terminal
                        leave=False,
                    ) as bar:
                        while chunk := resp.read(_CHUNK):
                            out.write(chunk)
                            hasher.update(chunk)
                            bar.update(len(chunk))
            except (urllib.error.URLError, OSError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    exc.close()  # release the connection held by the error response
                raise DataError(f"{dest}: download from {url} failed: {exc}") from exc
        if expected is not None:
            found = hasher.hexdigest()
            if found != expected:
                raise ChecksumError(
                    f"{dest}: checksum mismatch for {url}: expected {algo} {expected}, "
                    f"found {found}; the downloaded file was removed"
                )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _fetch(name: str, filename: str, dest: Path, progress: bool) -> Path:
    checksum = CHECKSUMS.get(name, {}).get(filename)
    urls = _base_urls(name)
    for i, base in enumerate(urls):
        try:
            return download_file(base + filename, dest, checksum, progress=progress)
        except ChecksumError:
            raise
        except DataError:
            # A network failure: try the next mirror, if any.
            if i == len(urls) - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def extract_cifar10(archive: str | os.PathLike, directory: str | os.PathLike) -> Path:
    """Safely extract the CIFAR-10 python archive.

    Only the expected regular files of ``cifar-10-batches-py/`` are
    extracted (no links, absolute paths or ``..`` components are ever
    written); they go to a temporary directory that is renamed into place
    once complete.

    Parameters
    ----------
    archive : str or path-like
        Path of ``cifar-10-python.tar.gz``.
    directory : str or path-like
        Directory that will contain ``cifar-10-batches-py/``.

    Returns
    -------
    pathlib.Path
        Path of the extracted ``cifar-10-batches-py`` directory.

    Raises
    ------
    DataError
        If the archive is unreadable or lacks one of the batch files.
    """
    archive, directory = Path(archive), Path(directory)
    target = directory / CIFAR_BATCH_DIR
    wanted = {f"{CIFAR_BATCH_DIR}/{f}": f for f in CIFAR_FILES + ("batches.meta",)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{CIFAR_BATCH_DIR}.", dir=directory))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                for member in tar:
                    name = member.name.removeprefix("./")
                    if name not in wanted or not member.isfile():
                        continue
                    src = tar.extractfile(member)
                    if src is None:  # pragma: no cover - isfile() guarantees a stream
                        continue
                    with src, open(tmp / wanted[name], "wb") as out:
                        shutil.copyfileobj(src, out)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive}: cannot read archive: {exc}") from exc
        missing = [f for f in CIFAR_FILES if not (tmp / f).is_file()]
        if missing:
            raise DataError(f"{archive}: archive lacks {CIFAR_BATCH_DIR}/{missing[0]}")
        if target.exists():
            shutil.rmtree(target)
        os.chmod(tmp, umask_mode(0o777))      # mkdtemp makes 0700
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_dataset(name: str, directory: str | os.PathLike, *, progress: bool = True) -> Path:
    """Download the missing files of dataset ``name`` into ``directory``.

    Parameters
    ----------
    name : {"mnist", "fmnist", "kmnist", "cifar10"}
        Dataset to fetch.
    directory : str or path-like
        Destination directory (created if needed, and removed again, with the
        parents this call created, when a failed download leaves it empty). For the MNIST family the
        four ``*-ubyte.gz`` files land there; for CIFAR-10 the archive is
        downloaded there and extracted to ``directory/cifar-10-batches-py``.
    progress : bool, default True
        Show download progress bars.

    Returns
    -------
    pathlib.Path
        ``directory``.

    Raises
    ------
    DataError
        On network errors, checksum mismatches or a bad archive.
    ValueError
        If ``name`` is not a known dataset.
    """
    if name not in MIRRORS:
        raise ValueError(f"unknown dataset {name!r}; choose from {tuple(MIRRORS)}")
    directory = Path(directory)
    created = [p for p in (directory, *directory.parents) if not p.exists()]
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _download_into(name, directory, progress)
    except BaseException:
        for folder in created:      # deepest first: a failed download leaves no empty folder behind
            try:
                folder.rmdir()
            except OSError:         # not empty (a finished file stays for the next try), or gone
                break
        raise


def _download_into(name: str, directory: Path, progress: bool) -> Path:
    if name == "cifar10":
        archive = directory / CIFAR_ARCHIVE
        if not archive.is_file():
            _fetch(name, CIFAR_ARCHIVE, archive, progress)
        extract_cifar10(archive, directory)
        return directory
    for stem in IDX_FILES.values():
        if (directory / stem).is_file() or (directory / (stem + ".gz")).is_file():
            continue
        _fetch(name, stem + ".gz", directory / (stem + ".gz"), progress)
    return directory
