"""The report's figures, drawn with matplotlib as SVG text: embedded inline, the HTML report needs
no network and no image files, and its labels stay text (searchable, selectable).

Every function returns an SVG document as a string. Output is deterministic for the same input
(fixed hash salt, no date), so a re-rendered report of an unchanged run is byte-identical.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Colours per role, the same in every figure (colour-blind-safe Okabe–Ito pair).
ROLE_COLORS = {"control": "#0072B2", "experiment": "#D55E00"}
OTHER_COLOR = "#555555"
# A loss curve of thousands of steps renders as thousands of SVG vertices; this many points per
# curve keep the shape (and the report small).
MAX_POINTS = 400


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display; set before pyplot is imported anywhere
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text as <text>, not glyph paths: smaller, searchable
            "svg.hashsalt": "tunegate",  # stable element ids
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def _svg(fig: Any) -> str:
    plt = _pyplot()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: inlined in HTML


Points = Sequence[tuple[float, float]]


def thin(points: Points, limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most `limit` points, evenly spaced, first and last kept."""
    if len(points) <= limit:
        return list(points)
    stride = (len(points) - 1) / (limit - 1)
    return [points[round(i * stride)] for i in range(limit)]


def loss_curves(
    title: str,
    curves: Mapping[str, Sequence[tuple[float, float]]],
    roles: Mapping[str, str],
    eval_losses: dict[str, tuple[float | None, float | None]] | None = None,
) -> str:
    """Training loss per arm against step; the eval loss before and after as markers."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 2.6))
    last_step = 1.0
    for arm, points in curves.items():
        if not points:
            continue
        color = ROLE_COLORS.get(roles.get(arm, ""), OTHER_COLOR)
        xs, ys = zip(*thin(points), strict=True)
        ax.plot(xs, ys, color=color, linewidth=1.2, label=f"{arm} (train)")
        last_step = max(last_step, float(xs[-1]))
        before, after = (eval_losses or {}).get(arm, (None, None))
        if before is not None and after is not None:
            ax.plot(
                [0, xs[-1]], [before, after], linestyle="none", marker="o", color=color,
                markerfacecolor="white", label=f"{arm} (eval, before → after)",
            )  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, loc="left")
    ax.set_xlim(0, last_step * 1.02)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=7)
    return _svg(fig)


@dataclass(frozen=True)
class ForestRow:
    label: str
    estimate: float  # relative improvement: 0.25 = +25 %
    low: float | None
    high: float | None
    significant: bool  # its (adjusted) p is below the stage's alpha
    primary: bool


def forest(title: str, rows: Sequence[ForestRow]) -> str:
    """Relative improvement (experiment over control) with its 95 % interval, one row each.

    Relative changes span orders of magnitude on small pilots (+30 % next to +2,900 %), so the
    axis is symmetric-log beyond ±100 %, linear inside it.
    """
    plt = _pyplot()
    height = 0.9 + 0.28 * max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(6.4, height))
    ys = list(range(len(rows)))[::-1]
    widest = 1.0
    for y, row in zip(ys, rows, strict=True):
        color = "#009E73" if row.significant else OTHER_COLOR
        if row.low is not None and row.high is not None:
            ax.plot([row.low * 100, row.high * 100], [y, y], color=color, linewidth=1.6)
            widest = max(widest, abs(row.low), abs(row.high))
        ax.plot(
            [row.estimate * 100], [y], marker="D" if row.primary else "o", color=color,
            markersize=6 if row.primary else 4.5, linestyle="none",
        )  # fmt: skip
        widest = max(widest, abs(row.estimate))
    ax.axvline(0, color="black", linewidth=0.8)
    if widest > 1.0:
        ax.set_xscale("symlog", linthresh=100)
    limit = 100 * widest * (1.6 if widest > 1.0 else 1.1)
    ax.set_xlim(-limit if any(r.estimate < 0 or (r.low or 0) < 0 for r in rows) else -10, limit)
    ax.set_yticks(ys, [r.label for r in rows])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("relative improvement, experiment over control (%), 95% CI")
    ax.set_title(title, loc="left")
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


def relative_or_none(value: Any) -> float | None:
    """A finite float, or None (JSON null, inf, NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None
