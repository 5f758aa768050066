"""Every number in a model answer must be one we supplied: the check.

The rule, as the prompt states it to the model and the README to readers. A number in the
answer is accepted when it is
- a number we supplied (anywhere in the facts, including inside our own texts), ignoring
  sign, thousands separators and a ``$`` / ``USD`` / ``USDT`` unit;
- one of those rounded to fewer decimals (``12,480.37`` may be written ``12,480.4`` or
  ``12,480``), or written with ``k`` / ``M`` (``12.48k``);
- a supplied fraction written as a percent (``0.25`` as ``25%``);
- a small count or rank, 0 to 3 ("3 options", "option 1").
Anything else is invented: the answer is refused, the model gets one repair attempt with
the offending numbers named, then the deterministic analysis is used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

# a number not glued to a word on the left ("V3.2", "GPT-4.1", "1000PEPE" are names)
_NUMBER = re.compile(
    r"(?<![\w.,])(?<!\w-)-?(?P<num>\d[\d,]*(?:\.\d+)?)(?![\d.,]?\d)"
    r"(?P<unit>\s?%|[kKM]\b|x\b)?(?![A-Za-z0-9_])"
)
_SMALL = frozenset(Decimal(n) for n in range(4))
_SCALE = {"k": Decimal(1000), "K": Decimal(1000), "M": Decimal(1_000_000)}
_MAX_PLACES = 12


def _parse(text: str) -> Decimal | None:
    try:
        value = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def numbers_in(text: str) -> Iterator[tuple[str, Decimal, str]]:
    """(as written, value, unit) of each number in ``text``."""
    for m in _NUMBER.finditer(text):
        value = _parse(m.group("num"))
        if value is not None:
            yield m.group(0), value, (m.group("unit") or "").strip()


def _strings(facts: Any) -> Iterator[str]:
    if isinstance(facts, dict):
        for k, v in facts.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(facts, list | tuple):
        for v in facts:
            yield from _strings(v)
    elif facts is not None and not isinstance(facts, bool):
        yield str(facts)


def supplied_numbers(facts: Any) -> frozenset[Decimal]:
    """Every number in the facts we send (values and numbers inside our own strings)."""
    out: set[Decimal] = set()
    for text in _strings(facts):
        whole = _parse(text.strip())
        if whole is not None:
            out.add(abs(whole))
        for _, value, _unit in numbers_in(text):
            out.add(abs(value))
    return frozenset(out)


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _rounds_to(candidate: Decimal, supplied: Iterable[Decimal]) -> bool:
    places = _places(candidate)
    step = Decimal(1).scaleb(-places)
    for s in supplied:
        if s == candidate:
            return True
        if _places(s) > places and places <= _MAX_PLACES and s.quantize(step) == candidate:
            return True
    return False


def accepted(value: Decimal, unit: str, supplied: frozenset[Decimal]) -> bool:
    value = abs(value)
    if unit not in ("%",) and value in _SMALL:
        return True
    candidates = [value]
    if unit in _SCALE:
        # 12.48k: compare 12.48 against the supplied value in thousands, same rounding
        scale = _SCALE[unit]
        if _rounds_to(value, (s / scale for s in supplied)):
            return True
        candidates = []
    if unit == "%":
        candidates.append(value / 100)
    return any(_rounds_to(c, supplied) for c in candidates)


def invented_numbers(texts: Iterable[str], supplied: frozenset[Decimal]) -> list[str]:
    """The numbers in ``texts`` that are not ours by the rule above, as written."""
    out: list[str] = []
    for text in texts:
        for written, value, unit in numbers_in(text):
            if not accepted(value, unit, supplied) and written not in out:
                out.append(written)
    return out
