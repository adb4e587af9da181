"""A local OpenAI-compatible chat-completions server (http.server on 127.0.0.1) for judge tests."""

from __future__ import annotations

import contextlib
import http.server
import threading


class _Fake:
  def __init__(self):
    self.calls = 0


@contextlib.contextmanager
def serve_fake_api():
  """Placeholder until test_api's FakeApi moves here."""
  import json
  fake = _Fake()

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
      self.rfile.read(int(self.headers["Content-Length"]))
      fake.calls += 1
      data = json.dumps({"choices": [{"message": {"content": "#thescore: 1"}}]}).encode()
      self.send_response(200)
      self.send_header("Content-Length", str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
  thread.start()
  fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
  try:
    yield fake
  finally:
    server.shutdown()
    server.server_close()
