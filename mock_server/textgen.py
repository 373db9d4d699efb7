"""Deterministic output text whose token count is exact by construction.

Each language has a corpus of a few thousand tokens of the active tokenizer (cl100k_base by
default, or the mock's --tokenizer), built once from units that
tokenize independently (single-token English words, whole Chinese clauses between
punctuation), so any cut at a unit boundary re-tokenizes to exactly the tokens it was cut
from: a response of n tokens has usage.completion_tokens == n == the tokenizer count of its
text. A response is a window of the corpus starting at a paragraph, chosen by a seeded RNG.

For every corpus position the JSON-escaped text of the content delta is precomputed, with
incomplete UTF-8 sequences held back and sent with the next token as real servers do, so
streaming a token costs one lookup.
"""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

from tokenstorm.core import tokenizer

_EN_WORDS = """the model serves tokens with low latency under heavy load while queue grows and every
request waits for its turn before first token arrives at client which measures time throughput
across many users in cluster of servers that share memory bandwidth compute power network links
cache storage data system engine process thread stream batch prompt answer question user value
result error signal metric window second minute hour day week year team people world city river
mountain ocean forest garden house road bridge light sound color music story book paper letter
word line page number point level range scale speed rate cost price market plan policy rule law
state group company business service product customer support order change growth risk chance
idea method theory test case study design code program file table report review note list set
map graph tree node edge path route region area zone field space place home office school class
course lesson teacher student science history art nature energy water air fire earth health care
food window door wall floor room kitchen small large long short quick slow early late new old
good great high simple clear strong open free full ready stable steady careful precise exact fast
bright dark warm cold fresh clean quiet deep wide heavy final last next best better real true
common special general local global public private central main major minor basic key core also
often always never still just only even very more most less some many few each other such same
different important possible likely able available recent current future natural human social
technical physical digital runs moves holds keeps makes takes gives finds shows builds reads
writes sends learns turns starts ends opens needs wants uses helps works brings leads follows
changes improves reduces increases supports reaches meets""".split()

_ZH_WORDS = """模型 服务 令牌 延迟 负载 队列 请求 用户 吞吐 时间 系统 数据 网络 计算 内存 集群 测试
结果 错误 指标 我们 他们 今天 明天 问题 答案 世界 城市 河流 山脉 海洋 森林 花园 音乐 故事 书籍
科学 历史 艺术 自然 能量 快速 缓慢 稳定 精确 简单 清楚 重要 可能 运行 发送 接收 学习 增长 改变
支持""".split()

LANGUAGES = ("en", "zh")
CORPUS_UNITS = {"en": 16_000, "zh": 6_000}  # about 16k tokens each


@dataclass(frozen=True)
class Corpus:
    """A token stream with its precomputed deltas and cut points."""

    token_ids: tuple[int, ...]
    deltas: tuple[bytes | None, ...]  # JSON string literal per position, None = held back
    texts: tuple[str, ...]  # decoded text per position ('' when held back)
    starts: tuple[int, ...]  # positions where a response may begin (paragraph starts)
    boundaries: tuple[int, ...]  # sorted positions where a cut re-tokenizes exactly
    filler: tuple[int, int]  # (word token, punctuation token) used to pad a cut exactly
    filler_text: tuple[str, str]  # their texts

    def __len__(self) -> int:
        return len(self.token_ids)


def _build_units(language: str, rng: random.Random, words: list[str]) -> list[tuple[str, str]]:
    """A sequence of (kind, surface) units: kind 'w' word/clause, 'p' punctuation."""
    units: list[tuple[str, str]] = []
    paragraph_start = True
    while len(units) < CORPUS_UNITS[language]:
        if language == "en":
            length = rng.randint(6, 18)
            for i in range(length):
                word = rng.choice(words)
                if i == 0:
                    word = word.capitalize()
                units.append(("w", word if paragraph_start and i == 0 else " " + word))
                if 1 < i < length - 2 and rng.random() < 0.08:
                    units.append(("p", ","))
            paragraph_start = rng.random() < 0.2
            units.append(("p", ".\n\n" if paragraph_start else "."))
        else:
            for _ in range(rng.randint(1, 4)):
                units.append(("w", "".join(rng.choice(_ZH_WORDS) for _ in range(rng.randint(1, 4)))))
                units.append(("p", "，"))
            units[-1] = ("p", "。")
            paragraph_start = True
    return units


def _single_token_words() -> tuple[list[str], list[str]]:
    enc = tokenizer.active()
    words = sorted({w for w in _EN_WORDS if len(enc.encode(" " + w)) == 1
                    and len(enc.encode(w.capitalize())) == 1
                    and len(enc.encode(" " + w.capitalize())) == 1})
    zh = sorted({w for w in _ZH_WORDS if len(enc.encode(w)) == 1})
    return (words, zh)


def build_corpus(language: str = "en", seed: int = 0) -> Corpus:
    if language not in LANGUAGES:
        raise ValueError(f"unknown output language {language!r} (choose from {', '.join(LANGUAGES)})")
    enc = tokenizer.active()
    rng = random.Random(f"corpus:{language}:{seed}")
    words, zh_words = _single_token_words()
    if len(words) < 20 or (language == "zh" and not zh_words):
        raise tokenizer.TokenizerError(f"tokenizer {enc.name}: too few single-token words to build the mock's "
                                       f"{language} output")
    units = _build_units(language, rng, words)
    ids: list[int] = []
    token_pieces: list[bytes] = []
    starts: list[int] = [0]
    boundaries: list[int] = []
    for kind, surface in units:
        boundaries.append(len(ids))
        unit_ids = enc.encode(surface)
        ids.extend(unit_ids)
        token_pieces.extend(enc.pieces(surface))
        if kind == "p" and surface in (".\n\n", "。"):
            starts.append(len(ids))
    boundaries.append(len(ids))
    starts.pop()  # the end of the corpus is not a start
    full_text = "".join(surface for _, surface in units)
    if enc.encode(full_text) != ids:  # the invariant everything else relies on
        if enc.default:
            raise AssertionError(f"{language} corpus units do not tokenize independently")
        raise tokenizer.TokenizerError(f"tokenizer {enc.name}: the mock's {language} output units do not "
                                       "tokenize independently, so its token counts could not be exact")

    deltas: list[bytes | None] = []
    texts: list[str] = []
    pending = b""
    for piece in token_pieces:
        pending += piece
        try:
            text = pending.decode("utf-8")
        except UnicodeDecodeError:
            deltas.append(None)
            texts.append("")
            continue
        pending = b""
        deltas.append(json.dumps(text, ensure_ascii=False).encode())
        texts.append(text)
    filler_text = (" " + words[0], ",") if language == "en" else (zh_words[0], "，")
    filler = (enc.encode(filler_text[0])[0], enc.encode(filler_text[1])[0])
    return Corpus(tuple(ids), tuple(deltas), tuple(texts), tuple(starts), tuple(boundaries), filler, filler_text)


@dataclass(frozen=True)
class Window:
    """n tokens of output: `count` corpus tokens from `start` (wrapping), then filler tokens."""

    start: int
    count: int
    extra: tuple[int, ...] = ()

    @property
    def n_tokens(self) -> int:
        return self.count + len(self.extra)


class TextSource:
    """Picks deterministic output windows from a corpus; nothing per token is materialized."""

    def __init__(self, language: str = "en", seed: int = 0):
        self.corpus = build_corpus(language, seed)
        self._filler_text = dict(zip(self.corpus.filler, self.corpus.filler_text, strict=True))
        self._filler_json = {t: json.dumps(text, ensure_ascii=False).encode() for t, text in self._filler_text.items()}

    def window(self, rng: random.Random, n_tokens: int) -> Window:
        """Exactly n_tokens of text, from a paragraph start chosen by `rng`."""
        corpus = self.corpus
        start = rng.choice(corpus.starts)
        if n_tokens <= 0:
            return Window(start, 0)
        end = (start + n_tokens - 1) % len(corpus) + 1
        cut = corpus.boundaries[bisect.bisect_right(corpus.boundaries, end) - 1]
        if cut == end:
            return Window(start, n_tokens)
        # The cut falls inside a multi-token unit: drop the partial unit, pad with filler.
        dropped = end - cut
        count = n_tokens - dropped
        word, punct = corpus.filler
        last_is_word = count > 0 and corpus.texts[(start + count - 1) % len(corpus)][-1:].isalpha()
        extra = []
        for _ in range(dropped):
            extra.append(punct if last_is_word else word)
            last_is_word = not last_is_word
        return Window(start, count, tuple(extra))

    def _spans(self, window: Window) -> Iterator[tuple[int, int]]:
        size = len(self.corpus)
        pos, remaining = window.start, window.count
        while remaining > 0:  # wrap around the corpus for very long outputs
            take = min(remaining, size - pos)
            yield pos, pos + take
            remaining -= take
            pos = 0

    def delta_json(self, window: Window) -> Iterator[bytes | None]:
        """One item per token: the JSON string of the delta sent at its instant, or None (held back)."""
        deltas = self.corpus.deltas
        for a, b in self._spans(window):
            yield from deltas[a:b]
        for token in window.extra:
            yield self._filler_json[token]

    def text(self, window: Window) -> str:
        texts = self.corpus.texts
        return "".join("".join(texts[a:b]) for a, b in self._spans(window)) + "".join(
            self._filler_text[t] for t in window.extra)

    def cut_before(self, window: Window, stops: list[str]) -> Window | None:
        """The window's leading tokens that end before the first of `stops` in its text, or None when no stop
        string occurs (what a server honouring `stop` streams)."""
        text = self.text(window)
        found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
        if not found:
            return None
        limit = min(found)
        texts, size = self.corpus.texts, len(self.corpus)
        length = 0
        for i in range(window.count):
            length += len(texts[(window.start + i) % size])
            if length > limit:
                return Window(window.start, i)
        extra: list[int] = []
        for token in window.extra:
            length += len(self._filler_text[token])
            if length > limit:
                break
            extra.append(token)
        return Window(window.start, window.count, tuple(extra))
