"""The GGUF conversion cache (alpaca_cot/model/gguf.py) without a GGUF model: the conversion itself is replaced
by a stand-in, to check that the cache folder is written through io's folder writer: complete or absent, no
temporaries left, converted once, and kept when another process converted it first."""

import os

import pytest

from alpaca_cot import io
from alpaca_cot.model import gguf


@pytest.fixture
def gguf_file(tmp_path, monkeypatch):
    monkeypatch.setenv("ALPACA_COT_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF not really")
    return path


def test_converts_once_into_a_complete_folder(gguf_file, monkeypatch):
    calls = []

    def convert(source, out):
        calls.append(out.name)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf, "_convert", convert)
    folder = gguf.checkpoint(gguf_file, log=lambda m: None)
    assert gguf.checkpoint(gguf_file, log=lambda m: None) == folder and len(calls) == 1
    assert calls[0] == f".{os.path.basename(folder)}.saving-{os.getpid()}"
    assert sorted(p.name for p in gguf.cache_dir().iterdir()) == [os.path.basename(folder)]
    assert (gguf.cache_dir() / os.path.basename(folder) / io.MARKER).is_file()


def test_a_failed_conversion_leaves_nothing(gguf_file, monkeypatch):
    def convert(source, out):
        (out / "model.safetensors").write_text("half")
        raise RuntimeError("the conversion failed")

    monkeypatch.setattr(gguf, "_convert", convert)
    with pytest.raises(RuntimeError, match="the conversion failed"):
        gguf.checkpoint(gguf_file, log=lambda m: None)
    assert list(gguf.cache_dir().iterdir()) == []


def test_a_conversion_another_process_finished_first_is_kept(gguf_file, monkeypatch):
    def convert(source, out):
        (out / "config.json").write_text("ours")
        theirs = out.with_name(out.name.split(".saving-")[0].lstrip("."))
        theirs.mkdir()
        (theirs / "config.json").write_text("theirs")

    monkeypatch.setattr(gguf, "_convert", convert)
    folder = gguf.checkpoint(gguf_file, log=lambda m: None)
    assert (gguf.cache_dir() / os.path.basename(folder) / "config.json").read_text() == "theirs"
    assert len(list(gguf.cache_dir().iterdir())) == 1
