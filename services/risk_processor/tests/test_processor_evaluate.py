"""One evaluation, without a broker: engine in, snapshot and alert events out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from processor_testkit import BRIEF_BTC_TIERS, T0, order, position, tier_table, wallet
from risk_processor import state
from risk_processor.config import load_config, parse_config
from risk_processor.engine import DEFAULT_THRESHOLDS
from risk_processor.evaluate import AccountState, evaluate_account, evaluate_portfolio
from risk_processor.outputs import Cause, account_snapshot, exposure_key, portfolio_snapshot
from riskwatch_common.contracts import ActionKind, ExposureSnapshotted, Side
from riskwatch_common.render import deadline, describe_action
from riskwatch_common.settings import ConfigError
from riskwatch_common.topics import EXPOSURES

D = Decimal
CAUSE = Cause("corr-1", T0, T0)
MARKS = {"BTCUSDT": D(70000), "ETHUSDT": D(3520), "SOLUSDT": D("176.5"), "BNBUSDT": D(584)}
# The brief's 10,000 USD net limit, which is opt-in (off by default).
NET_10K = parse_config({"thresholds": {"net_exposure_usd": 10000}})


def account(name: str, *events: object) -> AccountState:
    positions: dict[str, state.PositionEntry] = {}
    orders = state.OrderBook()
    held_wallet = None
    for e in events:
        if e.event_type == "PositionUpdated":  # type: ignore[attr-defined]
            state.apply_position(positions, e)  # type: ignore[arg-type]
        elif e.event_type == "OrderUpdated":  # type: ignore[attr-defined]
            state.apply_order(orders, e)  # type: ignore[arg-type]
        else:
            held_wallet = state.apply_wallet(held_wallet, e)  # type: ignore[arg-type]
    return AccountState(name, positions, orders, held_wallet)


def evaluate(acc: AccountState, config=None, *, tiers=None, now=T0):  # type: ignore[no-untyped-def]
    return evaluate_account(
        acc,
        marks=MARKS,
        tiers=tiers or {},
        config=config or parse_config({}),
        now=now,
        cause=CAUSE,
        source="risk-processor/test",
    )


SAMPLE = {
    "main": account(
        "main",
        position("main", "BTCUSDT", Side.BUY, "0.5", 67500, 10),
        position("main", "ETHUSDT", Side.BUY, 5, 3450, 5),
    ),
    "sub_trading": account(
        "sub_trading", position("sub_trading", "SOLUSDT", Side.SELL, 100, 175, 3)
    ),
    "sub_hedge": account("sub_hedge", position("sub_hedge", "BNBUSDT", Side.BUY, 20, 580, 8)),
}


def test_account_snapshot_wire_form_is_a_valid_contract_event_with_the_engine_numbers() -> None:
    result = evaluate(SAMPLE["main"])
    body, _ = account_snapshot(result.exposure, now=T0, cause=CAUSE, source="rp/test")
    snap = EXPOSURES.decode(body)
    assert isinstance(snap, ExposureSnapshotted)
    assert snap.total_long == D("0.5") * 70000 + 5 * D(3520)
    assert snap.unrealised_pnl == D(1600)
    assert snap.correlation_id == "corr-1"
    assert snap.produced_at == T0
    assert {p.symbol: p.notional for p in snap.positions} == {
        "BTCUSDT": D(35000),
        "ETHUSDT": D(17600),
    }
    # The id is a digest of the content: same content, same id, whenever it is produced.
    again, _ = account_snapshot(
        result.exposure, now=T0 + timedelta(hours=1), cause=CAUSE, source="x"
    )
    assert EXPOSURES.decode(again).event_id == snap.event_id


def test_sample_portfolio_numbers_and_portfolio_alerts() -> None:
    summaries = {
        name: state.AccountSummary(evaluate(acc).exposure, 0, "c", 0)
        for name, acc in SAMPLE.items()
    }
    result = evaluate_portfolio(
        summaries, state.EMPTY_RISK, config=NET_10K, now=T0, cause=CAUSE, source="rp"
    )
    p = result.exposure
    assert (p.total_long, p.total_short, p.net, p.gross) == (D(64280), D(17650), D(46630), D(81930))
    assert p.unrealized_pnl == D(1530)
    rules = {a.rule: a for a in result.alerts}
    assert set(rules) == {"net_exposure_usd", "direction_bias", "correlation_risk"}
    assert rules["net_exposure_usd"].numbers["net"] == D(46630)
    assert all(a.account == "portfolio" and a.correlation_id == "corr-1" for a in result.alerts)
    body, _ = portfolio_snapshot(p, now=T0, cause=CAUSE, source="rp")
    snap = EXPOSURES.decode(body)
    assert snap.net == D(46630)
    assert snap.buy_side_share == D("0.75")
    assert snap.positions == ()


def test_portfolio_rules_wait_for_every_expected_account_or_say_who_is_missing() -> None:
    config = parse_config(
        {
            "thresholds": {"net_exposure_usd": 10000},
            "portfolio_warmup": {"accounts": list(SAMPLE), "timeout_s": 60},
        }
    )
    two = {
        name: state.AccountSummary(evaluate(SAMPLE[name]).exposure, 0, "c", 0)
        for name in ("main", "sub_trading")
    }

    def run(summaries, risk, now, **kw):  # type: ignore[no-untyped-def]
        return evaluate_portfolio(
            summaries, risk, config=config, now=now, cause=CAUSE, source="rp", **kw
        )

    # Two of three accounts: a net of 34,950 would be a wrong total. No alert, but the
    # exposure is computed and the warm-up clock starts.
    early = run(two, state.EMPTY_RISK, T0)
    assert early.alerts == ()
    assert early.exposure.net == D(52600) - D(17650)
    assert early.risk.warmup_started == T0
    assert run(two, early.risk, T0 + timedelta(seconds=59)).alerts == ()
    # The shell's view of resyncs wins over "evaluated once": all three evaluated but one
    # not resynced yet still waits.
    three = {
        **two,
        "sub_hedge": state.AccountSummary(evaluate(SAMPLE["sub_hedge"]).exposure, 0, "c", 0),
    }
    assert run(three, early.risk, T0, resynced={"main", "sub_trading"}).alerts == ()
    # After the timeout the rules run on what is there and say who is missing.
    late = run(two, early.risk, T0 + timedelta(seconds=60))
    [net] = [a for a in late.alerts if a.rule == "net_exposure_usd"]
    assert net.reason.endswith("(warm-up timed out: 1 account(s) not loaded yet: sub_hedge)")
    assert net.numbers["accounts_missing"] == 1
    # Everyone loaded: the true total, no note.
    full = run(three, early.risk, T0 + timedelta(seconds=1))
    [net] = [a for a in full.alerts if a.rule == "net_exposure_usd"]
    assert net.numbers["net"] == D(46630)
    assert "warm-up" not in net.reason
    # Without configured accounts, the accounts that reported a link status are expected.
    bare = parse_config({"thresholds": {"net_exposure_usd": 10000}})
    waiting = evaluate_portfolio(
        three,
        state.EMPTY_RISK,
        config=bare,
        now=T0,
        cause=CAUSE,
        source="rp",
        resynced={"main"},
        known={"main", "sub_trading", "sub_hedge"},
    )
    assert waiting.alerts == ()
    # The warm-up start survives the changelog (a restart does not restart it).
    assert state.risk_from_json(state.risk_to_json(early.risk)).warmup_started == T0


def test_alert_event_ids_are_the_same_on_replay_and_new_after_a_resolve() -> None:
    acc = SAMPLE["sub_hedge"]
    first = evaluate(acc, NET_10K)
    replay = evaluate(acc, NET_10K, now=T0 + timedelta(seconds=5))  # same state, later clock
    assert [a.event_id for a in first.alerts] == [a.event_id for a in replay.alerts]
    assert first.risk.seqs == {a.alert_id: 1 for a in first.alerts}

    # Close the position: the alert resolves after clear_after absences, then re-raises
    # with a new id (the transition count survives the resolution).
    flat = account("sub_hedge", position("sub_hedge", "BNBUSDT", None, 0, 0, 8, seq=2))
    held = AccountState("sub_hedge", flat.positions, risk=first.risk)
    resolved = None
    for i in range(5):
        step = evaluate(held, NET_10K, now=T0 + timedelta(seconds=i + 1))
        held = AccountState("sub_hedge", flat.positions, risk=step.risk)
        if step.alerts:
            resolved = step
            break
    assert resolved is not None
    assert {a.transition.value for a in resolved.alerts} == {"resolved"}
    reraised = evaluate(AccountState("sub_hedge", acc.positions, risk=held.risk), NET_10K)
    net = next(a for a in reraised.alerts if a.rule == "net_exposure_usd")
    assert net.transition.value == "raised"
    assert net.event_id not in {a.event_id for a in first.alerts}
    assert reraised.risk.seqs[net.alert_id] == 3


def test_thresholds_per_account_group_and_env_override(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(
        json.dumps(
            {
                "thresholds": {"unrealized_loss_usd": "-500"},
                "portfolio": {"net_exposure_usd": 100000},
                "groups": {"hedgers": {"net_exposure_usd": 50000}},
                "accounts": {
                    "sub_hedge": {"group": "hedgers"},
                    "main": {"thresholds": {"net_exposure_usd": 60000}},
                },
            }
        )
    )
    config = load_config(path, net_exposure_limit_usd=D(5000))
    assert config.base.net_exposure_usd == D(5000)  # env over the file's base
    assert config.base.unrealized_loss_usd == D(-500)
    assert config.thresholds("sub_hedge").net_exposure_usd == D(50000)  # group
    assert config.thresholds("main").net_exposure_usd == D(60000)  # account
    assert config.thresholds("sub_trading").net_exposure_usd == D(5000)
    assert config.portfolio.net_exposure_usd == D(100000)
    assert config.setup("sub_hedge").group == "hedgers"
    # main: 52,600 net under its own 60,000 limit; sub_trading: 17,650 over 5,000.
    assert "net_exposure_usd" not in {a.rule for a in evaluate(SAMPLE["main"], config).alerts}
    assert "net_exposure_usd" in {a.rule for a in evaluate(SAMPLE["sub_trading"], config).alerts}


def test_defaults_are_the_briefs_without_a_file() -> None:
    assert load_config(None).base == DEFAULT_THRESHOLDS
    assert DEFAULT_THRESHOLDS.net_exposure_usd is None  # opt-in: relative to equity by default


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"thresholds": {"net_exposure": 1}}, "unknown threshold"),
        ({"accounts": {"a": {"margin_mode": "weird"}}}, "margin_mode"),
        ({"accounts": {"a": {"leverage": 5}}}, "unknown keys"),
        ({"whatever": {}}, "unknown top-level"),
        ({"thresholds": {"buy_share_low": "0.9"}}, "buy_share_low must be below"),
    ],
)
def test_bad_thresholds_stop_startup_naming_the_problem(doc: object, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_config(doc)


def test_every_problem_of_a_thresholds_file_is_named_on_one_line(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text(
        "thresholds: {net_exposure_usd: -5}\n"
        "portfolio: {mm_rate_high: 2}\n"
        "groups: {core: {unrealized_loss_usd: 500}}\n"
        "accounts:\n"
        "  main: {margin_mode: weird, thresholds: {buy_share_high: 1.5}}\n"
        "alert_policy: {clear_after: 0}\n"
        "portfolio_warmup: {timeout_s: -1}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"thresholds file {path}: ")
    for problem in (
        "thresholds: net_exposure_usd=-5 must be positive",
        "portfolio: mm_rate_high=2 must be at most 1",
        "groups.core: unrealized_loss_usd=500 must be negative",
        "accounts.main.margin_mode: 'weird' is not one of",
        "accounts.main.thresholds: buy_share_high=1.5 must be a fraction",
        "alert_policy: clear_after=0 must be at least 1",
        "portfolio_warmup.timeout_s: -1 must be positive",
    ):
        assert problem in text


def test_yaml_thresholds_file(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text("accounts:\n  main:\n    margin_mode: isolated\n")
    assert load_config(path).setup("main").margin_mode.value == "isolated"


def test_a_duplicate_key_in_the_thresholds_file_stops_startup_with_one_line(
    tmp_path: Path,
) -> None:
    # The second `thresholds:` silently replaced the first before.
    path = tmp_path / "thresholds.yaml"
    path.write_text(
        "thresholds: {unrealized_loss_usd: -1000}\nthresholds: {net_exposure_usd: 5000}\n"
    )
    env = {
        **os.environ,
        "RISK_PROCESSOR_THRESHOLDS_FILE": str(path),
        "RISK_PROCESSOR_HTTP_PORT": "0",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    }

    done = subprocess.run(
        [sys.executable, "-m", "risk_processor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"risk-processor: thresholds file {path}: ")
    assert "duplicate key 'thresholds'" in line


def test_a_thresholds_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_bytes("accounts: {m\u00e4in: {margin_mode: isolated}}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"thresholds file {path}: not UTF-8 text"):
        load_config(path)


def test_unchanged_exposure_has_an_unchanged_key() -> None:
    a = evaluate(SAMPLE["main"]).exposure
    b = evaluate(SAMPLE["main"], now=T0 + timedelta(seconds=1)).exposure
    assert exposure_key(a) == exposure_key(b)
    moved = evaluate_account(
        SAMPLE["main"],
        marks={**MARKS, "BTCUSDT": D(70001)},
        tiers={},
        config=parse_config({}),
        now=T0,
        cause=CAUSE,
        source="x",
    ).exposure
    assert exposure_key(moved) != exposure_key(a)


def test_grace_period_keeps_the_old_table_until_the_risk_is_reduced() -> None:
    old = state.apply_tiers(None, tier_table("BTCUSDT", BRIEF_BTC_TIERS))
    assert old is not None
    tighter = [
        (1, 500_000, "0.01", "0.02", 50, 0),
        (2, 1_000_000, "0.02", "0.04", 25, 5_000),
        (3, 2_000_000, "0.04", "0.08", "12.5", 25_000),
    ]
    new = state.apply_tiers(old, tier_table("BTCUSDT", tighter, at=T0))
    assert new is not None
    risky = account(
        "risky",
        wallet("risky", equity=20_000),
        position("risky", "BTCUSDT", Side.BUY, 20, 70000, 10),
        order("risky", "BTCUSDT", "o1", Side.SELL, 1, 80000, reduce_only=True),
    )
    seen = evaluate(risky, tiers={"BTCUSDT": old})
    assert seen.risk.tiers_seen["BTCUSDT"] == old.version
    during = evaluate(
        AccountState("risky", risky.positions, risky.orders, risky.wallet, seen.risk),
        tiers={"BTCUSDT": new},
    )
    assert during.platform_changes == 1
    [change] = [a for a in during.alerts if a.rule == "platform_risk_change"]
    assert change.severity.value == "HIGH"
    # The alert carries the computed way out: add margin or cut, before the grace ends.
    assert change.action is not None
    assert change.action.kind is ActionKind.ADD_MARGIN
    assert change.action.deadline == during.risk.pending["BTCUSDT"].deadline
    [cut] = change.action.alternatives
    assert (cut.kind, cut.symbol, cut.side) == (ActionKind.REDUCE_POSITION, "BTCUSDT", Side.SELL)
    assert describe_action(change.action).endswith(
        f"before {deadline(during.risk.pending['BTCUSDT'].deadline)}"
    )
    assert "BTCUSDT" in during.risk.pending
    # Old table still applies in the grace period: tier 2 of the table in docs/product.md.
    [pe] = during.exposure.positions
    assert pe.tier is not None
    assert pe.tier.mmr == D("0.0056")

    # Still in grace on the next evaluation: the alert stays, nothing new is raised.
    again = evaluate(
        AccountState("risky", risky.positions, risky.orders, risky.wallet, during.risk),
        tiers={"BTCUSDT": new},
    )
    assert "BTCUSDT" in again.risk.pending
    assert not [a for a in again.alerts if a.rule == "platform_risk_change"]

    # The trader halves the position: under the new table 0.7 M x 2 % - 5,000 = 9,000 of
    # MM on 20,000 = 45 % < 75 %: the change applies, the grace period ends.
    smaller = account("risky", position("risky", "BTCUSDT", Side.BUY, 10, 70000, 10, seq=2))
    lifted = evaluate(
        AccountState("risky", smaller.positions, risky.orders, risky.wallet, again.risk),
        tiers={"BTCUSDT": new},
    )
    assert "BTCUSDT" not in lifted.risk.pending
    [pe] = lifted.exposure.positions
    assert pe.tier is not None
    assert pe.tier.mmr == D("0.02")


def test_bob_blocked_at_90x_alert_event_carries_lower_to_80x_with_its_alternatives() -> None:
    table = state.apply_tiers(None, tier_table("BTCUSDT", BRIEF_BTC_TIERS))
    assert table is not None
    bob = account(
        "bob",
        position("bob", "BTCUSDT", Side.BUY, 20, 50000, 90),
        order("bob", "BTCUSDT", "o1", Side.BUY, 20, 50000),
        order("bob", "BTCUSDT", "o2", Side.BUY, 20, 50000),
    )
    result = evaluate_account(
        bob,
        marks={"BTCUSDT": D(50000)},
        tiers={"BTCUSDT": table},
        config=parse_config({}),
        now=T0,
        cause=CAUSE,
        source="x",
    )
    [blocked] = [a for a in result.alerts if a.rule == "order_blocked_by_leverage"]
    assert blocked.action is not None
    assert describe_action(blocked.action) == (
        "lower BTCUSDT leverage to 80× or less or shrink the BTCUSDT buy order to 12 BTC"
        " or cut BTCUSDT by 8 BTC (400,000 USD)"
    )
    # a resolve carries no action; every raised alert of the account carries one
    assert all(a.action is not None for a in result.alerts)


def test_cap_proximity_opened_early_escalates_at_96_pct_of_the_90x_cap() -> None:
    table = state.apply_tiers(None, tier_table("BTCUSDT", BRIEF_BTC_TIERS))
    assert table is not None

    def bob(ordered: int, risk: state.RiskBook = state.EMPTY_RISK):  # type: ignore[no-untyped-def]
        acc = account(
            "bob",
            position("bob", "BTCUSDT", Side.BUY, 20, 50000, 90),
            order("bob", "BTCUSDT", "o1", Side.BUY, ordered, 50000),
        )
        return evaluate_account(
            AccountState("bob", acc.positions, acc.orders, None, risk),
            marks={"BTCUSDT": D(50000)},
            tiers={"BTCUSDT": table},
            config=parse_config({}),
            now=T0,
            cause=CAUSE,
            source="x",
        )

    # 1 M held + 1 M ordered: 77 % of 2.6 M, but the next 1 M order would be rejected.
    first = bob(20)
    [warn] = [a for a in first.alerts if a.rule == "tier_cap_proximity"]
    assert (warn.transition.value, warn.severity.value) == ("raised", "WARNING")
    assert warn.action is not None
    assert describe_action(warn.action) == "lower BTCUSDT leverage to 80× or less"
    # 2.5 M: 96 % of the cap. The open alert escalates instead of staying silent.
    second = bob(30, first.risk)
    [high] = [a for a in second.alerts if a.rule == "tier_cap_proximity"]
    assert (high.transition.value, high.severity.value) == ("escalated", "HIGH")
    assert high.alert_id == warn.alert_id
    assert high.numbers["cap_utilization"] == D(2_500_000) / D(2_600_000)


def test_high_alert_plan_options_trade_and_transfer_what_the_action_says() -> None:
    # 1 BTC long at mark 50,000, liquidation at 48,000: 4 % away, HIGH.
    near = account("near", position("near", "BTCUSDT", Side.BUY, 1, 50000, 10, liq=48000))
    result = evaluate_account(
        near,
        marks={"BTCUSDT": D(50000)},
        tiers={},
        config=parse_config({}),
        now=T0,
        cause=CAUSE,
        source="x",
    )
    [liq] = [a for a in result.alerts if a.rule == "liquidation_distance"]
    assert liq.severity.value == "HIGH"
    assert liq.action is not None
    [cut] = liq.action.alternatives
    options = {o.option_id: o for o in liq.hedge_options}
    # add more than 50,000 x (10.5 - 4) % = 3,250; or cut to 4/10.5 of the size
    assert liq.action.amount_usd == D("3250.01")
    assert options["add_margin"].margin_needed_usd == liq.action.amount_usd
    assert cut.qty == D("0.620")
    assert options["reduce"].qty == cut.qty
    assert options["reduce"].notional_usd == cut.amount_usd


def test_bybit_risk_id_that_differs_from_the_computed_tier_is_counted() -> None:
    table = state.apply_tiers(None, tier_table("BTCUSDT", BRIEF_BTC_TIERS))
    assert table is not None
    # 35,000 is in tier 1 of the table in docs/product.md; Bybit says 2 (e.g. a stale risk limit).
    disagree = account("a", position("a", "BTCUSDT", Side.BUY, "0.5", 70000, 10, risk_id=2))
    agree = account("a", position("a", "BTCUSDT", Side.BUY, "0.5", 70000, 10, risk_id=1))
    assert evaluate(disagree, tiers={"BTCUSDT": table}).risk_id_mismatches == 1
    assert evaluate(agree, tiers={"BTCUSDT": table}).risk_id_mismatches == 0
