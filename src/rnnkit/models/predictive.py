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
def _next_log_probs(model, ids: torch.Tensor, chunk: int = 256):
    """Yield (start, (n, V) log-probabilities of tokens start+1.. given the text before), in order,
    with the state carried: one chunk at a time, so a long text never holds T x V numbers."""
    model.eval()
    device = next(model.parameters()).device
    state = None
    for t in range(0, ids.numel() - 1, chunk):
        out = model(ids[t:min(t + chunk, ids.numel() - 1)].view(1, -1).to(device), state=state)
        state = out.state
        yield t, torch.log_softmax(out.logits[0].float(), -1).cpu()


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


def _score_chunk(logp, targets, specials, vocab, sorted_words, sorted_ids, k, counts, max_words) -> bool:
    """Add one chunk's figures to ``counts``; False once ``max_words`` words were scored."""
    best = torch.topk(logp, k, dim=-1).indices  # (n, k)
    for pos, target in enumerate(targets.tolist()):
        if target in specials:
            continue
        if max_words is not None and counts["words"] >= max_words:
            return False
        word = vocab[target]
        counts["words"] += 1
        counts["top1"] += int(best[pos, 0]) == target
        counts["topk"] += target in best[pos].tolist()
        counts["letters"] += len(word)
        counts["saved"] += _savings(word, logp[pos], sorted_words, sorted_ids, k)
    return True


def predictive_metrics(model, text: str, k: int = 3, max_words: int | None = None) -> PredictiveScore:
    """Top-1/top-k next-word accuracy and keystroke savings of a word-level model on ``text``."""
    tok = model.tokenizer
    if getattr(tok, "type_name", "") != "word":
        raise ValueError(f"predictive_metrics needs a word-level model, got a {type(tok).__name__}")
    n_words = tok.vocab_size - sum(i is not None for i in (tok.unk_id, tok.eos_id))
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n_words:
        raise ValueError(f"predictive_metrics: k must be an int in [1, {n_words}] (the words of the "
                         f"vocabulary), got {k!r}")
    ids = torch.tensor(tok.encode(text))
    vocab = tok.vocab
    specials = [i for i in (tok.unk_id, tok.eos_id) if i is not None]
    order = sorted((w, i) for i, w in enumerate(vocab) if i not in specials)
    sorted_words, sorted_ids = [w for w, _ in order], torch.tensor([i for _, i in order])
    counts = {"top1": 0, "topk": 0, "saved": 0, "letters": 0, "words": 0}
    modes = [(m, m.training) for m in model.modules()]
    try:
        for start, logp in _next_log_probs(model, ids):
            logp[:, specials] = float("-inf")
            targets = ids[start + 1:start + 1 + logp.shape[0]]
            if not _score_chunk(logp, targets, set(specials), vocab, sorted_words, sorted_ids, k, counts, max_words):
                break
    finally:  # the model's own mode again (it was left in evaluation mode), as generate and complete do
        for m, mode in modes:
            m.train(mode)
    top1, topk, saved, letters, words = (counts[n] for n in ("top1", "topk", "saved", "letters", "words"))
    if not words:
        raise ValueError("predictive_metrics: the text has no words the model could be scored on")
    return PredictiveScore(top1 / words, topk / words, saved / letters, words, k)
