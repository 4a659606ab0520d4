"""The synthetic keyboard text: shapes, determinism, and that users write in their styles."""

from __future__ import annotations

import numpy as np

from fedactors.data.keyboard import VOCAB, KeyboardStyles, generate_text, make_keyboard_data, windows


def test_examples_are_context_windows_and_next_characters() -> None:
    x, y = windows(np.array([1, 2, 3, 4, 5]), 3)
    np.testing.assert_array_equal(x, [[1, 2, 3], [2, 3, 4]])
    np.testing.assert_array_equal(y, [4, 5])
    assert x.dtype == np.float32 and y.dtype == np.int32


def test_same_generator_same_data_and_the_requested_sizes() -> None:
    a = make_keyboard_data([5, 40, 300], np.random.default_rng(3), context=4)
    b = make_keyboard_data([5, 40, 300], np.random.default_rng(3), context=4)
    assert [a.num_examples(d) for d in range(3)] == [5, 40, 300]
    for d in range(3):
        np.testing.assert_array_equal(a.client(d)[0], b.client(d)[0])
    assert a.client(2)[0].shape == (300, 4) and a.client(2)[1].max() < VOCAB
    assert a.test[0].shape == (200 * 25, 4)


def test_a_user_writing_in_one_style_follows_its_chain() -> None:
    rng = np.random.default_rng(0)
    styles = KeyboardStyles.draw(rng, styles=3, order=1)
    mixing = np.array([[0.0, 1.0, 0.0]])
    text = generate_text(styles, mixing, 60_000, rng)[0]
    counts = np.zeros((VOCAB, VOCAB))
    np.add.at(counts, (text[:-1], text[1:]), 1)
    common = counts.sum(1) > 2000  # rows seen often enough to compare
    empirical = counts[common] / counts[common].sum(1, keepdims=True)
    np.testing.assert_allclose(empirical, styles.transitions[1][common], atol=0.03)
