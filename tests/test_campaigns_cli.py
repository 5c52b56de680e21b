"""`ussd-gateway campaign ...` on a real Redis, and what a campaign is checked for before launch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ussd_gateway.campaigns.model import parse_filter
from ussd_gateway.campaigns.sizing import sms_size
from ussd_gateway.channels.smpp.encoding import split_sms
from ussd_gateway.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else err


def test_a_campaign_from_csv_to_status(tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """create from a CSV (bad rows reported), preview shows the parts and the texts,
    start and pause move it, status and list report it."""
    csv = tmp_path / "vang.csv"
    csv.write_text("msisdn,name\n0970000001,Lan\n84970000002,Minh\nnot-a-number,X\n0970000001,Lan\n")
    code, made = run(capsys, "campaign", "create", "Tri an thang 6", "--redis-url", redis_url, "--csv", str(csv),
                     "--vi", "Chao {name}, ban co {points|number} diem.", "--vi-dau", "Chào {name}, bạn có {points|number} điểm.")
    assert code == 0 and made == {"id": "tri-an-thang-6", "target": "csv", "rows": 2, "columns": ["name"], "invalid": 1,
                                  "invalid_examples": ["not-a-number"], "duplicates": 1}
    code, preview = run(capsys, "campaign", "preview", "tri-an-thang-6", "--redis-url", redis_url)
    assert preview["targets"] == 2 and preview["sms_parts"] == {"1": 2} and preview["too_long"] == 0
    first = preview["samples"][0]
    assert first["vi"]["text"].startswith("Chao Lan, ban co ") and first["vi"]["size"].startswith("1 SMS (GSM-7")
    # No English text: the Vietnamese one, with English number formats.
    assert first["vi_dau"]["size"].startswith("1 SMS (UCS-2") and first["en"]["text"].startswith("Chao Lan, ban co ")
    assert run(capsys, "campaign", "start", "tri-an-thang-6", "--redis-url", redis_url)[1]["status"] == "running"
    assert run(capsys, "campaign", "pause", "tri-an-thang-6", "--redis-url", redis_url)[1]["status"] == "paused"
    code, refused = run(capsys, "campaign", "pause", "tri-an-thang-6", "--redis-url", redis_url)
    assert code == 1 and "is paused: cannot pause" in refused
    code, status = run(capsys, "campaign", "status", "tri-an-thang-6", "--redis-url", redis_url)
    assert status["status"] == "paused" and status["targets"] == 2 and status["sent"] == 0
    assert [c["id"] for c in run(capsys, "campaign", "list", "--redis-url", redis_url)[1]] == ["tri-an-thang-6"]


def test_a_filter_campaign_over_the_generated_population(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Filters select from the demo backend's generated subscribers; every sample matches."""
    code, made = run(capsys, "campaign", "create", "Vang chua MAX90", "--redis-url", redis_url,
                     "--filter", "tier=Vang points>=5000 lacks=MAX90 kndl=yes", "--vi", "{name}: {tier} {points|number} diem, goi {package}")
    assert code == 0 and made["target"] == "filter"
    preview = run(capsys, "campaign", "preview", made["id"], "--redis-url", redis_url, "--sample", "20")[1]
    assert 100 < preview["targets"] < 5000
    for sample in preview["samples"]:
        assert ": Vang " in sample["vi"]["text"] and "MAX90" not in sample["vi"]["text"]


def test_mistakes_are_refused_before_launch(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, error = run(capsys, "campaign", "create", "X", "--redis-url", redis_url, "--filter", "tier=Vang", "--vi", "Chao {nmae}")
    assert code == 1 and "unknown variable {nmae}" in error
    code, error = run(capsys, "campaign", "create", "X", "--redis-url", redis_url, "--filter", "colour=red", "--vi", "Chao")
    assert code == 1 and "filter term 'colour=red'" in error
    assert parse_filter("arpu=50000-200000").arpu_max == 200000


@pytest.mark.parametrize("text", ["a" * 160, "a" * 161, "[" * 80, "a" * 152 + "[" + "b" * 200, "ệ" * 70, "ệ" * 71, "😀" * 40, "ệ" * 66 + "😀" * 3])
def test_the_parts_shown_are_the_parts_sent(text: str) -> None:
    assert sms_size(text).parts == len(split_sms(text, packed=False, reference=1))
