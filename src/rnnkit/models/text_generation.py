"""Text generation and predictive text for :class:`~rnnkit.models.language_model.LanguageModel`.

* :func:`stream` yields text pieces as tokens are sampled (greedy, temperature, top-k, top-p,
  repetition penalty; reproducible with ``seed``); :func:`generate` joins them.
* :func:`complete` returns the ``k`` most likely words to type next (the whole word when the text
  ends inside one). A word-level model ranks its vocabulary directly; a character or subword model continues
  the text with a small beam until each hypothesis reaches a word boundary (a subword model from the
  token boundary before the word being typed: :func:`_heal`).

Unknown characters or words in a prompt are mapped to ``<unk>`` when the tokenizer has one (and
reported through :func:`unknown_in`); a tokenizer without ``<unk>`` refuses them with the offending
characters named.
"""

from __future__ import annotations

import math
import warnings
from typing import Iterator, NamedTuple

import torch

from rnnkit.data._tokenizer_base import is_word_char, trailing_word
from rnnkit.errors import ConfigError, UnknownTokensWarning
from rnnkit.models.sampling import SamplingConfig, sample_next

__all__ = ["Completion", "stream", "generate", "complete", "unknown_in", "prompt_ids"]


MAX_COMPLETIONS = 100


class Completion(NamedTuple):
    word: str
    probability: float


def _tokenizer(model):
    tok = getattr(model, "tokenizer", None)
    if tok is None or isinstance(tok, str):
        raise ConfigError("this language model has no tokenizer: train it with rnnkit or pass "
                          "LanguageModel(..., tokenizer=...)")
    return tok


def unknown_in(model, text: str) -> set[str]:
    """Characters (or words) of ``text`` the model's tokenizer does not know."""
    return set(_tokenizer(model).unknown_tokens(text))


def unknown_note(model, text: str) -> str | None:
    """``"N unknown character(s)/word(s) mapped to <unk>: 'x' 'y'"`` for the part of ``text`` the model
    reads (a word model's completion prefix without the word being typed, which is matched, not read),
    or ``None`` when every token is known or the vocabulary has no ``<unk>`` (encoding then refuses)."""
    tok = _tokenizer(model)
    if not isinstance(text, str) or not text or getattr(tok, "unk_id", None) is None:
        return None
    unknown = unknown_in(model, text)
    if not unknown:
        return None
    return (f"{len(unknown)} unknown character(s)/word(s) mapped to <unk>: "
            + " ".join(repr(u) for u in sorted(unknown)[:10]))


def read_part(model, prefix: str) -> str:
    """The part of a completion ``prefix`` the model reads: a word model matches the word being typed
    against its vocabulary instead of reading it."""
    word_model = getattr(_tokenizer(model), "type_name", "") == "word"
    return prefix[: len(prefix) - len(trailing_word(prefix))] if word_model else prefix


def warn_unknown(model, text: str, stacklevel: int = 3) -> None:
    """The documented policy for unknown input, in Python: read as ``<unk>`` and say so."""
    note = unknown_note(model, text)
    if note:
        warnings.warn(note, UnknownTokensWarning, stacklevel=stacklevel)


def prompt_ids(model, prompt: str) -> list[int]:
    """Token ids of ``prompt``; an empty prompt starts from ``<eos>`` where the vocabulary has one."""
    tok = _tokenizer(model)
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    ids = tok.encode(prompt) if prompt else []
    if not ids:
        eos = getattr(tok, "eos_id", None)
        if eos is None:
            raise ConfigError("empty prompt: this model has no start token, give it at least one character")
        ids = [eos]
    return ids


PROMPT_CHUNK = 256
"""Prompt tokens fed per call: the model forms logits for every position fed, of which only the last
is used, so a 30,000-word prompt over a 4,518-word vocabulary held 530 MB of them in one call."""


@torch.no_grad()
def _advance(model, ids: list[int], state=None):
    """Feed ``ids`` and return (log-probabilities of the next token (V,), state)."""
    device = next(model.parameters()).device
    t = torch.tensor([ids], device=device)
    for start in range(0, t.shape[1], PROMPT_CHUNK):  # the state carries across chunks
        out = model(t[:, start:start + PROMPT_CHUNK], state=state)
        state = out.state
    return torch.log_softmax(out.logits[0, -1].float(), -1), out.state


def stream(model, prompt: str, max_tokens: int, sampling: SamplingConfig | None = None,
           seed: int | None = None) -> Iterator[str]:
    """Yield the decoded text of each new token as it is sampled."""
    if not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ConfigError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not -2**63 <= seed < 2**64):
        raise ConfigError(f"seed must be an int in [-2**63, 2**64), got {seed!r}")
    sampling = sampling or SamplingConfig()
    tok = _tokenizer(model)
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    # a subword prompt ending in a space or inside a word is backed off to the token boundary before it
    # and the first tokens must spell what was typed (see _heal): "the " gave "the  fox", two spaces
    healed = _heal(tok, prompt, trailing_word(prompt)) if isinstance(prompt, str) and prompt else None
    need = healed[1] if healed else ""
    ids = prompt_ids(model, healed[0] if healed else prompt)
    try:
        logp, state = _advance(model, ids)
        # the repetition penalty needs the tokens seen so far (as a set: the penalty applies once per
        # token); a tensor of the whole history per token cost O(length) each, 45 us at 1,000 tokens
        seen = set(ids) if sampling.repetition_penalty != 1.0 else None
        banned = getattr(tok, "unk_id", None)  # never write <unk> into generated text
        prev, spelled, produced = ids[-1], "", 0
        while produced < max_tokens:
            if banned is not None:
                logp[banned] = -math.inf
            if len(spelled) < len(need):
                allowed = _spelling(tok, need[len(spelled):])
                if allowed.any():
                    logp = logp.masked_fill(~allowed, -math.inf)
                else:  # no token goes on (rare: _heal checked the first): the typed rest is given up
                    need = spelled
            nxt = sample_next(logp, sampling, None if seen is None else torch.tensor(sorted(seen)), gen)
            if seen is not None:
                seen.add(nxt)
            piece = _piece(tok, prev, nxt)
            healing = len(spelled) < len(need)
            if healing:  # what the prompt already holds is not yielded again
                spelled += piece
                piece = spelled[len(need):]
            if piece or not healing:  # a token that only re-spells the typed word is no new token: it
                produced += 1         # was yielded as "" and counted (generate(prompt, 1) gave "")
                yield piece
            prev = nxt
            logp, state = _advance(model, [nxt], state)
    finally:
        model.train(was_training)


def _piece(tok, prev: int, nxt: int) -> str:
    """The text ``nxt`` adds after ``prev``: what decoding the pair adds to decoding ``prev`` alone, so
    that a word tokenizer's spaces (and newlines at ``<eos>``) come out; a token decoded on its own
    when the pair does not extend it (a byte-level piece of a longer character)."""
    alone, pair = tok.decode([prev]), tok.decode([prev, nxt])
    return pair[len(alone):] if pair.startswith(alone) else tok.decode([nxt])


def generate(model, prompt: str, max_tokens: int, sampling: SamplingConfig | None = None,
             seed: int | None = None) -> str:
    """The prompt's continuation as one string (without the prompt)."""
    return "".join(stream(model, prompt, max_tokens, sampling, seed))


def complete(model, prefix: str, k: int = 3, beam_size: int = 8, max_chars: int = 24) -> list[Completion]:
    """The ``k`` most likely next words (the whole word, if ``prefix`` ends inside one), best first."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_COMPLETIONS:
        # the beam is at least k wide: k = 100000 ran for minutes
        raise ConfigError(f"k must be an int in [1, {MAX_COMPLETIONS}], got {k!r}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    tok = _tokenizer(model)
    was_training = model.training
    model.eval()
    try:
        if getattr(tok, "type_name", "") == "word":
            return _complete_words(model, tok, prefix, k)
        return _complete_beam(model, tok, prefix, k, max(beam_size, k), max_chars)
    finally:
        model.train(was_training)


def _complete_words(model, tok, prefix: str, k: int) -> list[Completion]:
    partial = trailing_word(prefix)
    context = prefix[: len(prefix) - len(partial)]
    logp, _ = _advance(model, prompt_ids(model, context.rstrip(" ")))
    probs = logp.exp()
    specials = {i for i in (tok.unk_id, getattr(tok, "eos_id", None)) if i is not None}
    vocab = tok.vocab
    typed = partial
    if getattr(tok, "lower", False) and len(partial.lower()) == len(partial):  # a lower-cased vocabulary:
        typed = partial.lower()  # "The Ki" matched no word ('İ' lower-cases to two characters: as typed)
    # words only (a whitespace-split vocabulary also holds "quick." and "--"), as the beam's suggestions
    allowed = [i for i, w in enumerate(vocab) if i not in specials and w.startswith(typed)
               and all(is_word_char(ch) for ch in w)]
    if not allowed:
        return []
    idx = torch.tensor(allowed)
    p = probs[idx]
    p = p / p.sum().clamp_min(1e-30)  # P(word | the letters typed), as the beam gives it
    top = torch.topk(p, min(k, len(allowed)))
    return [Completion(_as_typed(vocab[allowed[j]], partial), float(v)) for v, j in zip(top.values, top.indices)]


def _as_typed(word: str, typed: str) -> str:
    """A lower-cased vocabulary's ``word`` in the case of the letters typed: "Ki" -> "King", "KI" -> "KING"."""
    if typed == typed.lower() or not word.startswith(typed.lower()):
        return word
    if len(typed) > 1 and typed.isupper():
        return word.upper()
    return typed + word[len(typed):] if len(typed) == len(typed.lower()) else word


def _boundary(piece: str, started: bool) -> int | None:
    """Index in ``piece`` where the word ends, or None if it goes on."""
    for j, ch in enumerate(piece):
        if not is_word_char(ch):
            if started or j > 0:
                return j
        else:
            started = True
    return None


def _heal(tok, prefix: str, partial: str) -> tuple[str, str] | None:
    """For a subword model: ``(head, need)``, the prefix up to the token boundary before the word
    being typed and the text the continuation must start with (the word's space and typed letters).

    A subword tokenizer splits a word typed so far unlike the whole word it saw in training ("the qu"
    as ``the|▁|qu``, where the text had ``the|▁quick``): continued from there, the model ends the word
    at once. Backing off to the boundary and asking the beam for tokens that spell ``need`` first
    ("token healing") lets it finish the word. None where there is nothing to heal (a character
    model, or no text before the word)."""
    if getattr(tok, "type_name", "") != "subword":
        return None
    context = prefix[: len(prefix) - len(partial)]
    head, need = (context[:-1], " " + partial) if context.endswith(" ") else (context, partial)
    if not need or not head:
        return None
    if getattr(tok, "lower", False):  # the tokens' text is lower-cased: spell the typed text so
        if len(need.lower()) != len(need):  # ('İ' lower-cases to two characters)
            return None
        need = need.lower()
    # a typed character no token holds (<unk>) cannot be spelled: no healing, as before it
    if tok.unknown_tokens(need) or not _spelling(tok, need).any():
        return None
    return head, need


def _pieces(tok) -> list[str]:
    """Each token's text (the subword tokenizer keeps a word's space on its first token)."""
    key = (id(getattr(tok, "_tok", None)), tok.vocab_size)  # a refitted tokenizer holds a new model
    cached = getattr(tok, "_rnnkit_pieces", None)
    if cached is None or cached[0] != key:
        cached = (key, [tok.decode([i]) for i in range(tok.vocab_size)])
        tok._rnnkit_pieces = cached
    return cached[1]


def _spelling(tok, rest: str) -> torch.Tensor:
    """Mask (V,) of the tokens whose text goes on spelling ``rest`` (or spells it and goes on)."""
    specials = {getattr(tok, "unk_id", None), getattr(tok, "eos_id", None)}
    return torch.tensor([bool(p) and i not in specials and (p.startswith(rest) or rest.startswith(p))
                         for i, p in enumerate(_pieces(tok))])


def _word_end(text: str, typed: int) -> int | None:
    """Index in ``text`` where the word that starts it ends (not before ``typed`` characters), or None."""
    started = False
    for j, ch in enumerate(text):
        if is_word_char(ch):
            started = True
        elif started and j >= typed:
            return j
        elif j >= typed and j > 0:
            return j
    return None


def _complete_healed(model, tok, head: str, need: str, k: int, beam: int, max_chars: int) -> list[Completion]:
    """The beam of :func:`_complete_beam` from ``head``, every hypothesis spelling ``need`` first."""
    pieces = _pieces(tok)
    specials = {i for i in (getattr(tok, "unk_id", None), getattr(tok, "eos_id", None)) if i is not None}
    logp, state = _advance(model, prompt_ids(model, head))
    beams = [(0.0, "", logp, state)]
    done: dict[str, float] = {}
    spelled = -math.inf  # log P(the typed text | head), over the hypotheses the beam kept
    for _ in range(max_chars + len(need)):
        cands = []
        for lp, added, nxt, st in beams:
            if len(added) < len(need):  # only tokens that go on spelling the typed text
                idx = _spelling(tok, need[len(added):]).nonzero().flatten()
                if not idx.numel():
                    continue
                values, pos = torch.topk(nxt[idx], min(beam, idx.numel()))
                ids = idx[pos]
            else:
                values, ids = torch.topk(nxt, min(beam, nxt.numel()))
            for v, i in zip(values.tolist(), ids.tolist()):
                if i in specials:
                    continue
                text = added + pieces[i]
                if len(added) < len(need) <= len(text):  # this hypothesis has just spelled the typed text
                    spelled = _logaddexp(spelled, lp + v)
                end = _word_end(text, len(need)) if len(text) >= len(need) else None
                if end is None:
                    cands.append((lp + v, text, i, st))
                    continue
                _finish(done, text[:end].strip(), lp + v)
        beams = _next_beams(model, cands, done, k, beam)
        if beams is None:
            break
    # P(word | the letters typed), as the character models' beam gives it
    ranked = sorted(done.items(), key=lambda kv: -kv[1])[:k]
    return [Completion(w, min(1.0, math.exp(lp - spelled))) for w, lp in ranked]


def _complete_beam(model, tok, prefix: str, k: int, beam: int, max_chars: int) -> list[Completion]:
    partial = trailing_word(prefix)
    healed = _heal(tok, prefix, partial)
    if healed is not None:
        return _complete_healed(model, tok, *healed, k, beam, max_chars)
    logp, state = _advance(model, prompt_ids(model, prefix))
    beams = [(0.0, "", logp, state)]  # (log-probability, text added, next log-probs, state)
    done: dict[str, float] = {}
    for _ in range(max_chars):
        cands = []
        for lp, added, nxt, st in beams:
            values, ids = torch.topk(nxt, min(beam, nxt.numel()))
            for v, i in zip(values.tolist(), ids.tolist()):
                piece = tok.decode([i])
                cut = _boundary(piece, bool(partial or added))
                if cut is None:
                    cands.append((lp + v, added + piece, i, st))
                    continue
                _finish(done, (partial + added + piece[:cut]).strip(), lp + v)
        beams = _next_beams(model, cands, done, k, beam)
        if beams is None:
            break
    ranked = sorted(done.items(), key=lambda kv: -kv[1])[:k]
    return [Completion(w, math.exp(lp)) for w, lp in ranked]


def _finish(done: dict[str, float], word: str, logp: float) -> None:
    """Add a hypothesis that ended ``word`` (a word of word characters only) to ``done``."""
    if word and all(is_word_char(ch) for ch in word):
        done[word] = _logaddexp(done.get(word, -math.inf), logp)


def _next_beams(model, cands: list, done: dict[str, float], k: int, beam: int) -> list | None:
    """The ``beam`` best unfinished hypotheses, advanced one token; None when none is left or the
    ``k``-th finished word already beats the best of them."""
    cands = sorted(cands, key=lambda c: -c[0])[:beam]
    best_done = sorted(done.values(), reverse=True)
    if not cands or (len(best_done) >= k and best_done[k - 1] >= cands[0][0]):
        return None
    return [(lp, added, *_advance(model, [i], st)) for lp, added, i, st in cands]


def _logaddexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))

