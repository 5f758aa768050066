"""Alert text: readable amounts, and Telegram HTML that Telegram accepts.

Telegram HTML here means escaped text, only b/i/code, at most N characters.

Telegram rejects a whole message with 400 "can't parse entities" on one stray ``<`` or
``&``, so text from anywhere (an LLM included) is re-tokenized and re-emitted here rather
than trusted. The length limit counts the HTML as sent, tags and entities included, which is
what ``AnalysisCompleted.text_html`` (max 300) checks.
"""

from __future__ import annotations

import html
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser

ALLOWED_TAGS = frozenset({"b", "i", "code"})
_ALIASES = {"strong": "b", "em": "i"}
_ELLIPSIS = "…"

Token = tuple[str, str]  # ("open" | "close" | "text", tag or text)


def escape(text: str) -> str:
    """Escape ``<``, ``>`` and ``&`` for Telegram HTML (quotes need no escaping in text)."""
    return html.escape(text, quote=False)


class _Tokenizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[Token] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        name = _ALIASES.get(tag, tag)
        if name in ALLOWED_TAGS:
            self.tokens.append(("open", name))
        elif tag == "br":
            self.tokens.append(("text", "\n"))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.tokens.append(("text", "\n"))

    def handle_endtag(self, tag: str) -> None:
        name = _ALIASES.get(tag, tag)
        if name in ALLOWED_TAGS:
            self.tokens.append(("close", name))

    def handle_data(self, data: str) -> None:
        self.tokens.append(("text", data))


def _tokens(markup: str) -> list[Token]:
    parser = _Tokenizer()
    parser.feed(markup)
    parser.close()
    return parser.tokens


def _closing(stack: list[str]) -> int:
    return sum(len(t) + 3 for t in stack)


def _render(tokens: list[Token], limit: int | None) -> str:
    out: list[str] = []
    stack: list[str] = []
    length = 0
    tail = len(_ELLIPSIS) if limit is not None else 0
    truncated = False
    for kind, value in tokens:
        if kind == "open":
            # Telegram allows nothing inside <code>, and re-opening an open tag is pointless
            if "code" in stack or value in stack:
                continue
            piece = f"<{value}>"
            if (
                limit is not None
                and length + len(piece) + _closing([*stack, value]) + tail >= limit
            ):
                truncated = True
                break
            out.append(piece)
            stack.append(value)
            length += len(piece)
        elif kind == "close":
            if value not in stack:
                continue
            while stack:  # close intermediates so entities nest fully
                tag = stack.pop()
                out.append(f"</{tag}>")
                length += len(tag) + 3
                if tag == value:
                    break
        else:
            for char in value:
                piece = escape(char)
                if limit is not None and length + len(piece) + _closing(stack) + tail > limit:
                    truncated = True
                    break
                out.append(piece)
                length += len(piece)
            if truncated:
                break
    if truncated:
        while stack and out and out[-1] == f"<{stack[-1]}>":
            out.pop()  # drop a tag that would close empty
            stack.pop()
        out.append(_ELLIPSIS)
    out.extend(f"</{tag}>" for tag in reversed(stack))
    return "".join(out)


def sanitize(markup: str, limit: int = 300) -> str:
    """Re-emit ``markup`` as valid Telegram HTML of at most ``limit`` characters.

    Allowed tags survive (``strong``/``em`` become ``b``/``i``), every other tag is dropped
    with its text kept, text is escaped, and an over-long result is cut with an ellipsis
    and every open tag closed.
    """
    tokens = _tokens(markup.strip())
    full = _render(tokens, None)
    if len(full) <= limit:
        return full
    return _render(tokens, limit)


def plain_text(markup: str) -> str:
    """The text of ``markup`` without tags or entities."""
    return "".join(value for kind, value in _tokens(markup) if kind == "text")


def format_number(value: Decimal) -> str:
    """A readable amount: thousands separators, 2 decimals from 100 up, no trailing zeros."""
    if not value.is_finite():
        return str(value)
    try:
        if abs(value) >= 100:
            value = value.quantize(Decimal("0.01"))
        elif abs(value) >= 1:
            value = value.quantize(Decimal("0.0001"))
        else:
            value = value.quantize(Decimal("0.00000001"))
    except InvalidOperation:
        return str(value)
    text = f"{value:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
