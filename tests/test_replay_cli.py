"""`ussd-gateway replay` as a tester runs it: the real CLI in a subprocess against a
real `serve` subprocess (and, for SMPP, a real `smsc` subprocess the server binds to)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "sessions" / "transcripts"
TRANSCRIPTS = sorted(FOLDER.glob("*.toml"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ussd_gateway.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
    )


def start(*args: str, cwd: Path = ROOT) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ussd_gateway.cli", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stderr:
        process.stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh `ussd-gateway serve` (embedded defaults) on a free port."""
    port = free_port()
    process = start("serve", "--port", str(port), cwd=tmp_path_factory.mktemp("serve"))
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", process)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@pytest.fixture(scope="module")
def smpp_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ussd-gateway smsc` and a `serve` bound to it; yields the control API HOST:PORT."""
    smpp_port, control_port, http_port = free_port(), free_port(), free_port()
    workdir = tmp_path_factory.mktemp("smpp")
    smsc = start("smsc", "--port", str(smpp_port), "--control-port", str(control_port), "--quiet", cwd=workdir)
    config = workdir / "smpp.toml"
    config.write_text(f'[[smpp.binds]]\nname = "sim"\npassword = "secret"\nport = {smpp_port}\nshort_codes = ["9237", "999"]\n')
    serve = None
    try:
        wait_http(f"http://127.0.0.1:{control_port}/binds", smsc)
        serve = start("serve", "--config", str(config), "--port", str(http_port), cwd=workdir)
        wait_http(f"http://127.0.0.1:{http_port}/healthz", serve)
        deadline = time.monotonic() + 10
        while b'"bind_id"' not in urllib.request.urlopen(f"http://127.0.0.1:{control_port}/binds").read():
            assert time.monotonic() < deadline, "the server never bound to the simulator"
            time.sleep(0.1)
        yield f"127.0.0.1:{control_port}"
    finally:
        if serve is not None:
            stop(serve)
        stop(smsc)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class TestReplayOverHttp:
    def test_the_whole_folder_passes_and_writes_junit(self, server: str, tmp_path: Path) -> None:
        """replay sessions/transcripts → exit 0, a summary, and JUnit XML with one testcase each."""
        junit = tmp_path / "junit.xml"
        done = cli("replay", "sessions/transcripts", "--url", server, "--junit", str(junit), "--concurrency", "8")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"OK: {len(TRANSCRIPTS)} passed, 0 failed" in done.stdout
        suite = ET.parse(junit).getroot()
        assert suite.tag == "testsuite" and suite.get("tests") == str(len(TRANSCRIPTS)) and suite.get("failures") == "0"
        cases = suite.findall("testcase")
        assert len(cases) == len(TRANSCRIPTS)
        assert all(case.find("failure") is None and case.get("classname") == "transcripts.json" for case in cases)

    def test_a_failing_transcript_exits_1_with_both_screens(self, server: str, tmp_path: Path) -> None:
        """A wrong expectation: exit 1, the step's expected and actual side by side, a JUnit failure."""
        bad = _write(
            tmp_path / "wrong.toml",
            'name = "wrong"\nmsisdn = "84910007001"\ndial = "*090#"\n\n[[steps]]\nsend = "2"\nexpect_contains = "Goi Vang"\n',
        )
        good = _write(tmp_path / "good.toml", 'msisdn = "84910007002"\ndial = "*101#"\n[[steps]]\nexpect_end = true\n')
        junit = tmp_path / "junit.xml"
        done = cli("replay", str(bad), str(good), "--url", server, "--channel", "africastalking", "--junit", str(junit))
        assert done.returncode == 1, done.stdout + done.stderr
        out = done.stdout
        assert f"FAIL wrong [africastalking] {bad}:5" in out
        assert "step 1: send '2'" in out
        header = next(line for line in out.splitlines() if line.strip().startswith("expected"))
        assert header.split("|")[1].strip() == "actual"
        row = next(line for line in out.splitlines() if "the screen contains 'Goi Vang'" in line)
        assert row.split("|")[1].strip() == "Mua goi cuoc"
        assert any(line.split("|")[-1].strip() == "4. Goi y cho ban" for line in out.splitlines() if "|" in line)
        assert "FAILED: 1 passed, 1 failed" in out
        suite = ET.parse(junit).getroot()
        failures = [case for case in suite.findall("testcase") if case.find("failure") is not None]
        assert [case.get("name") for case in failures] == ["wrong"]
        failure = failures[0].find("failure")
        assert failure is not None and "Goi Vang" in (failure.get("message") or "") and "Mua goi cuoc" in (failure.text or "")

    def test_variables_from_the_command_line(self, server: str, tmp_path: Path) -> None:
        """--var fills {msisdn} (as in a recorded transcript) and any other placeholder."""
        recorded = _write(tmp_path / "rec.toml", 'msisdn = "{msisdn}"\ndial = "*101#"\n[[steps]]\nexpect_contains = "{amount}"\n')
        done = cli("replay", str(recorded), "--url", server, "--var", "msisdn=84910007003", "--var", "amount=100.000d")
        assert done.returncode == 0, done.stdout + done.stderr
        missing = cli("replay", str(recorded), "--url", server)
        assert missing.returncode == 1 and "--var" in missing.stdout

    def test_bad_transcripts_and_options_exit_2(self, tmp_path: Path) -> None:
        """A format error names file:line and nothing runs; wrong options are refused."""
        typo = _write(tmp_path / "typo.toml", 'msisdn = "1"\ndial = "*090#"\n[[steps]]\nsendd = "1"\n')
        done = cli("replay", str(typo), "--url", "http://127.0.0.1:9")
        assert done.returncode == 2 and f"{typo}:4: step 1: unknown key 'sendd' (did you mean 'send'?)" in done.stderr
        assert cli("replay", str(FOLDER), "--channel", "smpp").returncode == 2
        assert cli("replay", str(FOLDER), "--var", "oops").returncode == 2

    def test_server_down_fails_cleanly(self, tmp_path: Path) -> None:
        """Nothing listening: every transcript fails with the reason, exit 1, no traceback."""
        done = cli("replay", str(TRANSCRIPTS[0]), "--url", f"http://127.0.0.1:{free_port()}")
        assert done.returncode == 1 and "cannot reach" in done.stdout and "Traceback" not in done.stderr


class TestReplayOverSmpp:
    def test_the_whole_folder_passes_over_smpp(self, smpp_rig: str, tmp_path: Path) -> None:
        """replay --smpp HOST:PORT drives the simulator; the same transcripts pass."""
        junit = tmp_path / "junit.xml"
        done = cli("replay", "sessions/transcripts", "--smpp", smpp_rig, "--junit", str(junit))
        assert done.returncode == 0, done.stdout + done.stderr
        suite = ET.parse(junit).getroot()
        assert len(suite.findall("testcase")) == len(TRANSCRIPTS)
        assert {case.get("classname") for case in suite.findall("testcase")} == {"transcripts.smpp"}
