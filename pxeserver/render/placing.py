"""The placing filters of config templates, and the checks of what goes into iPXE scripts.

No value can change the shape of what a machine runs. Values come from the boot network
(the ip, uuid, arch a machine reports) and from operators (labels, hostnames, metadata);
the edges refuse what they can, and the renderer holds the line by construction:

- In a cloud-config or Ignition template, every ``{{ … }}`` that prints a string must end
  in one of the placing filters; a string printed any other way is an error
  (:class:`UnplacedValue`, naming the template line), so a template that pastes a raw
  variable fails ``pxeserver check``, the tests, and every request for it. Numbers print
  as they are. The filters, by where the value goes:

  ``yaml_scalar``  a YAML value (``hostname: {{ node.hostname | yaml_scalar }}``): plain
                   when YAML (1.1 or 1.2) reads it back as the same string, else
                   double-quoted with every non-ASCII character escaped, so CR, U+0085,
                   U+2028 and U+2029 (line breaks to YAML) stay inside the scalar.
  ``tojson``       a JSON value, also a YAML flow value (ASCII only, for the same reason).
  ``word``         one word inside a line of a file, e.g. a URL in a unit's ``ExecStart=``
                   or a comment: refused unless it has no whitespace, control characters,
                   line or paragraph separators, quotes or backslashes.
  ``conf_string``  a double-quoted value of a ``key="value"`` line (fleet.conf, which
                   fleet's reader takes without escapes): refused if it holds a quote, a
                   backslash, a control character or a line break; spaces are fine.

  Why a type and not a search of the template's text: the check runs on what is printed,
  so nothing the template does (a ``{% set %}`` block, a filter chain, a conditional) can
  get a raw value past it; only these filters make the marker type (:class:`Placed`),
  and the template cannot make one itself. ``pxeserver check`` renders each template for
  a sample node of every group, so a raw paste on a branch that sample takes is found
  before a machine asks; a branch only some nodes take is found at its first render.
  Reuse fragments with ``{% include %}`` rather than a macro (a macro's output is a
  plain string, and pasting it is refused).
- Kernel arguments are templates too (``rack={{ node.labels.rack }}``): every value they
  print, and then every whole argument, is checked against what iPXE can carry in one
  word: no whitespace, control characters or line separators, no ``"`` (the kernel's own
  quoting) and, in a value, no ``$`` (iPXE expands ``${…}``). A value that fails is
  refused with a :class:`RenderError`, never stripped.
- What else goes into an iPXE or PXELINUX script (names in comments) is made one line.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import jinja2

from ..errors import RenderError
from ..model import unsafe_character


class Placed(str):
    """Text that a placing filter made fit for where the template prints it. Only the
    filters below make one; config templates refuse every other string."""

    __slots__ = ()


class UnplacedValue(jinja2.TemplateRuntimeError):
    """A config template printed a string that went through no placing filter."""


class RefusedValue(jinja2.TemplateRuntimeError):
    """A value cannot be carried where the template puts it (a line break in a word …)."""


PLACING_FILTERS = "yaml_scalar, tojson, word or conf_string"
# YAML 1.1 reads these as booleans or null (coreos-cloudinit's Go reader included).
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf"}
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def yaml_scalar(value: object) -> Placed:
    """``value`` as a YAML scalar that reads back as the same string.

    Plain when that is safe (``node-001``), double-quoted when YAML would read something
    else (a hostname ``0``, ``on`` or ``1e5`` is a number or a boolean to YAML) or when
    it holds anything but letters, digits, ``_``, ``.`` and ``-``. Quoted text is JSON,
    ASCII only: every line break YAML knows becomes an escape inside the quotes.
    """
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return Placed(text)
    return Placed(json.dumps(text, ensure_ascii=True))


def to_json(value: object) -> Placed:
    """``value`` as JSON (also a YAML flow value), ASCII only (see :func:`yaml_scalar`)."""
    return Placed(json.dumps(value, ensure_ascii=True))


def _not_in_a_line(ch: str) -> bool:
    return ch.isspace() or ch in "\"'\\" or unicodedata.category(ch) == "Cf"


def word(value: object) -> Placed:
    """``value`` as one word inside a line of a file (a URL in ``ExecStart=``, a comment)."""
    text = str(value)
    bad = unsafe_character(text) or next(
        (_described(ch) for ch in text if _not_in_a_line(ch)), None
    )
    if bad:
        raise RefusedValue(
            f"word: {_shown(text)} holds {bad}; a value inside a line of a file must be one "
            "word without quotes or backslashes"
        )
    return Placed(text)


def conf_string(value: object) -> Placed:
    """``value`` as ``"value"`` for a ``key="value"`` line (fleet.conf: no escapes there)."""
    text = str(value)
    bad = unsafe_character(text) or next((_described(ch) for ch in text if ch in '"\\'), None)
    if bad:
        raise RefusedValue(
            f"conf_string: {_shown(text)} holds {bad}; a quoted value of a config file "
            "cannot carry a quote, a backslash or a line break"
        )
    return Placed(f'"{text}"')


def only_placed(value: Any) -> Any:
    """The finalize hook of config templates: what ``{{ … }}`` prints must be placed."""
    if isinstance(value, Placed):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    raise UnplacedValue(
        f"a value ({_shown(str(value))}) is printed as it is; pass it through "
        f"{PLACING_FILTERS}: yaml_scalar or tojson for a YAML or JSON value, word for one "
        'word inside a line of a file, conf_string for the value of a key="value" line'
    )


def ipxe_value(value: Any) -> Any:
    """The finalize hook of kernel arguments: a value must fit in one iPXE word."""
    text = str(value)
    bad = ipxe_problem(text) or next((_described(ch) for ch in text if ch == "$"), None)
    if bad:
        raise RefusedValue(
            f"the value {_shown(text)} holds {bad}, which iPXE cannot carry in a kernel "
            "argument ('$' would be expanded as an iPXE setting)"
        )
    return value


def ipxe_problem(text: str) -> str | None:
    """What in ``text`` iPXE cannot carry in one word of a command line, or None."""
    return unsafe_character(text) or next(
        (_described(ch) for ch in text if ch.isspace() or ch == '"'), None
    )


def one_line(text: str) -> str:
    """``text`` for a comment line of a script: every unprintable character escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _described(ch: str) -> str:
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character')})"


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def check_ipxe_word(text: str, what: str) -> None:
    bad = ipxe_problem(text)
    if bad:
        raise RenderError(
            f"{what} renders as {_shown(text)}, which holds {bad}: iPXE would read it as "
            "more than one argument, or not at all; write each argument as its own item"
        )
