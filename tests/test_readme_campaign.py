"""The README's campaign walk-through, run as written: Redis, the SMSC simulator and a
server in the background, then the five commands from a CSV to `status --chart`. Only
ports and the /tmp folder are changed (free ones, the test's own), and quiet hours are
turned off through the environment as the README says to do at night."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ussd_gateway.testkit.redis_server import free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough() -> tuple[list[str], list[str]]:
    """The two `sh` blocks of the campaigns section: (set-up lines, the five commands)."""
    section = README.read_text().split("## Care campaigns: from a CSV to status in five commands", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "the section has its set-up block and its five commands"
    return [_joined(block) for block in blocks]  # type: ignore[return-value]


def _joined(block: str) -> list[str]:
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited with {process.returncode}"
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_the_readme_campaign_commands_work(tmp_path: Path) -> None:
    setup, commands = walkthrough()
    assert len([c for c in commands if "ussd-gateway campaign" in c]) == 4 and len(commands) == 5
    redis_port, smpp_port, http_port = free_port(), free_port(), free_port()
    bin_dir = str(Path(sys.executable).parent) + "/"

    def adapt(line: str) -> str:
        # /tmp/ first: the checkout itself may be under /tmp (a CI clone).
        line = line.replace("/tmp/", f"{tmp_path}/").replace(".venv/bin/", bin_dir).replace("6399", str(redis_port))
        line = line.replace("--port 8082", f"--port {http_port}")
        line = line.replace("smsc --quiet", f"smsc --quiet --port {smpp_port} --control-port 0")
        return line.replace('password = \\"secret\\"', f'port = {smpp_port}\\npassword = \\"secret\\"').replace(
            'password = "secret"', f'port = {smpp_port}\\npassword = "secret"')

    env = {**os.environ, "USSD_CAMPAIGNS_QUIET_START": "00:00", "USSD_CAMPAIGNS_QUIET_END": "00:00"}
    background: list[subprocess.Popen[bytes]] = []
    try:
        for line in map(adapt, setup):
            command = line.split("#", 1)[0].strip() if " #" in line else line
            if command.endswith("&"):
                with open(tmp_path / f"background-{len(background)}.log", "wb") as log:
                    process = subprocess.Popen(["bash", "-c", "exec " + command[:-1]], env=env, cwd=tmp_path,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                background.append(process)
                port = redis_port if "redis-server" in command else smpp_port if " smsc " in command else http_port
                wait_port(port, process)
            else:
                subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, check=True, timeout=30)
        assert "port = " in (tmp_path / "care.toml").read_text()
        outputs = []
        for line in map(adapt, commands):
            command = re.sub(r"\s+#[^'\"]*$", "", line)
            done = subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            outputs.append(done.stdout)
        assert '"rows": 2' in outputs[1] and '"targets": 2' in outputs[2]
        assert "] 100%  2/2" in outputs[3] and '"status": "done"' in outputs[3]
        status = outputs[4]
        deadline = time.monotonic() + 10
        while "delivered 2" not in status and time.monotonic() < deadline:  # the receipts may trail the last submit
            time.sleep(0.2)
            status = subprocess.run(["bash", "-c", re.sub(r"\s+#[^'\"]*$", "", adapt(commands[4]))], env=env, cwd=tmp_path,
                                    capture_output=True, text=True, timeout=30).stdout
        assert "Tri an (tri-an): done" in status and "sent 2 · delivered 2" in status, status
        assert "follow-up *090*4#" in status and re.search(r"\d\dh  sent      █+ 2\n", status), status
    finally:
        for process in background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in background:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.parametrize("needle", ["campaign create", "campaign preview", "campaign start", "campaign status"])
def test_the_walkthrough_names_each_step(needle: str) -> None:
    assert any(needle in line for line in walkthrough()[1])
