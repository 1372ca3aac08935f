"""Helpers for tests of the `deployments/stack.sh` stack: its credentials, authenticated API calls,
the processes under a worker, and a headless Chromium signed in to the UI."""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path


def stack_credentials(directory: Path) -> str:
    """The basic-auth string the stack generated into DIR/auth.env (read as a shell would)."""
    line = (Path(directory) / "auth.env").read_text().strip()
    assert line.startswith("export PREFECT_API_AUTH_STRING="), "unexpected auth.env"
    return shlex.split(line.removeprefix("export PREFECT_API_AUTH_STRING="))[0]


def api(base: str, path: str, body=None, auth: str | None = None, timeout: float = 30):
    """GET (or POST ``body``) ``base + path`` with the stack's credentials; the decoded JSON."""
    headers = {"content-type": "application/json"}
    if auth is not None:
        headers["authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                     headers=headers, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def descendants(pid: int) -> list[int]:
    """pid and every process below it (children in other sessions included), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def flow_run_of(pid: int) -> str | None:
    """The flow run a process works for (PREFECT__FLOW_RUN_ID in its environment), if any."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    found = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"PREFECT__FLOW_RUN_ID=")]
    return found[0] if found else None


class SignedInChromium:
    """Headless Chromium driven over the DevTools protocol, signed in to a Prefect UI that
    requires basic auth: the UI keeps the credentials in localStorage (`prefect-password`), which
    is set on the server's origin before the page under test loads. The credentials travel in
    DevTools messages, never on a command line."""

    def __init__(self, chromium: str, profile: Path, ui: str, auth: str):
        self.ui, self.auth, self.profile = ui, auth, Path(profile)
        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "DevToolsActivePort").unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self.profile}", "--window-size=1400,1400", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._ws = None
        self._id = 0

    def __enter__(self) -> SignedInChromium:
        from websockets.sync.client import connect

        deadline = time.time() + 60
        port_file = self.profile / "DevToolsActivePort"
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.time() < deadline and self.proc.poll() is None, "chromium did not open its DevTools port"
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in api(f"http://127.0.0.1:{port}", "/json/list") if t["type"] == "page"]
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30)
        self.call("Page.enable")
        self.open(f"{self.ui}/robots.txt")  # any page of the server's origin, to reach its localStorage
        self.evaluate(f"localStorage.setItem('prefect-password', btoa({json.dumps(self.auth)}))")
        return self

    def __exit__(self, *exc) -> None:
        if self._ws is not None:
            self._ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def call(self, method: str, **params):
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._id:
                assert "error" not in message, message
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.time() + 30
        while self.evaluate("document.readyState") != "complete":
            assert time.time() < deadline, f"{url} did not load"
            time.sleep(0.2)

    def dom_when(self, url: str, *needles: str, timeout: float = 120) -> str:
        """Open ``url`` and return its DOM once it contains every needle (the UI renders late)."""
        self.open(url)
        deadline = time.time() + timeout
        while True:
            dom = self.evaluate("document.documentElement.outerHTML") or ""
            if all(n in dom for n in needles) or time.time() > deadline:
                return dom
            time.sleep(0.5)

    def screenshot(self, path: Path) -> None:
        Path(path).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))


def stack_env(directory: Path, port: int) -> dict[str, str]:
    """The environment a user of the stack has after `source STACK_DIR/auth.env`."""
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_HOME": str(Path(directory) / "home"),
           "PREFECT_API_AUTH_STRING": stack_credentials(directory)}
    return env
