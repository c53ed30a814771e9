"""`make screenshots`: run `signalgen dev --api-port PORT` for a while and photograph /dashboard.

    python -m signalgen.interfaces.screenshots [--seconds 300] [--every 60] [--out artifacts]

Environment: `SCREENSHOT_SECONDS` (how long the service runs, default 300), `SCREENSHOT_EVERY`
(seconds between pictures, default 60), `SCREENSHOT_DIR` (default `artifacts/`). Writes
`dashboard-<elapsed>s.png` along the way and `dashboard.png` at the end, each 1400x2200, taken
by headless Chromium (`apt-get install -y chromium`). The dev service runs in its own process
group, stopped with SIGINT (its clean Ctrl-C) and killed if it lingers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

WINDOW = "1400,2200"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("screenshots: chromium is not installed (apt-get install -y chromium)")
    return found


def wait_for(url: str, timeout: float, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"screenshots: signalgen dev exited with {service.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local URL)
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise SystemExit(f"screenshots: {url} did not answer within {timeout:.0f} s")


def shoot(binary: str, url: str, target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="signalgen-chromium-") as profile:
        done = subprocess.run(  # noqa: S603 (our own arguments)
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--window-size={WINDOW}",
                f"--screenshot={target}",
                url,
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
    if done.returncode != 0 or not target.exists():
        tail = done.stderr.decode(errors="replace")[-500:]
        raise SystemExit(f"screenshots: chromium failed ({done.returncode}): {tail}")
    print(f"screenshots: wrote {target}", flush=True)


def stop(service: subprocess.Popen[bytes]) -> None:
    if service.poll() is not None:
        return
    os.killpg(service.pid, signal.SIGINT)
    try:
        service.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(service.pid, signal.SIGKILL)
        service.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--seconds", type=float, default=float(os.environ.get("SCREENSHOT_SECONDS", 300))
    )
    parser.add_argument(
        "--every", type=float, default=float(os.environ.get("SCREENSHOT_EVERY", 60))
    )
    parser.add_argument(
        "--out", type=Path, default=Path(os.environ.get("SCREENSHOT_DIR", "artifacts"))
    )
    options = parser.parse_args(argv)
    if options.seconds < 0 or options.every <= 0:
        parser.error("--seconds must be >= 0 and --every > 0")
    binary = chromium()
    options.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
        [
            sys.executable,
            "-c",
            "from signalgen.interfaces.cli import run; run()",
            "dev",
            "--api-port",
            str(port),
        ],
        start_new_session=True,
    )
    try:
        wait_for(f"{base}/dashboard/data?days=1", 120, service)
        started = time.monotonic()
        page = f"{base}/dashboard?refresh=0"
        next_shot = 0.0
        while (elapsed := time.monotonic() - started) < options.seconds:
            if service.poll() is not None:
                raise SystemExit(f"screenshots: signalgen dev exited with {service.returncode}")
            if elapsed >= next_shot:
                shoot(binary, page, options.out / f"dashboard-{int(elapsed):04d}s.png")
                next_shot += options.every
            time.sleep(min(1.0, max(0.0, options.seconds - elapsed)))
        shoot(binary, page, options.out / "dashboard.png")
    finally:
        stop(service)
    return 0


if __name__ == "__main__":
    sys.exit(main())
