"""The mock's output text: n tokens streamed == n tokens counted, in every language, at every cut."""

from __future__ import annotations

import json
import random

import pytest

from mock_server.textgen import TextSource
from tokenstorm.core.tokenizer import count_tokens


@pytest.mark.parametrize("language", ["en", "zh"])
def test_any_window_tokenizes_to_exactly_its_length(language):
    source = TextSource(language)
    for i in range(300):
        rng = random.Random(i)
        n = rng.choice([1, 2, 3, rng.randint(1, 300), rng.randint(300, 40_000)])
        window = source.window(rng, n)
        text = source.text(window)
        assert window.n_tokens == n == count_tokens(text), (i, n)
        deltas = [json.loads(d) for d in source.delta_json(window) if d is not None]
        assert "".join(deltas) == text
        assert all("\ufffd" not in d for d in deltas)


def test_same_rng_same_text_and_windows_vary():
    source = TextSource("en")
    first = source.text(source.window(random.Random("a"), 50))
    assert first == source.text(source.window(random.Random("a"), 50))
    assert len({source.text(source.window(random.Random(i), 50)) for i in range(50)}) > 40


def test_chinese_holds_back_partial_characters():
    source = TextSource("zh")
    deltas = source.delta_json(source.window(random.Random(3), 500))
    assert list(deltas).count(None) > 0
