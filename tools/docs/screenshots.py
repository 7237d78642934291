"""Build the site, serve it as it is deployed, and look at it with a real browser.

``tox -e screenshots`` (not part of ``tox``) runs this. It needs Chromium (Debian:
``apt-get install -y chromium``). It:

1. builds the site (``mkdocs build --strict``) into site/;
2. serves it on 127.0.0.1 under ``/dloop/``, the sub-path of its ``site_url``, answering
   unknown addresses with the site's 404 page, as GitHub Pages does;
3. drives headless Chromium over the DevTools protocol (``--remote-debugging-pipe``) with a
   1400 x 1800 px window: screenshots of the home page, the API pages of ``Loop``,
   ``LoopEvents`` and ``dloop.testing``, the migration page and a 404 page go to
   build/screenshots/;
4. checks every page: no code block or table wider than its column, no docstring example
   rendered as nested quotes; and types ``state_dict`` into the site's search box, scrolls
   through the results as a reader does, and checks that every result the search counts is
   shown and that the results list every page whose text uses ``state_dict`` as a name
   (``loop.state_dict()`` included). Those pages are found in the built HTML with a plain
   regular expression, not with the search's own word separator, so a separator that
   missed a dotted name would fail the check rather than agree with it.

It prints what it found and exits 1 when a check fails. Nothing leaves this machine: the
browser runs with its background networking off and the server listens on the loopback.
"""

from __future__ import annotations

import base64
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "site"
OUT = ROOT / "build" / "screenshots"
PREFIX = "/dloop/"
WIDTH, HEIGHT = 1400, 1800
SEARCHED = "state_dict"
SHOTS = {
    "home": "",
    "api-loop": "api/loop/",
    "api-loop-events": "api/loop-events/",
    "api-testing": "api/testing/",
    "migration": "migration/",
    "not-found": "no-such-page/",
}
ARTICLE = re.compile(r'<article class="md-content__inner md-typeset">(.*?)</article>', re.S)
BLOCK_TAG = re.compile(
    r"</?(?:p|li|ul|ol|dl|dt|dd|table|tr|td|th|h[1-6]|pre|div|br|hr|blockquote|details|summary)"
    r"\b[^>]*>",
    re.I,
)
INLINE_TAG = re.compile(r"<[^>]+>")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)
# Code wider than its box, and quotes nested inside a docstring (an example parsed as
# Markdown), on the page shown.
MEASURE = """(() => {
  const wide = [];
  for (const code of document.querySelectorAll(".md-content pre > code")) {
    if (code.scrollWidth > code.clientWidth + 1) {
      const lines = code.textContent.split("\\n");
      const longest = lines.reduce((a, b) => (a.length >= b.length ? a : b), "");
      wide.push({width: code.scrollWidth, column: code.clientWidth, line: longest.trim()});
    }
  }
  for (const table of document.querySelectorAll(".md-content .md-typeset__table table")) {
    const column = table.closest(".md-content__inner").clientWidth;
    if (table.scrollWidth > column + 1) {
      const first = table.querySelector("tr").textContent.trim().replace(/\\s+/g, " ");
      wide.push({width: table.scrollWidth, column: column, line: "table: " + first});
    }
  }
  const quotes = document.querySelectorAll(".doc-contents blockquote blockquote").length;
  return {wide, quotes};
})()"""
# Types into the search box as a reader would, scrolls the results so that all of them
# render, and returns the page of each result (one per page) once they stop changing.
# Material renders the first 10 results, then 4 more each time the list *reaches* its end
# (within 16 px): it watches whether the list is scrolled to its end and acts only when that
# changes from no to yes. Jumping from the end straight to the new end after more results
# rendered is no change, so the rest never render (the 15th of 15 results was lost so);
# like a reader's scrolling, each poll steps back from the end or scrolls to it.
SEARCH = """new Promise((resolve) => {
  const input = document.querySelector(".md-search__input");
  input.focus();
  input.value = %s;
  input.dispatchEvent(new Event("input", {bubbles: true}));
  input.dispatchEvent(new KeyboardEvent("keyup", {bubbles: true, key: "t"}));
  let last = "", steady = 0, tries = 0;
  const poll = () => {
    const wrap = document.querySelector(".md-search__scrollwrap");
    if (wrap) {
      const end = wrap.scrollHeight - wrap.offsetHeight;
      wrap.scrollTop = wrap.scrollTop >= end - 16 ? end - 100 : end;
    }
    const items = document.querySelectorAll(".md-search-result__item");
    const links = [...items].map(item => item.querySelector(":scope > a").href);
    const meta = document.querySelector(".md-search-result__meta").textContent;
    const now = meta + links.join();
    steady = links.length && now === last ? steady + 1 : 0;
    last = now;
    if (steady >= 10 || ++tries > 200) resolve({links, meta});
    else setTimeout(poll, 100);
  };
  poll();
})"""


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    """Serves site/ under PREFIX, and the site's 404 page for anything it lacks."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def translate_path(self, path: str) -> str:
        path = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
        if not path.startswith(PREFIX):
            return str(SITE / "missing")
        return str(SITE / path[len(PREFIX) :])

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if code != 404:
            super().send_error(code, message, explain)
            return
        body = (SITE / "404.html").read_bytes()
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (stdlib only)."""

    def __init__(self, executable: str, profile: Path) -> None:
        # Chromium reads commands on fd 3 and writes answers on fd 4.
        self.process = subprocess.Popen(
            [
                "sh",
                "-c",
                'exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null',
                executable,
                *FLAGS,
                f"--user-data-dir={profile}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.last_id = 0
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send("Page.enable", self.session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            self.session,
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        while b"\0" not in self.buffer:
            chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        result: dict[str, Any] = json.loads(message)
        return result

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.process.stdin.write(json.dumps(message).encode() + b"\0")
        self.process.stdin.flush()
        while True:
            answer = self._read()
            if answer.get("id") == self.last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result
            self.events.append(answer)

    def open(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        self.events.clear()
        self.send("Page.navigate", self.session, url=url)
        while not any(event.get("method") == "Page.loadEventFired" for event in self.events):
            self.events.append(self._read())

    def evaluate(self, expression: str) -> Any:
        answer = self.send(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(f"in the page: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise SystemExit("no Chromium found: install it (Debian: apt-get install -y chromium)")


def page_file(address: str) -> Path:
    """The built file of a page, from its address relative to the site root."""
    return SITE / address / "index.html"


def pages() -> list[str]:
    """Every page of the built site, as addresses relative to the site root."""
    found = []
    for page in sorted(SITE.rglob("index.html")):
        relative = page.parent.relative_to(SITE).as_posix()
        if not relative.startswith(("assets", "search")):
            found.append("" if relative == "." else relative + "/")
    return found


def article_text(page: Path) -> str:
    """The text of a built page's article (what the search indexes: no navigation), with
    the markup removed; blocks are kept apart by a space, inline markup joins."""
    found = ARTICLE.search(page.read_text())
    if found is None:
        raise SystemExit(f"{page}: no article element; did the theme change?")
    return html.unescape(INLINE_TAG.sub("", BLOCK_TAG.sub(" ", found.group(1))))


def pages_using(name: str) -> set[str]:
    """Pages whose text uses ``name`` as a whole name (``loop.state_dict()`` uses
    ``state_dict``; ``load_state_dict`` does not), read from the built HTML with a plain
    regular expression: independent of the search's own separator."""
    whole = re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")
    return {address for address in pages() if whole.search(article_text(page_file(address)))}


def main() -> int:
    subprocess.run(["mkdocs", "build", "--strict", "--site-dir", str(SITE)], cwd=ROOT, check=True)
    executable = find_chromium()
    OUT.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(SiteHandler, directory=str(SITE))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}{PREFIX}"
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dloop-chromium-") as profile:
        browser = Browser(executable, Path(profile))
        try:
            for name, address in SHOTS.items():
                browser.open(base + address)
                browser.screenshot(OUT / f"{name}.png")
                print(f"screenshot build/screenshots/{name}.png of /dloop/{address}")
            for address in pages():
                browser.open(base + address)
                found = browser.evaluate(MEASURE)
                for block in found["wide"]:
                    failures.append(
                        f"/dloop/{address}: a code block {block['width']} px wide in a "
                        f"{block['column']} px column: {block['line']!r}"
                    )
                if found["quotes"]:
                    failures.append(f"/dloop/{address}: a docstring renders as nested quotes")
                print(f"checked /dloop/{address}: {len(found['wide'])} blocks too wide")
            browser.open(base)
            result = browser.evaluate(SEARCH % json.dumps(SEARCHED))
        finally:
            browser.close()
            server.shutdown()
    listed = {urllib.parse.urlsplit(link).path[len(PREFIX) :] for link in result["links"]}
    counted = re.search(r"\d+", result["meta"])
    wanted = pages_using(SEARCHED)
    print(
        f"search for {SEARCHED}: {result['meta'].strip()}, {len(result['links'])} shown; lists "
        f"{len(listed & wanted)} of the {len(wanted)} pages that use it: "
        f"{', '.join('/' + p for p in sorted(wanted))}"
    )
    if counted is None or int(counted.group()) != len(result["links"]):
        failures.append(
            f"the search for {SEARCHED} says {result['meta'].strip()!r} but shows "
            f"{len(result['links'])} results"
        )
    if not wanted or wanted - listed:
        failures.append(f"the search for {SEARCHED} misses {sorted(wanted - listed)}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    print(f"{len(failures)} problems; screenshots in build/screenshots/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
