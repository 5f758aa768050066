"""Our numbers in words for people: the one place amounts, prices, sizes and actions are
turned into text a trader reads on a phone.

Every number is rounded by what it is, never printed as it came out of Decimal arithmetic
(``5.71428571428571428571428571``):

- USD amounts: cents below 10,000 (none on a round amount), whole dollars from 10,000 up,
  thousands separators;
  amounts the trader must reach ("add at least") round up, so the figure is enough;
- prices: to the symbol's tick size when known, else to a precision that fits the magnitude;
- sizes: to the symbol's lot step when known, else to three significant digits;
- percentages: from fractions (``0.0476`` is ``4.8%``), one decimal, two below 1 %;
- leverage: ``80×``.

``describe_action`` states a ``SuggestedAction`` in one line ("add at least 21,334 USDT
margin or cut BTCUSDT by 5.71 BTC (396,000 USD) before Mon 14 Dec 09:00"); the notifier
and the analyst both use it, so the phone and the LLM see the same words.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation

from riskwatch_common.contracts import ActionKind, SuggestedAction

__all__ = [
    "RULE_NAMES",
    "base_coin",
    "deadline",
    "describe_action",
    "figure",
    "leverage",
    "percent",
    "price",
    "rule_name",
    "size",
    "usd",
]

_WHOLE_DOLLARS_FROM = Decimal(10_000)
_CENT = Decimal("0.01")
_ONE = Decimal(1)
_HUNDRED = Decimal(100)
_SIZE_DIGITS = 3
_SMALL_PRICE_DIGITS = 6
_MAX_PLACES = 10
_QUOTES = ("USDT", "USDC", "USD", "PERP")

RULE_NAMES: dict[str, str] = {
    "tier_moved_up": "Risk tier moved up",
    "tier_cap_proximity": "Near the leverage cap",
    "order_blocked_by_leverage": "Order blocked by leverage",
    "liquidation_distance": "Close to liquidation",
    "account_mm_rate": "Maintenance margin rate",
    "net_exposure_usd": "Net exposure",
    "net_exposure_share": "Net exposure share",
    "direction_bias": "Direction bias",
    "correlation_risk": "Correlation risk",
    "unrealized_loss": "Unrealized loss",
    "bybit_reduce_only": "Bybit reduce-only",
    "bybit_system_adjustment": "Bybit system adjustment",
    "platform_risk_change": "Bybit risk-limit change",
    "account_link": "Bybit link",
}


# How the risk processor's alert numbers (``RiskAlertChanged.numbers``) read, by key.
_FRACTION_KEYS = frozenset(
    {
        "account_mm_rate",
        "net_share",
        "buy_share",
        "same_side_share",
        "cap_utilization",
        "tier_mmr",
        "old_mmr",
        "new_mmr",
        "old_imr",
        "new_imr",
        "new_mm_rate",
    }
)
_POINTS_KEYS = frozenset({"liq_distance_pct"})
_PRICE_KEYS = frozenset({"mark_price", "liq_price", "new_liq_price"})
_SIZE_KEYS = frozenset({"size", "size_reduction"})
_LEVERAGE_KEYS = frozenset(
    {
        "leverage",
        "tier_max_leverage",
        "old_max_leverage",
        "new_max_leverage",
        "max_leverage_allowing",
        "max_leverage_allowed",
        "lifting_leverage",
    }
)
_COUNT_KEYS = frozenset({"positions", "accounts_missing"})
# ``value`` / ``threshold`` are in the rule's own units.
_FRACTION_RULES = frozenset(
    {
        "account_mm_rate",
        "net_exposure_share",
        "direction_bias",
        "correlation_risk",
        "tier_cap_proximity",
    }
)
_POINTS_RULES = frozenset({"liquidation_distance"})
_USD_RULES = frozenset({"net_exposure_usd", "unrealized_loss", "order_blocked_by_leverage"})


def _plain(value: Decimal) -> str:
    """``value`` with thousands separators as it is (already rounded), ``-0`` as ``0``."""
    if value == 0:
        value = abs(value)
    return f"{value:,f}"


def _strip(text: str) -> str:
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _significant(value: Decimal, digits: int) -> Decimal:
    """``value`` to ``digits`` significant digits, never cutting its integer part and
    never past ``_MAX_PLACES`` decimals (dust is shown as 0)."""
    if value == 0:
        return Decimal(0)
    exponent = max(min(value.adjusted() - digits + 1, 0), -_MAX_PLACES)
    return value.quantize(Decimal(1).scaleb(exponent), rounding=ROUND_HALF_EVEN)


def _to_step(value: Decimal, step: Decimal, rounding: str = ROUND_HALF_EVEN) -> Decimal:
    """``value`` to a multiple of ``step``, written with ``step``'s decimals."""
    step = step.normalize()
    multiple = (value / step).quantize(_ONE, rounding=rounding) * step
    return multiple.quantize(step)


def usd(value: Decimal, unit: str = "USD", *, at_least: bool = False) -> str:
    """``21,334 USDT``, ``1,250.50 USD``, ``2,500 USD``: cents below 10,000 (none on a
    round amount), whole dollars from there.

    ``at_least`` rounds up (an amount to add or reach must be enough once rounded).
    """
    if not value.is_finite():
        return f"{value} {unit}".strip()
    step = _ONE if abs(value) >= _WHOLE_DOLLARS_FROM else _CENT
    rounding = ROUND_CEILING if at_least else ROUND_HALF_EVEN
    rounded = value.quantize(step, rounding=rounding)
    if abs(rounded) >= _WHOLE_DOLLARS_FROM or rounded == rounded.to_integral_value():
        # whole dollars from 10,000 up, and no ".00" on a round amount below
        rounded = rounded.quantize(_ONE, rounding=rounding)
    return f"{_plain(rounded)} {unit}".strip()


def price(value: Decimal, tick: Decimal | None = None) -> str:
    """A price to the symbol's ``tick`` when known (``67,500.1``), else by magnitude."""
    if not value.is_finite():
        return str(value)
    if tick is not None and tick > 0:
        return _plain(_to_step(value, tick))
    if abs(value) >= 1000:
        rounded = value.quantize(_CENT, rounding=ROUND_HALF_EVEN)
    elif abs(value) >= 1:
        rounded = value.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN)
    else:
        rounded = _significant(value, _SMALL_PRICE_DIGITS)
    return _strip(_plain(rounded))


def size(value: Decimal, lot_step: Decimal | None = None, *, at_least: bool = False) -> str:
    """A size in contracts: to the ``lot_step`` when known, else three significant digits.

    ``at_least`` rounds up to the lot step (a cut must be enough once rounded).
    """
    if not value.is_finite():
        return str(value)
    if lot_step is not None and lot_step > 0:
        rounding = ROUND_CEILING if at_least else ROUND_HALF_EVEN
        return _plain(_to_step(value, lot_step, rounding))
    return _strip(_plain(_significant(value, _SIZE_DIGITS)))


def percent(fraction: Decimal) -> str:
    """A fraction as a percentage: ``0.0476`` is ``4.8%``, ``0.0045`` is ``0.45%``."""
    if not fraction.is_finite():
        return str(fraction)
    points = fraction * _HUNDRED
    step = Decimal("0.1") if abs(points) >= 1 or points == 0 else _CENT
    try:
        rounded = points.quantize(step, rounding=ROUND_HALF_EVEN)
    except InvalidOperation:
        return f"{points:,.0f}%"
    return f"{_strip(_plain(rounded))}%"


def leverage(value: Decimal) -> str:
    """``80×``; a fractional cap such as 12.5 keeps its decimals."""
    if not value.is_finite():
        return f"{value}×"
    return f"{_strip(_plain(value.quantize(_CENT, rounding=ROUND_FLOOR)))}×"


def deadline(at: datetime, tz: tzinfo = UTC) -> str:
    """``Mon 14 Dec 09:00`` in ``tz`` (the zone the reader's messages are shown in)."""
    local = at.astimezone(tz)
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def figure(key: str, value: Decimal, rule: str = "") -> str:
    """One alert number (``RiskAlertChanged.numbers[key]``) as people read it: fractions
    as percentages, prices, sizes, leverage, counts, and USD amounts for the rest;
    ``value`` and ``threshold`` in the units of ``rule``."""
    if key in ("value", "threshold"):
        if rule in _FRACTION_RULES:
            return percent(value)
        if rule in _POINTS_RULES:
            return percent(value / _HUNDRED)
        if rule in _USD_RULES:
            return usd(value)
        return price(value)
    if key in _FRACTION_KEYS:
        return percent(value)
    if key in _POINTS_KEYS:
        return percent(value / _HUNDRED)
    if key in _PRICE_KEYS:
        return price(value)
    if key in _SIZE_KEYS:
        return size(value)
    if key in _LEVERAGE_KEYS:
        return leverage(value)
    if key in _COUNT_KEYS:
        return _plain(value.quantize(_ONE))
    return usd(value)


def rule_name(rule: str) -> str:
    """The human name of a rule id; an unknown id is made readable from its words."""
    known = RULE_NAMES.get(rule)
    if known is not None:
        return known
    words = rule.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else rule


def base_coin(symbol: str) -> str | None:
    """The coin a linear contract's size is counted in: ``BTCUSDT`` -> ``BTC``."""
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)]
    return None


def _qty(action: SuggestedAction, lot_step: Decimal | None) -> str:
    assert action.qty is not None
    text = size(action.qty, lot_step, at_least=True)
    coin = base_coin(action.symbol) if action.symbol else None
    return f"{text} {coin}" if coin else text


def _what(
    action: SuggestedAction, verb: str, lot_step: Decimal | None, alert_account: str | None
) -> str:
    named = alert_account is not None and action.account != alert_account
    on = f" on {action.account}" if named else ""
    symbol = (action.symbol or "the position") + on
    kind = action.kind
    if kind is ActionKind.ADD_MARGIN:
        if action.amount_usd is None:
            return f"add margin to {action.account}"
        to = f" to {action.account}" if named else ""
        return f"add at least {usd(action.amount_usd, 'USDT', at_least=True)} margin{to}"
    if kind is ActionKind.REDUCE_POSITION:
        if action.qty is not None and action.amount_usd is not None:
            return f"{verb} {symbol} by {_qty(action, lot_step)} ({usd(action.amount_usd)})"
        if action.qty is not None:
            return f"{verb} {symbol} by {_qty(action, lot_step)}"
        if action.amount_usd is not None:
            return f"{verb} {symbol} by {usd(action.amount_usd, at_least=True)}"
        return f"{verb} {symbol}"
    if kind is ActionKind.LOWER_LEVERAGE:
        lever = f"{action.symbol or 'the'} leverage{on}"
        if action.leverage is None:
            return f"lower {lever}"
        return f"lower {lever} to {leverage(action.leverage)} or less"
    if kind is ActionKind.CANCEL_ORDER:
        side = f" {action.side.value.lower()}" if action.side is not None else ""
        order = f"the {action.symbol or 'open'}{side} order{on}"
        value = f" ({usd(action.amount_usd)})" if action.amount_usd is not None else ""
        if action.qty is None or action.qty == 0:
            return f"cancel {order}{value}"
        return f"shrink {order} to {_qty(action, lot_step)}{value}"
    if kind is ActionKind.REDUCE_EXPOSURE:
        where = "across all accounts" if action.account == "portfolio" else f"on {action.account}"
        if action.amount_usd is None:
            return f"reduce net exposure {where}"
        amount = usd(action.amount_usd, at_least=True)
        return f"reduce net exposure {where} by at least {amount}"
    if kind is ActionKind.CHECK_LINK:
        if action.deadline is not None:
            # An expiring key: the deadline that follows is its expiry.
            return f"renew {action.account}'s API key on Bybit"
        return f"check {action.account}'s link to Bybit (API key, network)"
    if action.symbol:
        return f"no action needed now; keep watching {action.symbol}"
    return "no action needed now; keep watching"


def describe_action(
    action: SuggestedAction,
    *,
    tz: tzinfo = UTC,
    lot_step: Decimal | None = None,
    alert_account: str | None = None,
) -> str:
    """One line saying what to do, with our figures rounded for a phone.

    Alternatives follow with "or" ("add at least 21,334 USDT margin or cut BTCUSDT by 5.71
    BTC (396,000 USD)"); a deadline ends the line ("before Mon 14 Dec 09:00", in ``tz``).
    ``lot_step`` rounds the primary action's size up to the symbol's lot. Pass the alert's
    account as ``alert_account``: an action on another account (a portfolio alert's way
    out is on one of the accounts) then names it ("reduce ETHUSDT on main by 5 ETH").
    """
    parts = [_what(action, "reduce", lot_step, alert_account)]
    parts.extend(
        _what(alt, "cut", lot_step if alt.symbol == action.symbol else None, alert_account)
        for alt in action.alternatives
    )
    line = " or ".join(parts)
    when = action.deadline or next(
        (alt.deadline for alt in action.alternatives if alt.deadline is not None), None
    )
    if when is not None:
        line += f" before {deadline(when, tz)}"
    return line
