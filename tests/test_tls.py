"""https targets: verified against a CA file, refused when unverifiable, or --tls-insecure."""

from __future__ import annotations

import subprocess
import sys

import pytest
from locust_procs import run

from analysis.stats import load_records
from tokenstorm.mockproc import ROOT


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, str(ROOT / "tests" / "data" / "tls_sse_server.py"), str(cert), str(key)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    port = int(server.stdout.readline().split()[1])
    yield f"https://127.0.0.1:{port}", cert
    server.kill()
    server.wait()


@pytest.mark.parametrize("mode", ["ca", "unverified", "insecure"])
def test_https_target(tls_server, tmp_path, mode):
    url, cert = tls_server
    extra = {"ca": ["--tls-ca", str(cert)], "unverified": [], "insecure": ["--tls-insecure"]}[mode]
    result = run("chat_stream.py", url, "--model", "m", "-u", "2", "-r", "2", "--total-requests", "6",
                 "--results-dir", str(tmp_path), "--exit-code-on-error", "0", *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    records = load_records(tmp_path)
    assert len(records) == 6
    if mode == "unverified":
        assert (records["error_type"] == "connect").all()
        assert records["error"].str.contains("certificate verify failed").all()
    else:
        assert (records["status"] == "ok").all() and (records["output_tokens_tokenizer"] == 3).all()
        assert records["ttft_ms"].notna().all()
