"""The adaptive clue filter: a small utility head and the keep rule.

Score (DESIGN.md): u_i = sigmoid(MLP([h_ci; h_q; h_ci * h_q])) where h_ci is the mean
last-layer hidden state over clue i's tokens and h_q over the question+options tokens.
Keep rule (``select``): keep u_i >= max(tau_min, rho * max_j u_j); always at least one
(the best), at most ``m_max`` (the best ones; ties keep the earlier clue).

**Training-free mode** (no trained head, ``similarity_scores``): the utility is the
rescaled cosine similarity between h_ci and h_q, u_i = (1 + cos(h_ci, h_q)) / 2 in
[0, 1].  Chosen over leave-one-out answer log-prob drops because it needs no extra
forward passes (the filter stays free, as the method asks) and it is defined for any
backbone; its weakness is that it measures relevance to the question, not necessity
for the answer, so a redundant but relevant clue scores high.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from .errors import ModelError
from .schema import FilterSettings

DEFAULT_HIDDEN = 256  # MLP width; the head stays ~0.1-1 M parameters for 128-4096-d backbones
HEAD_FORMAT = "cluenet-filter-head"
HEAD_VERSION = 1


class FilterHead(nn.Module):
    """u = sigmoid(MLP([h_c; h_q; h_c * h_q])): a two-layer MLP on backbone hidden states."""

    def __init__(self, hidden_size: int, mlp_hidden: int = DEFAULT_HIDDEN, dropout: float = 0.0):
        super().__init__()
        if hidden_size < 1 or mlp_hidden < 1:
            raise ModelError(f"filter head sizes must be >= 1, got hidden_size={hidden_size}, mlp_hidden={mlp_hidden}")
        self.hidden_size = int(hidden_size)
        self.mlp_hidden = int(mlp_hidden)
        self.dropout = float(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(3 * hidden_size, mlp_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_hidden, 1)
        )

    def logits(self, h_clues: torch.Tensor, h_q: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores [N] for clue states [N, D] and a question state [D] (BCE-with-logits training)."""
        self.check_hidden(h_clues.shape[-1])
        h_clues = h_clues.to(self.mlp[0].weight.dtype)
        h_q = h_q.to(h_clues).expand_as(h_clues)
        return self.mlp(torch.cat([h_clues, h_q, h_clues * h_q], dim=-1)).squeeze(-1)

    def forward(self, h_clues: torch.Tensor, h_q: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(h_clues, h_q))

    @torch.no_grad()
    def score(self, h_clues: torch.Tensor, h_q: torch.Tensor) -> list[float]:
        """Utilities in [0, 1], one per clue, as plain floats (inference)."""
        if h_clues.shape[0] == 0:
            return []
        return [float(u) for u in self.forward(h_clues, h_q).float().cpu()]

    def check_hidden(self, size: int) -> None:
        if size != self.hidden_size:
            raise ModelError(f"filter head expects hidden size {self.hidden_size}, the backbone gives {size}")

    def config(self) -> dict:
        return {"format": HEAD_FORMAT, "version": HEAD_VERSION, "hidden_size": self.hidden_size,
                "mlp_hidden": self.mlp_hidden, "dropout": self.dropout}

    def save(self, path: str | Path) -> Path:
        """Write the weights as safetensors with the config in the file's metadata."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path), metadata={"cluenet": json.dumps(self.config())})
        return path

    @classmethod
    def load(cls, path: str | Path, hidden_size: int | None = None) -> "FilterHead":
        """Load a head written by ``save``; ``hidden_size`` (the backbone's) is checked when given."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"filter head file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {}).get("cluenet", "{}"))
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises several types on a bad file
            raise ModelError(f"cannot read filter head {path}: {exc}") from exc
        if meta.get("format") != HEAD_FORMAT:
            raise ModelError(f"{path} is not a ClueNet filter head (metadata format {meta.get('format')!r})")
        head = cls(int(meta["hidden_size"]), int(meta["mlp_hidden"]), float(meta.get("dropout", 0.0)))
        if hidden_size is not None:
            head.check_hidden(int(hidden_size))
        head.load_state_dict(state)
        return head.eval()


def similarity_scores(h_clues: torch.Tensor, h_q: torch.Tensor) -> list[float]:
    """Training-free utility: (1 + cos(h_ci, h_q)) / 2 per clue (see the module docstring)."""
    if h_clues.shape[0] == 0:
        return []
    cos = torch.nn.functional.cosine_similarity(h_clues.float(), h_q.float().expand_as(h_clues), dim=-1)
    return [float(u) for u in ((1.0 + cos) / 2.0).clamp(0.0, 1.0).cpu()]


def threshold(scores: Sequence[float], settings: FilterSettings) -> float | None:
    """The effective cut max(tau_min, rho * max_j u_j); None when there are no scores."""
    if not scores:
        return None
    return max(settings.tau_min, settings.rho * max(scores))


def select(scores: Sequence[float], settings: FilterSettings) -> list[bool]:
    """Kept mask for ``scores`` under ``settings`` (pure function).

    Keeps u_i >= threshold; if none passes, keeps the single best; if more than
    ``m_max`` pass, keeps the ``m_max`` best (stable: equal scores keep the earlier).
    """
    if not scores:
        return []
    cut = threshold(scores, settings)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    passing = [i for i in order if scores[i] >= cut]
    chosen = set((passing or order[:1])[: settings.m_max])
    return [i in chosen for i in range(len(scores))]
