"""Parameter types shared by commands: numbers that must be finite.

``float("nan")`` and ``float("inf")`` parse, and NaN compares false with everything, so a NaN
slips past every range check written as ``x < low`` (``mc gc --grace nan`` once passed the
900 s floor and then treated every unreachable object as old). Every float flag of ``mc`` uses
:data:`FINITE_FLOAT` (or a type built on :func:`finite`), which refuses nan and ±inf while
parsing: one line, exit code 11 (bad input), before anything runs.
"""

from __future__ import annotations

import math

import click


class NotFinite(click.BadParameter):
    """A number flag given nan or ±inf: bad input (exit code 11), not a usage slip."""

    exit_code = 11


def finite(value, param, ctx, text=None) -> float:
    """``value`` as a float; BadParameter if it is not a number, NotFinite if nan or ±inf."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise click.BadParameter(f"{value!r} is not a number", ctx=ctx, param=param) from None
    if not math.isfinite(x):
        raise NotFinite(
            f"{text if text is not None else value!r} is not a finite number", ctx=ctx, param=param
        )
    return x


class FiniteFloat(click.ParamType):
    """A float that is neither nan nor ±inf."""

    name = "float"

    def convert(self, value, param, ctx):
        return finite(value, param, ctx)


FINITE_FLOAT = FiniteFloat()
