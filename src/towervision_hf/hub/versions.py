"""The transformers versions the remote code supports, and side installs of other releases to test it against.

`MIN_TRANSFORMERS_VERSION` (defined in `configuration_towervision.py`, which enforces it at import) is the single
place the supported range starts; the model card, the README and the tests read it from here. A side install
shares the running environment's torch, numpy, safetensors, PIL, ... and adds only the packages that release needs
beyond them to a target folder that is put first on `sys.path`: pinned below for the oldest release, resolved by
pip at install time for the newest release on the package registry.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ..model.configuration_towervision import MIN_TRANSFORMERS_VERSION


# `pip install --target DIR --no-deps` set that runs transformers MIN_TRANSFORMERS_VERSION on top of this environment.
MIN_VERSION_SIDE_PACKAGES = (
    f"transformers=={MIN_TRANSFORMERS_VERSION}",
    "tokenizers==0.22.2",
    "huggingface_hub==1.5.0",
    "httpx==0.28.1",
    "httpcore==1.0.9",
    "certifi==2026.10.18",
)


def side_install_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / f"transformers-{MIN_TRANSFORMERS_VERSION}"


def install_min_transformers(cache_dir: Path, timeout: float = 600) -> Path:
    """Install `MIN_VERSION_SIDE_PACKAGES` into `cache_dir/transformers-<version>` (once) and return that folder.

    Raises `RuntimeError` with pip's output when the installation fails.
    """
    return _side_install(MIN_VERSION_SIDE_PACKAGES, side_install_dir(cache_dir), timeout)


def _pip(*args: str, timeout: float) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)


def _side_install(packages, target: Path, timeout: float) -> Path:
    """`pip install --no-deps --target target *packages`, once: a `.complete` marker lists what was installed."""
    marker = target / ".complete"
    if not marker.is_file():
        installed = _pip("install", "--no-deps", "--upgrade", "--target", str(target), *packages, timeout=timeout)
        if installed.returncode != 0:
            raise RuntimeError(f"could not install {' '.join(packages)}:\n{installed.stderr[-4000:]}")
        marker.write_text("\n".join(packages) + "\n")
    return target


def install_newest_transformers(cache_dir: Path, timeout: float = 600) -> tuple[str, Path]:
    """Side-install the newest transformers release the package registry serves today; never pinned.

    pip resolves the release against this environment (`--dry-run --report`): only the packages whose installed
    version does not satisfy it are installed, with `--no-deps`, into `cache_dir/transformers-<version>`.

    Returns:
        `(version, folder)`; `folder` is `None` when the installed transformers is already the newest release.

    Raises:
        RuntimeError: with pip's output, when resolving or installing fails.
    """
    with tempfile.TemporaryDirectory() as work:
        report_path = Path(work) / "report.json"
        resolved = _pip(
            "install", "--dry-run", "--upgrade", "--upgrade-strategy", "only-if-needed",
            "--report", str(report_path), "transformers", timeout=timeout,
        )  # fmt: skip
        if resolved.returncode != 0:
            raise RuntimeError(f"could not resolve the newest transformers release:\n{resolved.stderr[-4000:]}")
        report = json.loads(report_path.read_text())
    pins = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in report["install"]}
    if "transformers" not in pins:  # the installed transformers is the newest release
        import transformers

        return transformers.__version__, None
    version = pins["transformers"]
    packages = [f"{name}=={pinned}" for name, pinned in sorted(pins.items())]
    return version, _side_install(packages, Path(cache_dir) / f"transformers-{version}", timeout)
