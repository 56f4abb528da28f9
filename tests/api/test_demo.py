"""`xmodal demo` end to end: generate, index, serve on 127.0.0.1, and the printed curl works."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_demo_serves_and_its_printed_curl_returns_hits(tmp_path):
    port = free_port()
    xmodal = Path(sys.executable).with_name("xmodal")
    process = subprocess.Popen(
        [str(xmodal), "demo", "--data", str(tmp_path / "demo"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"},
        start_new_session=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 180
        curls: list[str] = []
        assert process.stdout is not None
        while time.monotonic() < deadline and len(curls) < 6:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.strip().startswith("curl "):
                curls.append(line.strip())
        assert len(curls) == 6, "".join(lines)
        assert any(f"http://127.0.0.1:{port}" in line for line in lines)
        for curl in curls:
            for _ in range(100):  # the server starts right after the commands are printed
                result = subprocess.run(shlex.split(curl), capture_output=True, text=True)
                if result.returncode == 0:
                    break
                time.sleep(0.2)
            body = json.loads(result.stdout)
            assert body["hits"], curl
            first = body["hits"][0]
            assert {"id", "uri", "score", "matched", "segments", "metadata"} <= set(first)
            if "beep" in curl or "/search/audio" in curl:  # the sounds' queries find sounds
                assert first["matched"] == "sound" and first["uri"].endswith(".wav"), curl
            if '"rerank"' in curl:  # reranked and explained by the offline reference model
                assert body["rerank"]["applied"], body["rerank"]
                assert first["rerank_score"] is not None and first["explanation"]["summary"]
                assert first["uri"].endswith(".jpg"), curl
        text = "".join(lines)
        assert "reranked by xmodal-ref-vlm" in text and "why " in text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
