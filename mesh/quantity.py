"""Kubernetes resource quantities (``100m``, ``0.5``, ``64Mi``, ``1e3``, ``1.5G``) as exact numbers.

The proxy's requests must not exceed its limits (the API server refuses such a pod), and the two
may come from different places (a pod annotation and the mesh default), so they have to be
compared as numbers, not as strings. The grammar is the API server's (``resource.Quantity``)::

    quantity ::= signed-number suffix
    suffix   ::= Ki | Mi | Gi | Ti | Pi | Ei          (powers of 1024)
               | m | "" | k | M | G | T | P | E      (powers of 1000; m is a thousandth)
               | (e | E) signed-integer             (a power of ten)

``E`` alone is exa; ``E`` followed by digits is an exponent. Values are :class:`~fractions.Fraction`
so ``0.1`` and ``100m`` compare equal exactly. Pure: no Kubernetes client is imported for this.
"""

from __future__ import annotations

import re
from fractions import Fraction

_QUANTITY = re.compile(
    r"(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|[eE](?P<exponent>[+-]?[0-9]+)|(?P<decimal>[mkMGTPE]?))"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"m": -1, "": 0, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}
_MAX_EXPONENT = 64  # far beyond int64 either way; keeps "1e999999999" from costing anything


def parse_quantity(text: str) -> Fraction:
    """The exact value of a Kubernetes quantity; ValueError for anything else."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    value = Fraction(match["number"] + ("0" if match["number"].endswith(".") else ""))
    if match["binary"]:
        value *= 1024 ** _BINARY[match["binary"]]
    elif match["exponent"] is not None:
        exponent = int(match["exponent"])
        if abs(exponent) > _MAX_EXPONENT:
            raise ValueError(f"{text!r}: exponent out of range")
        value *= Fraction(10) ** exponent
    else:
        value *= Fraction(1000) ** _DECIMAL[match["decimal"]]
    return -value if match["sign"] == "-" else value
