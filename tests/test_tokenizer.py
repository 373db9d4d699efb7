"""The offline tokenizer: the shipped cl100k_base file, verified, and clear errors otherwise."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from tokenstorm.core import tokenizer
from tokenstorm.mockproc import ROOT

CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"


def test_shipped_file_is_the_official_one():
    data = (ROOT / "data" / "cl100k_base.tiktoken").read_bytes()
    assert hashlib.sha256(data).hexdigest() == CL100K_SHA256


def test_known_token_counts():
    assert tokenizer.get_encoding().name == "cl100k_base"
    assert tokenizer.encode("hello world") == [15339, 1917]
    assert tokenizer.count_tokens("<|endoftext|>") > 1  # special tokens count as plain text
    assert tokenizer.count_tokens_cached("tiktoken is great!") == 6
    assert tokenizer.get_encoding() is tokenizer.get_encoding("cl100k_base")


def offline_python(code: str, data_dir: str, tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENSTORM_DATA_DIR": data_dir, "TIKTOKEN_CACHE_DIR": str(tmp_path / "empty-cache"),
           # any download attempt fails at once instead of reaching the network
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_works_with_an_empty_tiktoken_cache_and_no_network(tmp_path):
    result = offline_python("from tokenstorm.core import tokenizer; print(tokenizer.count_tokens('hello world'))",
                            str(ROOT / "data"), tmp_path)
    assert result.stdout.strip() == "2", result.stderr


def test_corrupt_file_is_refused(tmp_path):
    bad = tmp_path / "data"
    bad.mkdir()
    content = (ROOT / "data" / "cl100k_base.tiktoken").read_bytes()
    (bad / "cl100k_base.tiktoken").write_bytes(content[:-10] + b"AAAAAAAAA\n")
    code = ("from tokenstorm.core import tokenizer\ntry:\n    tokenizer.get_encoding()\n"
            "except tokenizer.TokenizerError as e:\n    print(e)")
    result = offline_python(code, str(bad), tmp_path)
    assert "is corrupt: its sha256 is not" in result.stdout, result.stderr


def test_unavailable_and_unknown_encodings_have_clear_errors(tmp_path):
    code = ("from tokenstorm.core import tokenizer\nfor n in ('o200k_base', 'nope'):\n    try:\n"
            "        tokenizer.get_encoding(n)\n    except tokenizer.TokenizerError as e:\n        print(e)")
    result = offline_python(code, str(ROOT / "data"), tmp_path)
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("tokenizer encoding 'o200k_base' could not be loaded")
    assert "put its o200k_base.tiktoken file in" in lines[0]
    assert lines[1].startswith("unknown tokenizer encoding 'nope' (tiktoken knows: cl100k_base")
