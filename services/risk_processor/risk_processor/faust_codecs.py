"""The Faust codecs of the tables: keys as UTF-8, values through ``codec``/``state``'s JSON.

Kept apart from the wire forms so the pure modules never import Faust. A changelog record
that is not what its table holds raises ``ValueError`` (never ``KeyError`` or
``AttributeError`` from deep inside a ``from_json``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import orjson
from faust.serializers.codecs import Codec


class Utf8Key(Codec):
    """Table keys as UTF-8 text: the changelog key bytes equal the input record's key
    bytes, so ``use_partitioner`` puts a table entry in the same partition as its input."""

    def _dumps(self, s: Any) -> bytes:
        return str(s).encode()

    def _loads(self, s: bytes) -> Any:
        return bytes(s).decode()


class JsonValue(Codec):
    """A table value through ``to_json``/``from_json`` and orjson."""

    def __init__(
        self,
        to_json: Callable[[Any], Any] | None = None,
        from_json: Callable[[Any], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._to = to_json or (lambda v: v)
        self._from = from_json or (lambda v: v)

    def clone(self, *children: Any) -> Any:
        return JsonValue(self._to, self._from, children=self.children + children)

    def _dumps(self, s: Any) -> bytes:
        return orjson.dumps(self._to(s))

    def _loads(self, s: bytes) -> Any:
        try:
            return self._from(orjson.loads(s))
        except ValueError:
            raise
        except (KeyError, TypeError, AttributeError, IndexError, ArithmeticError) as exc:
            raise ValueError(f"malformed table value: {type(exc).__name__}: {exc}") from exc


class RawBytes(Codec):
    """Values that already are their wire form (serialized JSON documents)."""

    def _dumps(self, s: Any) -> bytes:
        return bytes(s)

    def _loads(self, s: bytes) -> Any:
        return bytes(s)


def _as_is(cls: type, data: Any, preferred_type: Any = None) -> Any:
    return data


def faust_type(codec_instance: Codec) -> type:
    """A stand-in for a Faust model type carrying ``codec_instance``.

    Faust takes a table's serializer only from ``key_type._options.serializer`` /
    ``value_type._options.serializer`` and rebuilds decoded values with
    ``type.from_data``; this class gives it our codec and hands decoded values back as
    they are.
    """
    return type(
        f"{type(codec_instance).__name__}Type",
        (),
        {"_options": SimpleNamespace(serializer=codec_instance), "from_data": classmethod(_as_is)},
    )
