"""The report's charts as PNG bytes: rates with 95% CIs per arm, and the failure taxonomy per arm.

Drawn with matplotlib's Agg backend (no display needed); the caller writes the bytes atomically.
"""

from __future__ import annotations

import io

from ftassist.evaluation.summary import HEADLINE, LABELS
from ftassist.evaluation.taxonomy import KINDS


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def rates_chart(arms: list[dict], task: str) -> bytes:
    """Grouped bars: one group per metric, one bar per arm, 95% CI error bars; returns PNG bytes."""
    metrics = HEADLINE[task]
    fig = _figure(1.8 + 1.6 * len(metrics) + 0.3 * len(arms), 4.2)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(arms))
    for j, arm in enumerate(arms):
        xs, ys, lo, hi = [], [], [], []
        for i, (group, m) in enumerate(metrics):
            e = arm[group][m]
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(100 * e["value"])
            lo.append(100 * max(0.0, e["value"] - e["low"]))
            hi.append(100 * max(0.0, e["high"] - e["value"]))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=arm["name"])
    ax.set_xticks(range(len(metrics)), [LABELS[m] for _, m in metrics])
    ax.set_ylim(0, 105)
    ax.set_ylabel("% of examples (95% CI)")
    ax.set_title(f"JSON compliance, n = {arms[0]['n'] if arms else 0} examples" if task == "json" else "Free-text scores")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def failures_chart(arms: list[dict]) -> bytes:
    """Stacked bars: per arm, how many replies show each failure kind; returns PNG bytes."""
    kinds = [k for k in KINDS if any(a.get("failures", {}).get(k) for a in arms)]
    fig = _figure(1.5 + 1.2 * len(arms), 4.2)
    ax = fig.add_subplot()
    names = [a["name"] for a in arms]
    bottom = [0] * len(arms)
    for kind in kinds:
        counts = [a.get("failures", {}).get(kind, 0) for a in arms]
        ax.bar(names, counts, bottom=bottom, label=kind)
        bottom = [b + c for b, c in zip(bottom, counts)]
    if not kinds:
        ax.text(0.5, 0.5, "no failures", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("replies showing the kind (one reply can show several)")
    ax.set_title("Failure taxonomy")
    ax.tick_params(axis="x", labelrotation=20)
    if kinds:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)
