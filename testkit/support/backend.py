"""A small HTTP/1.1 backend for tests that run it inside a network namespace.

Usage: backend.py NAME ADDRESS PORT. Answers every request with 200 (or the code in a `/status/<code>` path segment),
header x-backend: NAME and body NAME.
"""
import http.server
import sys

NAME, ADDRESS, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status = 200
        if "/status/" in self.path:
            status = int(self.path.split("/status/")[1].split("/")[0])
        body = NAME.encode()
        self.send_response(status)
        self.send_header("x-backend", NAME)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer((ADDRESS, PORT), Handler).serve_forever()
