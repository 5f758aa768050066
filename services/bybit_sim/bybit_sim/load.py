"""A load scenario: N accounts streaming a target rate of frames, with periodic breaches.

Built for ``bench/e2e.py`` (the end-to-end benchmark) and written as a scenario file the
simulator loads like any other. Every account holds four balanced positions (net about
zero: BTC and SOL long, ETH and BNB short, about 3,500 USD each, on a 1,000,000 USD
wallet) on markets that random-walk, so the public ticker stream carries a delta per
symbol per tick. Two kinds of timeline traffic, evenly spread over each cycle:

- churn: a small limit order far from the market, placed and cancelled ``hold_s`` later
  (each push an ``order`` and a ``position`` frame): most of the load, and no risk change;
- breach: once per cycle per account a ``breach_qty`` BTCUSDT buy is placed and filled
  (net exposure goes from about 0 to about +14,000 USD), and half a cycle later the same
  quantity is sold back reduce-only (net about 0 again). Against a 10,000 USD net-exposure
  limit that is one alert raised and one resolved per account per cycle, and no other rule
  comes near its threshold as long as the direction-bias and correlation rules are relaxed
  (a breach makes BTC the larger side).

Frame counts (``LoadPlan``) follow the exchange core: place and cancel push order +
position, a fill pushes execution + order + position + wallet.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

# symbol -> (side, size, entry) of every account's standing position
POSITIONS: dict[str, tuple[str, str, str]] = {
    "BTCUSDT": ("Buy", "0.05", "70000"),
    "ETHUSDT": ("Sell", "1", "3500"),
    "SOLUSDT": ("Buy", "20", "175"),
    "BNBUSDT": ("Sell", "6", "580"),
}
# symbol -> (qty, price) of a churn order: a bid about 15 % below the market, ~50 USD
CHURN_ORDERS: dict[str, tuple[str, str]] = {
    "BTCUSDT": ("0.001", "60000"),
    "ETHUSDT": ("0.015", "3000"),
    "SOLUSDT": ("0.3", "150"),
    "BNBUSDT": ("0.1", "500"),
}
PLACE_FRAMES = 2  # order + position
CANCEL_FRAMES = 2
FILL_FRAMES = 4  # execution + order + position + wallet
BREACH_FRAMES = 2 * (PLACE_FRAMES + FILL_FRAMES)  # open and close, per account per cycle


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """What a load scenario sends; ``frames_per_s`` counts private and ticker frames."""

    accounts: int = 20
    frames_per_s: float = 1000.0
    cycle_s: int = 4
    tick_ms: int = 50
    hold_s: Decimal = Decimal("0.2")
    breach_qty: Decimal = Decimal("0.2")
    volatility: Decimal = Decimal("0.0005")

    @property
    def ticker_frames_per_s(self) -> float:
        """Ticker deltas on the one public link (a symbol whose mark did not move sends none)."""
        return len(POSITIONS) * 1000 / self.tick_ms

    @property
    def churn_pairs_per_cycle(self) -> int:
        private = (self.frames_per_s - self.ticker_frames_per_s) * self.cycle_s
        churn = private - BREACH_FRAMES * self.accounts
        return max(0, round(churn / (PLACE_FRAMES + CANCEL_FRAMES)))

    @property
    def private_frames_per_cycle(self) -> int:
        pairs = self.churn_pairs_per_cycle * (PLACE_FRAMES + CANCEL_FRAMES)
        return pairs + BREACH_FRAMES * self.accounts

    @property
    def transitions_per_s(self) -> float:
        """Alert transitions (raised + resolved) the breaches cause, all accounts."""
        return 2 * self.accounts / self.cycle_s

    def account_names(self) -> list[str]:
        return [f"load_{i:02d}" for i in range(self.accounts)]


def api_key(account: str) -> str:
    return f"sim-{account.replace('_', '-')}-key"


def api_secret(account: str) -> str:
    return f"sim-{account.replace('_', '-')}-secret"


def _ms(seconds: Decimal) -> str:
    return str(seconds.quantize(Decimal("0.001")))


def _symbols(plan: LoadPlan) -> list[dict[str, Any]]:
    # the sample portfolio's tier tables, on random-walk marks
    sample = yaml.safe_load((SCENARIOS / "sample_portfolio.yaml").read_text(encoding="utf-8"))
    out = []
    for seed, spec in enumerate(s for s in sample["symbols"] if s["symbol"] in POSITIONS):
        walk = {"seed": seed + 1, "drift": 0, "volatility": str(plan.volatility)}
        out.append({**spec, "price": {"start": spec["price"]["start"], "random_walk": walk}})
    return out


def _timeline(plan: LoadPlan) -> list[dict[str, Any]]:
    names = plan.account_names()
    cycle = Decimal(plan.cycle_s)
    symbols = list(CHURN_ORDERS)
    actions: list[dict[str, Any]] = []
    pairs = plan.churn_pairs_per_cycle
    spacing = (cycle - plan.hold_s - Decimal("0.01")) / max(pairs, 1)
    for g in range(pairs):
        account = names[g % len(names)]
        symbol = symbols[(g // len(names)) % len(symbols)]
        qty, price = CHURN_ORDERS[symbol]
        link = f"churn-{g}"
        at = spacing * g
        actions.append(
            {"at_s": _ms(at), "account": account, "action": "place_order", "symbol": symbol,
             "side": "Buy", "qty": qty, "price": price, "order_link_id": link}
        )  # fmt: skip
        actions.append(
            {"at_s": _ms(at + plan.hold_s), "account": account, "action": "cancel_order",
             "order_link_id": link}
        )  # fmt: skip
    half = cycle / 2
    step = half / len(names)
    fill_after = min(Decimal("0.05"), step / 2)
    qty = str(plan.breach_qty)
    price = POSITIONS["BTCUSDT"][2]
    for k, account in enumerate(names):
        for start, side, reduce_only, link in (
            (step * k, "Buy", False, "breach-open"),
            (half + step * k, "Sell", True, "breach-close"),
        ):
            actions.append(
                {"at_s": _ms(start), "account": account, "action": "place_order",
                 "symbol": "BTCUSDT", "side": side, "qty": qty, "price": price,
                 "reduce_only": reduce_only, "order_link_id": link}
            )  # fmt: skip
            actions.append(
                {"at_s": _ms(start + fill_after), "account": account, "action": "fill_order",
                 "order_link_id": link}
            )  # fmt: skip
    return sorted(actions, key=lambda a: Decimal(a["at_s"]))


def load_scenario_text(plan: LoadPlan) -> str:
    """The scenario of ``plan`` as YAML, for ``BYBIT_SIM_SCENARIO``."""
    accounts = [
        {
            "name": name,
            "api_key": api_key(name),
            "api_secret": api_secret(name),
            "wallet_balance": 1_000_000,
            "positions": [
                {"symbol": symbol, "side": side, "size": size, "entry_price": entry, "leverage": 5}
                for symbol, (side, size, entry) in POSITIONS.items()
            ],
        }
        for name in plan.account_names()
    ]
    doc = {
        "name": "load",
        "description": f"{plan.accounts} accounts, about {plan.frames_per_s:.0f} frames/s, "
        f"a net-exposure breach per account every {plan.cycle_s} s",
        "tick_ms": plan.tick_ms,
        "loop": True,
        "duration_s": plan.cycle_s,
        "symbols": _symbols(plan),
        "accounts": accounts,
        "timeline": _timeline(plan),
    }
    return yaml.safe_dump(doc, sort_keys=False)
