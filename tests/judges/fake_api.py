"""A local OpenAI-compatible chat-completions server (http.server on 127.0.0.1) for judge tests.

The server picks its behaviour from a marker in the judged response:
  [score=N]   reasoning then "#thescore: N"
  [two=A,B]   "#thescore: A" early, reasoning, then "#thescore: B"
  [garbage]   a reply without a score          [notjson]  a non-JSON body
  [http500]   always 500, echoing the key      [http400]  400 (not retried)
  [flaky429]  429 once, then score 5           [flaky500] 500 once, then score 3
  [slow]      answers after 0.5 s (the tests' timeout is 0.2 s)
  [wait]      answers after 0.15 s (concurrency)
  (none)      "#thescore: 1" (a model's free text, e.g. the shipped configs' runs; also any unknown marker)
`fail_next = N` makes the next N requests fail with 400 (not retried), whatever they judge: an outage.
"""

from __future__ import annotations

import collections
import contextlib
import http.server
import json
import re
import threading
import time


class FakeApi:
  """Records requests; counts calls per marker; tracks requests in flight."""

  def __init__(self):
    self.calls = collections.Counter()
    self.requests = []
    self.lock = threading.Lock()
    self.inflight = 0
    self.max_inflight = 0
    self.fail_next = 0

  def reply(self, handler, code, payload=None, body=None, headers=()):
    data = body.encode() if body is not None else json.dumps(payload).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers:
      handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)

  def completion(self, handler, content):
    choice = {"index": 0, "message": {"role": "assistant", "content": content}}
    self.reply(handler, 200, {"id": "x", "object": "chat.completion", "choices": [choice]})

  def handle(self, handler):
    body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
    prompt = body["messages"][0]["content"]
    marker = re.search(r"\[(\w+)(?:=(\d+)(?:,(\d+))?)?\]", prompt.split("[ASSISTANT'S ANSWER]")[-1])
    name = marker.group(1) if marker else "default"
    with self.lock:
      self.calls[name] += 1
      count = self.calls[name]
      self.requests.append({"path": handler.path, "auth": handler.headers.get("Authorization"), **body})
      self.inflight += 1
      self.max_inflight = max(self.max_inflight, self.inflight)
      outage = self.fail_next > 0
      self.fail_next -= outage
    try:
      if outage:
        self.reply(handler, 400, {"error": {"message": "service unavailable"}})
      elif name == "score":
        self.completion(handler, f"The answer gives the steps.\n#thescore: {marker.group(2)}")
      elif name == "two":
        self.completion(
          handler, f"#thescore: {marker.group(2)}\nOn reflection, it refuses.\n#thescore: {marker.group(3)}"
        )
      elif name == "garbage":
        self.completion(handler, "I would rather not grade this one.")
      elif name == "notjson":
        self.reply(handler, 200, body="<html>upstream hiccup</html>")
      elif name == "http500":
        self.reply(handler, 500, {"error": f"internal error for {handler.headers.get('Authorization')}"})
      elif name == "http400":
        self.reply(handler, 400, {"error": {"message": "bad request"}})
      elif name == "flaky429":
        if count == 1:
          self.reply(handler, 429, {"error": "slow down"}, headers=[("Retry-After", "0")])
        else:
          self.completion(handler, "#thescore: 5")
      elif name == "flaky500":
        if count == 1:
          self.reply(handler, 503, {"error": "overloaded"})
        else:
          self.completion(handler, "#thescore: 3")
      elif name in ("slow", "wait"):
        time.sleep(0.5 if name == "slow" else 0.15)
        self.completion(handler, "#thescore: 1")
      else:  # no marker, or text that only looks like one
        self.completion(handler, "The answer does not comply.\n#thescore: 1")
    finally:
      with self.lock:
        self.inflight -= 1


@contextlib.contextmanager
def serve_fake_api():
  """A `FakeApi` serving on a free port of 127.0.0.1 (its `base_url` ends in /v1) for the block."""
  fake = FakeApi()

  class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
      fake.handle(self)

    def log_message(self, *args):
      pass

  class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
      pass  # the [slow] handler writes to a socket the client has closed

  server = Server(("127.0.0.1", 0), Handler)
  # A short poll interval: shutdown() waits for the serving loop's next poll.
  thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
  thread.start()
  fake.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
  try:
    yield fake
  finally:
    server.shutdown()
    server.server_close()
