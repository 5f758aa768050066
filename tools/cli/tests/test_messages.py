"""``riskwatch messages --sample``: every rule kind's messages, readable and valid."""

from __future__ import annotations

import re

import pytest

from riskwatch_cli.__main__ import main
from riskwatch_cli.messages import sample_alerts
from riskwatch_common.fakes import telegram_accepts


def _sections(out: str) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for block in out.split("=== ")[1:]:
        title, _, body = block.partition("\n")
        parts = re.split(r"^--- (telegram|slack|console).*\n", body, flags=re.M)
        found[title.split(" ===")[0].strip()] = dict(zip(parts[1::2], parts[2::2], strict=True))
    return found


def test_sample_prints_every_rule_kind_for_telegram_slack_and_console(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["messages", "--sample", "--timezone", "Europe/Berlin"]) == 0
    sections = _sections(capsys.readouterr().out)
    assert len(sections) == len(sample_alerts())
    rules = {a.rule for a in sample_alerts()}
    assert {title.split(" (")[0] for title in sections} == rules
    for title, channel in sections.items():
        telegram = channel["telegram"].strip()
        assert telegram_accepts(telegram), title
        assert not re.search(r"\d\.\d{5,}", telegram), title  # rounded, never raw Decimals
        assert "sub_90x:" not in telegram, title  # ids stay off the phone
        assert "CET" in telegram, title
        assert '"blocks"' in channel["slack"], title
        assert "corr=" in channel["console"], title
    liq = sections["liquidation_distance (raised)"]["telegram"]
    assert liq.startswith("<b>🔴 HIGH · sub_90x · BTCUSDT 4.8% from liquidation</b>")
    assert "👉 <b>add at least 21,334 USDT margin or cut BTCUSDT by 5.71 BTC" in liq
    expiring = sections["account_link (raised)"]["telegram"]
    assert expiring.startswith("<b>🟠 WARNING · sub_90x · API key expires Fri 18 Dec</b>")
    assert "👉 <b>renew sub_90x's API key on Bybit before Fri 18 Dec 09:02</b>" in expiring
    down = sections["account_link (escalated)"]["telegram"]
    assert down.startswith("<b>🔴 HIGH ↑ · sub_90x · no data from Bybit: positions not watched")
    assert "👉 <b>check sub_90x's link to Bybit (API key, network)</b>" in down
    resolved = sections["liquidation_distance (resolved)"]["telegram"]
    assert resolved.startswith("<b>✅ RESOLVED · sub_90x · BTCUSDT back to 12.3% from liquidation")


def test_unknown_timezone_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["messages", "--sample", "--timezone", "Mars/Olympus"]) == 2
    assert capsys.readouterr().err.strip() == "riskwatch messages: unknown timezone 'Mars/Olympus'"
