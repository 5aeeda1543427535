"""The package as a user gets it: a wheel built from this checkout and installed into a folder
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

import pytest

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
