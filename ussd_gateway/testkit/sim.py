"""`ussd-gateway sim`: a phone in the terminal, dialling a running server.

It speaks the server's JSON dialect (with `seq`, so it is retry-safe like a real
gateway), shows each screen in a phone-sized frame, reads the subscriber's answer, and
exits at END. Ctrl-D or Ctrl-C releases the dialogue (an `abort`), as hanging up does.
With `record`, the session just played is written as a transcript (docs/transcripts.md)
that `ussd-gateway replay` plays back.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, TextIO

WIDTH = 30


def frame(text: str, *, end: bool) -> str:
    """A phone screen: the text wrapped to the width of a small display."""
    lines: list[str] = []
    for line in text.split("\n"):
        lines += textwrap.wrap(line, WIDTH) or [""]
    top = "+" + "-" * (WIDTH + 2) + "+"
    body = [f"| {line.ljust(WIDTH)} |" for line in lines]
    footer = "[END: the dialogue is over]" if end else "[reply, or Ctrl-D to hang up]"
    return "\n".join([top, *body, top, footer])


class SimError(RuntimeError):
    pass


def post_json(url: str, body: dict[str, Any], timeout: float = 5.0, *, path: str = "/ussd") -> dict[str, Any]:
    request = urllib.request.Request(
        url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise SimError(f"server refused the hop ({error.code}): {error.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as error:
        raise SimError(f"cannot reach {url}: {getattr(error, 'reason', error)}. Is `ussd-gateway serve` running?") from None


def run_sim(
    *,
    url: str,
    msisdn: str,
    code: str,
    lang: str | None = None,
    read: Callable[[str], str] = input,
    out: TextIO = sys.stdout,
    smpp: str | None = None,
    record: str | None = None,
    wait_push: float = 0.0,
) -> int:
    recorder = None
    if record:
        from ussd_gateway.app.recording import SessionRecorder

        recorder = SessionRecorder(msisdn=msisdn, code=code, language=lang)
    try:
        if smpp and wait_push:
            return _wait_push_over_smpp(smpp, msisdn=msisdn, wait_s=wait_push, read=read, out=out, recorder=recorder)
        if smpp:
            return _run_over_smpp(smpp, msisdn=msisdn, code=code, read=read, out=out, recorder=recorder)
        return _run_over_http(url, msisdn=msisdn, code=code, lang=lang, read=read, out=out, recorder=recorder)
    finally:
        if recorder is not None and record and recorder.hops:
            path = recorder.write(record, channel="SMPP" if smpp else "HTTP (JSON)")
            print(f"(recorded {len(recorder.hops)} screen(s) to {path}; replay: ussd-gateway replay {path})", file=out)


def _converse(
    first: tuple[str, bool],
    answer: Callable[[str], tuple[str, bool]],
    hang_up: Callable[[], None],
    *,
    read: Callable[[str], str],
    out: TextIO,
    recorder: Any,
) -> int:
    """Play one dialogue, whatever carries it: show each screen (`(text, end)`), read
    the subscriber's answer and send it with `answer`, until an END screen. Ctrl-D or
    Ctrl-C calls `hang_up` instead."""
    screen, end = first
    text: str | None = None
    while True:
        print(frame(screen, end=end), file=out, flush=True)
        if recorder is not None:
            recorder.screen(text, screen, end)
        if end:
            return 0
        try:
            text = read("> ")
        except (EOFError, KeyboardInterrupt):
            hang_up()
            if recorder is not None:
                recorder.hangup()
            print("\n(hung up)", file=out)
            return 0
        screen, end = answer(text)


def _run_over_http(url: str, *, msisdn: str, code: str, lang: str | None, read: Callable[[str], str], out: TextIO, recorder: Any) -> int:
    session_id = "sim-" + uuid.uuid4().hex[:12]
    base = {"session_id": session_id, "msisdn": msisdn, "service_code": code}
    if lang:
        base["language"] = lang
    seq = 0

    def answer(text: str) -> tuple[str, bool]:
        nonlocal seq
        seq += 1
        reply = post_json(url, {**base, "event": "continue", "input": text, "seq": seq})
        return reply["text"], reply["end"]

    def hang_up() -> None:
        post_json(url, {**base, "event": "abort", "seq": seq + 1})

    try:
        reply = post_json(url, {**base, "event": "begin", "seq": seq})
        return _converse((reply["text"], reply["end"]), answer, hang_up, read=read, out=out, recorder=recorder)
    except SimError as error:
        print(f"sim: {error}", file=sys.stderr)
        return 1


def _run_over_smpp(control: str, *, msisdn: str, code: str, read: Callable[[str], str], out: TextIO, recorder: Any = None) -> int:
    """Dial through a running `ussd-gateway smsc` (its control API at HOST:PORT): the
    simulator sends the deliver_sm a real USSD gateway would, the server answers with
    submit_sm, and the screens are the same as over HTTP."""
    base = control if control.startswith("http") else f"http://{control}"
    try:
        started = post_json(base, {"msisdn": msisdn, "code": code, "timeout": 5}, path="/ussd/start")
        return _converse_through_control(base, started, read=read, out=out, recorder=recorder)
    except SimError as error:
        print(f"sim: {error} (is `ussd-gateway smsc` running, and the server bound to it?)", file=sys.stderr)
        return 1


def _converse_through_control(base: str, opened: dict[str, Any], *, read: Callable[[str], str], out: TextIO, recorder: Any) -> int:
    """Converse over the simulator's control API in the dialogue `opened` (its
    `dialogue_id` and first `screen`), dialled or pushed."""
    dialogue = opened["dialogue_id"]

    def answer(text: str) -> tuple[str, bool]:
        screen = post_json(base, {"text": text, "timeout": 5}, path=f"/ussd/{dialogue}/answer")["screen"]
        return screen["text"], screen["end"]

    def hang_up() -> None:
        post_json(base, {}, path=f"/ussd/{dialogue}/abort")

    first = opened["screen"]
    return _converse((first["text"], first["end"]), answer, hang_up, read=read, out=out, recorder=recorder)


def _wait_push_over_smpp(control: str, *, msisdn: str, wait_s: float, read: Callable[[str], str], out: TextIO, recorder: Any = None) -> int:
    """Wait (up to `wait_s` seconds) for a USSD push to `msisdn` through a running
    `ussd-gateway smsc`, show it as the phone would, and answer it like any dialogue.
    A notify-only push is acknowledged (USSN confirm) once shown."""
    base = control if control.startswith("http") else f"http://{control}"
    print(f"(waiting up to {wait_s:g} s for a USSD push to {msisdn})", file=out, flush=True)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                print("sim: no push arrived", file=sys.stderr)
                return 1
            query = urllib.parse.urlencode({"msisdn": msisdn, "timeout": f"{min(left, 30):.1f}"})
            pushed = get_json(f"{base}/ussd/push?{query}", timeout=min(left, 30) + 5)
            if pushed is not None:
                break
        status = _converse_through_control(base, pushed, read=read, out=out, recorder=recorder)
        if pushed["screen"]["end"]:
            post_json(base, {}, path=f"/ussd/{pushed['dialogue_id']}/confirm")
        return status
    except SimError as error:
        print(f"sim: {error} (is `ussd-gateway smsc` running, and the server bound to it?)", file=sys.stderr)
        return 1


def get_json(url: str, timeout: float) -> dict[str, Any] | None:
    """GET a JSON answer; None on 504 (nothing came in time)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        if error.code == 504:
            return None
        raise SimError(f"refused ({error.code}): {error.read().decode(errors='replace').strip()}") from None
    except (urllib.error.URLError, OSError) as error:
        raise SimError(f"cannot reach {url}: {getattr(error, 'reason', error)}") from None
