"""The transformers versions the remote code supports, and a side install of the oldest one to test against.

`MIN_TRANSFORMERS_VERSION` is the single place the supported range starts; the model card, the README and the
tests read it from here. The side install shares the running environment's torch, numpy, safetensors, PIL, ...
and adds only the packages below (their versions as required by that transformers release) to a target folder
that is put first on `sys.path`.
"""

import subprocess
import sys
from pathlib import Path


MIN_TRANSFORMERS_VERSION = "5.10.1"

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
    target = side_install_dir(cache_dir)
    marker = target / ".complete"
    if marker.is_file():
        return target
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    command += ["--upgrade", "--disable-pip-version-check", *MIN_VERSION_SIDE_PACKAGES]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"could not install {' '.join(MIN_VERSION_SIDE_PACKAGES)}:\n{result.stderr[-4000:]}")
    marker.write_text("\n".join(MIN_VERSION_SIDE_PACKAGES) + "\n")
    return target
