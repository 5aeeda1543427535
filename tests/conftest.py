"""Fixtures for every test directory. numpy only: tests/unit runs with pyspark absent.

``float32_forward_bound`` is how tests compare float32 forward passes: BLAS promises neither the
summation order of a dot product nor that it stays the same across batch sizes, kernels (SIMD
width, blocking) or partitionings, so two correct runs may differ in the last bits (1.5e-7 was
seen across batch sizes). A test compares each run to a float64 reference instead, within a bound
that holds for every summation order: the classic error analysis of a sum of ``n`` float32
products, ``|fl(h @ w) - h @ w| <= gamma(n) * (|h| @ |w|)``, carried through the layers.

``installed_package`` is the package as a user gets it: a wheel built from this checkout and installed into a folder
outside it, for the tests of the ``spark-compress`` command (tests/spark/test_cli.py and
tests/cluster/test_cli_cluster.py).

The wheel is built from a copy of the sources (so the checkout gets no ``build/`` or
``*.egg-info``) without build isolation (no network: the test extra holds setuptools) and
installed with ``pip install --no-deps --target``; its dependencies are the venv's. Commands run
it as ``DIR/bin/spark-compress`` with ``PYTHONPATH=DIR``, from a working directory outside the
checkout, so ``spark_compress`` is imported from ``DIR``, not from the checkout.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
import pytest

U32 = 2.0 ** -24
"""Unit roundoff of float32 (round to nearest): one basic operation is off by at most this,
relative to its exact result."""

TRANSCENDENTAL = 8 * U32
"""Relative error allowed for numpy's float32 ``exp`` and ``tanh``: 4 ulp (numpy documents at
most 2.52 ulp for its SIMD float32 exp; libm's are within 1 ulp), and 1 ulp <= 2 * U32 relative."""


def gamma(n: int) -> float:
    """``n u / (1 - n u)``: the relative error bound of ``n`` float32 roundings in a row."""
    return n * U32 / (1 - n * U32)


def _combine64(vectors: np.ndarray, combiner: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference and rounding bound of :func:`spark_compress.core.model._combine` (float32)."""
    if combiner == "first":
        return vectors[:, 0, :], np.zeros_like(vectors[:, 0, :])
    bag = vectors.shape[1]
    total = vectors.sum(axis=1)
    err = gamma(bag) * np.abs(vectors).sum(axis=1)  # bag - 1 additions, then the mean's division
    if combiner == "sum":
        return total, err
    return total / bag, err / bag


def _activation_bound(z: np.ndarray, ez: np.ndarray, activation: str):
    """Exact ``activation(z)`` and a bound on |computed - exact| when the computed input is
    within ``ez`` of ``z`` (the function's Lipschitz constant, then its own float32 rounding)."""
    if activation == "identity":
        return z, ez
    if activation == "relu":
        return np.maximum(z, 0.0), ez  # 1-Lipschitz and exact on floats
    if activation == "tanh":
        t = np.tanh(z)
        return t, ez * (1 + TRANSCENDENTAL) + TRANSCENDENTAL * np.abs(t)
    if activation == "sigmoid":
        p = 1 / (1 + np.exp(-z))
        # 1/4-Lipschitz. Rounding: exp (TRANSCENDENTAL), an addition and a division, relative
        # to p for the two-branch form; the scorer's hidden form (1 + tanh(z/2)) / 2 adds at most
        # TRANSCENDENTAL / 2 + U32 absolute. Both are counted, so either form is covered.
        shifted = ez / 4
        rounding = (2 * TRANSCENDENTAL + 3 * U32) * (p + shifted) + TRANSCENDENTAL / 2 + U32
        return p, shifted + rounding
    if activation == "softmax":
        m = z.max(axis=1, keepdims=True)
        e = np.exp(z - m)
        p = e / e.sum(axis=1, keepdims=True)
        # Moving each logit by at most d moves p_i by a factor within exp(+-2d).
        d = ez.max(axis=1, keepdims=True)
        shifted = p * np.expm1(2 * d)
        # Rounding: z - max (relative U32 of the difference, which exp turns into an absolute
        # error of the exponent), exp, the row sum of k terms, the division.
        k = z.shape[1]
        per_term = U32 * (np.abs(z - m) + 2 * d) + TRANSCENDENTAL
        rel = per_term + (p * per_term).sum(axis=1, keepdims=True) + gamma(k) + U32
        return p, shifted + rel * (p + shifted)
    raise ValueError(f"unknown activation {activation!r}")


def forward_reference_and_bound(
    model, x: np.ndarray, ids: Mapping[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(reference, bound)`` for ``forward(model, x, ids)``, both float64 ``(n, k)``.

    ``reference`` is the forward pass of the model's float32 parameters on ``float32(x)``
    computed in float64 (exact to about 1e-16 relative, far below float32 rounding); ``bound``
    bounds ``|forward(...) - reference|`` elementwise for any batch size, BLAS kernel and
    summation order. Two float32 runs are therefore within ``2 * bound`` of each other.
    """
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    parts, errs = [x], [np.zeros_like(x)]
    for emb in model.embeddings:
        a = np.asarray(ids[emb.input])
        a = a[:, None] if a.ndim == 1 else a
        table = np.asarray(emb.table, dtype=np.float32).astype(np.float64)
        h, e = _combine64(table[a], emb.combiner)
        parts.append(h)
        errs.append(e)
    h, e = np.concatenate(parts, axis=1), np.concatenate(errs, axis=1)
    for layer in model.layers:
        w = np.asarray(layer.weight, dtype=np.float32).astype(np.float64)
        b = (np.zeros(w.shape[1]) if layer.bias is None
             else np.asarray(layer.bias, dtype=np.float32).astype(np.float64))
        z = h @ w + b
        # n products summed in any order, plus the bias: n + 1 roundings on the magnitudes.
        magnitude = (np.abs(h) + e) @ np.abs(w) + np.abs(b)
        ez = e @ np.abs(w) + gamma(w.shape[0] + 1) * magnitude
        h, e = _activation_bound(z, ez, layer.activation)
    assert np.all(np.isfinite(e)), "the bound is only derived for finite inputs"
    return h, e


@pytest.fixture(scope="session")
def float32_forward_bound():
    """:func:`forward_reference_and_bound`: ``(reference, bound)`` for a model and its inputs."""
    return forward_reference_and_bound


def assert_within_float32_rounding(got, reference, bound, *, factor: float = 1.0) -> None:
    """``|got - reference| <= factor * bound`` elementwise, with the worst element reported."""
    got = np.asarray(got, dtype=np.float64)
    excess = np.abs(got - reference) - factor * bound
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else None
    assert excess.size == 0 or excess[worst] <= 0, (
        f"element {worst}: got {got[worst]!r}, reference {reference[worst]!r}, "
        f"difference {abs(got[worst] - reference[worst]):.3e} > allowed "
        f"{factor * bound[worst]:.3e} (float32 rounding bound)"
    )


@pytest.fixture(scope="session")
def within_float32_rounding():
    """:func:`assert_within_float32_rounding`."""
    return assert_within_float32_rounding


REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "spark_compress")
PIP_TIMEOUT = 600


@dataclasses.dataclass(frozen=True)
class InstalledPackage:
    """A wheel and its ``--target`` install."""

    wheel: Path
    target: Path

    @property
    def command(self) -> Path:
        return self.target / "bin" / "spark-compress"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a user of the install has: ``PYTHONPATH`` the install, Spark bound
        to loopback, and none of the variables the command sets itself (``SPARK_CONF_DIR``,
        ``PYSPARK_PYTHON``, ``SPARK_HOME``), so its defaults are what is tested."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("SPARK_CONF_DIR", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON",
                            "SPARK_HOME", "SPARK_COMPRESS_SUMMARY_FILE")}
        env.update(PYTHONPATH=str(self.target), SPARK_LOCAL_IP="127.0.0.1")
        env.update(extra)
        return env

    def run(self, *args: str, cwd: Path, timeout: float = 900, **env: str
            ) -> subprocess.CompletedProcess:
        """``spark-compress args`` from ``cwd``, output captured as text."""
        return subprocess.run([str(self.command), *map(str, args)], cwd=cwd, env=self.env(**env),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)


def build_wheel(dest: Path) -> Path:
    """Build the project's wheel into ``dest`` from a copy of the sources; return its path."""
    src = dest / "src"
    src.mkdir(parents=True)
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = dest / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
                   check=True, timeout=PIP_TIMEOUT, capture_output=True, text=True)
    (wheel,) = out.glob("spark_compress-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed_package(tmp_path_factory: pytest.TempPathFactory) -> InstalledPackage:
    root = tmp_path_factory.mktemp("package")
    try:
        wheel = build_wheel(root)
        target = root / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                        "--disable-pip-version-check", "-q", "--target", str(target),
                        str(wheel)], check=True, timeout=PIP_TIMEOUT, capture_output=True,
                       text=True)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"{' '.join(e.cmd)} exited with {e.returncode}:\n{e.stdout}\n{e.stderr}")
    return InstalledPackage(wheel, target)
