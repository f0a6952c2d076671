"""The optional GPT judge speaks the official protocol; tested against a local stub server."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from bevlm.evaluation import OpenAIJudge


class _Stub(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.seen.append((self.path, self.headers["Authorization"], body))
        reply = {"choices": [{"message": {"content": "<think>compare</think> 73"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_judge_request_and_reply(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    server = HTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        judge = OpenAIJudge(f"http://127.0.0.1:{server.server_port}/v1", "m", "BEVLM_TEST_JUDGE_KEY")
        with pytest.raises(RuntimeError, match="BEVLM_TEST_JUDGE_KEY is not set"):
            judge("mine", "right")
        monkeypatch.setenv("BEVLM_TEST_JUDGE_KEY", "k")
        assert judge("mine", "right") == 73.0
    finally:
        server.shutdown()
        server.server_close()
    path, auth, body = _Stub.seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k"
    assert body["temperature"] == 0.6 and body["max_tokens"] == 3000 and body["model"] == "m"
    assert body["messages"][0] == {"role": "system",
                                   "content": "an evaluator who rates my answer based on the correct answer"}
    assert body["messages"][1]["content"].endswith(
        "Output the number onlyThis is the correct answer: rightThis is my answer: mine")
