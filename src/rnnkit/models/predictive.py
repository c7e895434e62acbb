"""Predictive text measured on held-out text, as a phone keyboard would use a language model.

For every word of the text (``<eos>`` and ``<unk>`` excluded: nobody types them) the model sees the
text before it and suggests its ``k`` most likely words (special tokens never suggested):

* **top-1 / top-k accuracy**: the word is the first / among the ``k`` suggestions before any of its
  letters is typed;
* **keystroke savings**: the user types the word letter by letter; before each letter the keyboard
  shows the top ``k`` words that start with the letters typed so far, and the user accepts the right
  one as soon as it appears. The savings are the letters not typed, as a share of all the letters
  of the words (spaces not counted).

This module covers word-level models, whose next-word distribution does not change while a word is
being typed. Character and subword models suggest through :func:`rnnkit.models.text_generation.complete`.
"""

from __future__ import annotations

import bisect
from typing import NamedTuple

import torch

__all__ = ["PredictiveScore", "predictive_metrics"]


class PredictiveScore(NamedTuple):
    top1: float
    topk: float
    keystroke_savings: float
    words: int
    k: int


@torch.no_grad()
def _next_log_probs(model, ids: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """(T-1, V) log-probabilities of token t+1 given tokens <= t, read in order with the state carried."""
    model.eval()
    device = next(model.parameters()).device
    state, outs = None, []
    for t in range(0, ids.numel() - 1, chunk):
        out = model(ids[t:min(t + chunk, ids.numel() - 1)].view(1, -1).to(device), state=state)
        outs.append(torch.log_softmax(out.logits[0].float(), -1).cpu())
        state = out.state
    return torch.cat(outs)


def _savings(word: str, probs: torch.Tensor, sorted_words: list[str], sorted_ids: torch.Tensor, k: int) -> int:
    """Letters of ``word`` saved by accepting it once it is among the top ``k`` with the typed prefix."""
    for typed in range(len(word)):
        prefix = word[:typed]
        lo = bisect.bisect_left(sorted_words, prefix)
        hi = bisect.bisect_left(sorted_words, prefix + "\U0010ffff")
        best = torch.topk(probs[sorted_ids[lo:hi]], min(k, hi - lo)).indices
        if word in {sorted_words[lo + int(j)] for j in best}:
            return len(word) - typed
    return 0


def predictive_metrics(model, text: str, k: int = 3, max_words: int | None = None) -> PredictiveScore:
    """Top-1/top-k next-word accuracy and keystroke savings of a word-level model on ``text``."""
    tok = model.tokenizer
    if getattr(tok, "type_name", "") != "word":
        raise ValueError(f"predictive_metrics needs a word-level model, got a {type(tok).__name__}")
    ids = torch.tensor(tok.encode(text))
    logp = _next_log_probs(model, ids)
    vocab = tok.vocab
    specials = {i for i in (tok.unk_id, tok.eos_id) if i is not None}
    logp[:, list(specials)] = float("-inf")
    order = sorted((w, i) for i, w in enumerate(vocab) if i not in specials)
    sorted_words, sorted_ids = [w for w, _ in order], torch.tensor([i for _, i in order])
    top1 = topk = saved = letters = words = 0
    for pos in range(ids.numel() - 1):
        target = int(ids[pos + 1])
        if target in specials:
            continue
        if max_words is not None and words >= max_words:
            break
        probs = logp[pos]
        best = torch.topk(probs, k).indices.tolist()
        words += 1
        top1 += best[0] == target
        topk += target in best
        word = vocab[target]
        letters += len(word)
        saved += _savings(word, probs, sorted_words, sorted_ids, k)
    if not words:
        raise ValueError("predictive_metrics: the text has no words the model could be scored on")
    return PredictiveScore(top1 / words, topk / words, saved / letters, words, k)
