"""minilm_sentiment: the encoder's tokenizer, and the token ids and attention masks it gives
(padded to max_length, trimmed per batch to the longest real row)."""

from __future__ import annotations

from typing import Any

import numpy as np

from stages.models.minilm_model_dir import model_dir, offline
from stages.models.options import MiniLMParams

IDS = "input_ids"
MASK = "attention_mask"
INPUTS = [IDS, MASK]


def tokenizer(p: MiniLMParams) -> Any:
    offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir(p)), local_files_only=True)


def tokens(p: MiniLMParams, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
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
