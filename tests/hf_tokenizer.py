"""A small, real Hugging Face tokenizer.json for the tests, trained in a moment with `tokenizers`' own
BPE trainer (no Llama download possible here). Its vocabulary holds whole words that tiktoken
cl100k_base cuts in two or more tokens, so a count by the wrong tokenizer differs visibly."""

from __future__ import annotations

from pathlib import Path

from mock_server.textgen import _EN_WORDS
from tokenstorm.client.datasets import _WORDS

EXTRA_WORDS = ("tokenstorm kubernetes quantization disaggregated speculative prefill throughputs "
               "autoscaling multiplexing backpressure").split()


def train_tokenizer(path: Path) -> Path:
    """Train a whitespace-split BPE on the suite's own word lists (plus a few long words); save to `path`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    words = sorted(set(_EN_WORDS) | set(_WORDS) | set(EXTRA_WORDS))
    words += [w.capitalize() for w in words]
    corpus = [" ".join(words) + " , . ! ?"] * 20
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=8000, special_tokens=["[UNK]"],
                                                        show_progress=False))
    tok.save(str(path))
    return path
