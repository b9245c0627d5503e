"""minilm_sentiment: the classifier (the pretrained encoder, mean pooling, a linear head), distill's
student cut from it, and its pooled embeddings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from stages.errors import ParamsError
from stages.models.minilm_model_dir import model_dir, offline
from stages.models.minilm_tokens import INPUTS, lengths, trim
from stages.models.options import MiniLMParams
from stages.training import inference_threads

if TYPE_CHECKING:
    import torch

EMBED_BATCH = 64  # rows per encoder call when embedding the train split (fixed: same sums)


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


def build(p: MiniLMParams, num_classes: int) -> torch.nn.Module:
    """The pretrained encoder (its first `layers` layers when set) and a fresh linear head."""
    import torch

    path = model_dir(p)
    offline()
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


def student(
    teacher: Any, p: MiniLMParams, pick: Callable[[int, int], list[int]]
) -> torch.nn.Module:
    """distill's student, from the trained teacher's own weights: a copy with `p.layers` of its
    encoder layers, the ones `pick(teacher layers, student layers)` names (distill spreads them
    evenly by default), and the teacher's embeddings and head. All of it trains but the
    word-embedding table (30,522 x 384, two thirds of a 3-layer student): a few thousand
    snippets would move only the rows of their own words, and its dense gradient and optimizer
    step cost about as much as the layers' (measured: half the time per step)."""
    import copy

    from torch import nn

    module = copy.deepcopy(teacher)
    layers = module.encoder.encoder.layer
    keep = pick(len(layers), p.layers or len(layers))
    module.encoder.encoder.layer = nn.ModuleList([layers[i] for i in keep])
    module.encoder.config.num_hidden_layers = len(keep)
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
