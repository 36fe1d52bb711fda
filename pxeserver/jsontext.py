"""JSON text of the strings and numbers an event is made of: the very text ``json.dumps``
makes (default settings: ASCII), without its per-call cost.

``json.dumps`` builds a new encoder for every call, which costs more than encoding a
short string or a number does; every boot step the recorder writes is a new event, whose
JSON (:attr:`pxeserver.model.Event.json`) is made from these in half the time. They use
the encoder's own string function (``json.encoder.encode_basestring_ascii``, what
``json.dumps`` calls for every string) and ``float.__repr__`` (what it calls for every
finite float), and hand anything else to ``json.dumps``; ``tests/test_jsontext.py``
compares them with it.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii


def string(value: object) -> str:
    """``json.dumps(value)`` for a str (anything else: handed to it)."""
    if isinstance(value, str):
        return encode_basestring_ascii(value)
    return json.dumps(value)


def number(value: object) -> str:
    """``json.dumps(value)`` for an int or a float (NaN and infinities as it writes them)."""
    if type(value) is float and math.isfinite(value):
        return float.__repr__(value)
    if type(value) is int:
        return int.__repr__(value)
    return json.dumps(value)
