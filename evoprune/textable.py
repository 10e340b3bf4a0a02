"""The tables every summary prints: aligned plain text for the terminal, markdown for reports and benchmarks."""
from __future__ import annotations

from typing import Any, List, Optional, Sequence


def format_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], align: Optional[str] = None,
                 rule: bool = True, indent: str = "") -> str:
    """``header`` and ``rows`` as aligned text columns two spaces apart.

    ``align``: one ``l`` or ``r`` per column (default: the first left, the others right, as numbers read best);
    ``rule``: a dashed line under the header. Cells are ``str()``-ed; a short row is padded with blanks.
    """
    n = len(header)
    cells = [[str(c) for c in header]] + [[str(c) for c in r] + [""] * (n - len(r)) for r in rows]
    if any(len(r) > n for r in cells):
        raise ValueError(f"a row has more cells than the header's {n}")
    align = align or "l" + "r" * (n - 1)
    if len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r}: one 'l' or 'r' per column ({n})")
    widths = [max(len(r[i]) for r in cells) for i in range(n)]

    def line(r: Sequence[str]) -> str:
        return indent + "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                  for c, w, a in zip(r, widths, align)).rstrip()

    out = [line(cells[0])] + ([line(["-" * w for w in widths])] if rule else []) + [line(r) for r in cells[1:]]
    return "\n".join(out)


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> List[str]:
    """``header`` and ``rows`` as the lines of a GitHub markdown table (reports and every benchmark's ``.md``).

    ``align``: one ``l`` or ``r`` per column (default: all left, markdown's own). Cells are ``str()``-ed, a ``|``
    inside one escaped; a short row is padded with blanks, a long one refused."""
    n = len(header)
    align = align or "l" * n
    if len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"align {align!r}: one 'l' or 'r' per column ({n})")
    if any(len(r) > n for r in rows):
        raise ValueError(f"a row has more cells than the header's {n}")

    def line(r: Sequence[Any]) -> str:
        cells = [str(c).replace("|", "\\|") for c in r] + [""] * (n - len(r))
        return "| " + " | ".join(cells) + " |"

    return [line(header), "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"] + [line(r) for r in rows]
