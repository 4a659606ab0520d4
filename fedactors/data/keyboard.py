"""Synthetic keyboard text: next-character prediction with per-user writing habits.

Nothing is downloaded; text comes from a small documented generative model:

* An alphabet of 28 symbols (``a``-``z``, space, full stop).
* ``styles`` writing styles, each an order-``order`` character Markov chain:
  for every previous character (or pair, for order 2), a distribution over
  the next one drawn from a sparse Dirichlet(``concentration``) (small
  concentration = predictable text, as real language mostly is).
* Every style is a ``shared`` part of one common chain (the language) plus
  its own chain (the style's habits), so there is something for everyone to
  learn together and something only some users' data shows.
* Each user mixes the styles with their own weights, drawn from a
  Dirichlet(``user_mixing``): for each character the user picks a style by
  those weights and draws the next character from that style's chain. Users
  are thus non-IID (a user mostly writing in style 2 has its bigrams), but
  share the styles, so a global model helps everyone.
* Examples: the previous ``context`` characters (ids stored as float32, the
  simulator's feature dtype; an Embedding layer casts them back) -> the next
  character (int32).

The server's test set is text from fresh users drawn from the same mixing
prior: the population the keyboard model serves.

Generation is vectorized over users (one step per character position for
every user at once), so thousands of users take well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedactors.data.federated import FederatedData
from fedactors.errors import ConfigError
from fedactors.validation import positive, positive_int, probability

ALPHABET = "abcdefghijklmnopqrstuvwxyz ."
VOCAB = len(ALPHABET)


@dataclass(frozen=True)
class KeyboardStyles:
    """The generative model's shared part: ``styles`` Markov chains of order 1 or 2."""

    #: (styles, VOCAB ** order, VOCAB): P(next | previous ``order`` characters).
    transitions: np.ndarray
    order: int

    @classmethod
    def draw(cls, rng: np.random.Generator, styles: int = 4, concentration: float = 0.05,
             order: int = 1, shared: float = 0.6) -> KeyboardStyles:
        positive_int("styles", styles)
        positive("concentration", concentration)
        probability("shared", shared)
        if order not in (1, 2):
            raise ConfigError("order", f"must be 1 or 2, got {order!r}")
        alpha = np.full(VOCAB, concentration)
        common = rng.dirichlet(alpha, size=VOCAB**order)
        own = rng.dirichlet(alpha, size=(styles, VOCAB**order))
        return cls(shared * common[None] + (1.0 - shared) * own, order)

    @property
    def count(self) -> int:
        return self.transitions.shape[0]


def generate_text(styles: KeyboardStyles, mixing: np.ndarray, length: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``(users, length)`` character ids; user ``u`` picks styles with weights ``mixing[u]``."""
    users = mixing.shape[0]
    text = np.empty((users, length), np.int64)
    text[:, :2] = rng.integers(0, VOCAB, (users, 2))
    style_cdf = np.cumsum(mixing, axis=1)
    rows = np.arange(users)
    for i in range(2, length):
        u_style, u_char = rng.random(users), rng.random(users)
        style = np.minimum((style_cdf < u_style[:, None]).sum(1), styles.count - 1)
        state = text[:, i - 1] if styles.order == 1 else text[:, i - 2] * VOCAB + text[:, i - 1]
        probs = styles.transitions[style, state]
        char = (np.cumsum(probs, axis=1) < u_char[:, None]).sum(1)
        text[rows, i] = np.minimum(char, VOCAB - 1)  # cumsum may end a hair below 1
    return text


def windows(text: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (previous ``context`` characters, next character) pair of one text."""
    idx = np.arange(context)[None, :] + np.arange(len(text) - context)[:, None]
    return text[idx].astype(np.float32), text[context:].astype(np.int32)


def make_keyboard_data(
    examples: Sequence[int],
    rng: np.random.Generator,
    context: int = 6,
    styles: int = 4,
    concentration: float = 0.05,
    order: int = 1,
    shared: float = 0.6,
    user_mixing: float = 0.3,
    test_users: int = 200,
    test_chars: int = 25,
) -> FederatedData:
    """One user per entry of ``examples`` (that many examples each) plus the server's test set."""
    positive_int("context", context)
    positive("user_mixing", user_mixing)
    model = KeyboardStyles.draw(rng, styles, concentration, order, shared)
    counts = np.maximum(1, np.asarray(examples, np.int64))
    mixing = rng.dirichlet(np.full(styles, user_mixing), size=len(counts))
    text = generate_text(model, mixing, int(counts.max()) + context, rng)
    clients = [windows(text[u, : counts[u] + context], context) for u in range(len(counts))]
    test_mixing = rng.dirichlet(np.full(styles, user_mixing), size=test_users)
    test_text = generate_text(model, test_mixing, test_chars + context, rng)
    tx, ty = zip(*(windows(t, context) for t in test_text))
    return FederatedData.from_arrays(clients, (np.concatenate(tx), np.concatenate(ty)))
