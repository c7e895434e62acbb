#!/usr/bin/env python3
"""Measure the hidden-unit figures of docs/understanding/recurrences.md: a character-level GRU trained to
predict the next character of random bracket text grows a unit that tracks "inside brackets".

    python docs/scripts/hidden_units.py    # writes docs/figures/bracket_unit.png and bracket_pca.png

Text: 'a', 'b', '(' and ')' with brackets balanced so far and nested at most 3 deep (25% open, 25% close
when allowed). Model: Embedding(4, 8) -> rnnkit.GRU(8, 32) -> Linear(32, 4), Adam lr 2e-2, 300 steps on
64 sequences of 80 characters, seed 0. Then rnnkit.analysis.find_units ranks the units by correlation
with feature_inside(text, '(', ')') on a fresh 400-character text.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import torch
from torch import nn

import rnnkit
from rnnkit.analysis import (feature_depth, feature_inside, find_units, hidden_states, plot_pca_trajectory,
                             plot_unit_activations)

FIGURES = Path(__file__).resolve().parents[1] / "figures"
VOCAB = {c: i for i, c in enumerate("ab()")}


def brackets(n: int, rng: random.Random) -> str:
    out, depth = [], 0
    for _ in range(n):
        r = rng.random()
        ch = "(" if r < 0.25 and depth < 3 else ")" if r < 0.5 and depth > 0 else rng.choice("ab")
        depth += {"(": 1, ")": -1}.get(ch, 0)
        out.append(ch)
    return "".join(out)


def encode(text: str) -> torch.Tensor:
    return torch.tensor([[VOCAB[c] for c in text]])


def main() -> None:
    start = time.perf_counter()
    torch.manual_seed(0)
    rng = random.Random(0)
    ids = torch.cat([encode(brackets(81, rng)) for _ in range(64)])
    model = nn.Sequential(nn.Embedding(4, 8), rnnkit.GRU(8, 32, batch_first=True))
    head = nn.Linear(32, 4)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=2e-2)
    for _ in range(300):
        logits = head(model(ids[:, :-1])[0])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    text = brackets(400, random.Random(1))
    acts = hidden_states(model, encode(text))  # (T, 32)
    ranking = find_units(acts, feature_inside(text, "(", ")"), top_k=3)
    depth = find_units(acts, feature_depth(text, "(", ")").float(), top_k=1)
    unit, r = int(ranking.units[0]), float(ranking.correlations[0])
    print(f"final training loss {loss.item():.3f} nats/char")
    print(f"top units for 'inside brackets': {ranking.units.tolist()} r = "
          f"{[round(float(c), 3) for c in ranking.correlations]}")
    print(f"top unit for depth: {int(depth.units[0])} r = {float(depth.correlations[0]):.3f}")
    plot_unit_activations(text[:240], acts[:240], unit, FIGURES / "bracket_unit.png", columns=60,
                          title=f"GRU unit {unit}: correlation {r:+.2f} with 'inside brackets'")
    plot_pca_trajectory(acts[:120], FIGURES / "bracket_pca.png", labels=list(text[:120]),
                        color=feature_depth(text[:120], "(", ")"), color_label="bracket depth",
                        title="GRU hidden state, first 120 characters (PCA)")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
