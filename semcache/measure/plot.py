"""Plots of calibration reports (matplotlib, imported when called; the Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path

from semcache.errors import MissingDependencyError
from semcache.measure.calibration import CalibrationReport

__all__ = ["plot_report"]


def plot_report(report: CalibrationReport, path: str | Path, *, title: str | None = None) -> Path:
    """Write precision, recall and the false-hit upper bound against the threshold as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise MissingDependencyError("matplotlib", "plots") from e
    pts = [p for p in report.points if p.hits]
    xs = [p.threshold for p in pts]
    fig, (ax, ax_fh) = plt.subplots(
        2, 1, figsize=(7.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    ax.plot(xs, [p.precision for p in pts], label="precision (1 - false-hit rate)", color="C0")
    ax.plot(xs, [p.recall for p in pts], label="recall (hit rate on duplicates)", color="C1")
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax_fh.plot(xs, [p.false_hit_rate for p in pts], label="false-hit rate", color="C3")
    ax_fh.plot(
        xs,
        [p.false_hit_upper for p in pts],
        label=f"{report.confidence:.0%} upper bound (Clopper-Pearson)",
        color="C3",
        linestyle="--",
    )
    ax_fh.axhline(report.delta, color="k", linewidth=0.8, label=f"delta = {report.delta:g}")
    ax_fh.set_yscale("log")
    ax_fh.set_ylabel("false-hit rate")
    ax_fh.set_xlabel("threshold (cosine similarity)")
    ax_fh.grid(alpha=0.3, which="both")
    if report.recommended is not None:
        for a in (ax, ax_fh):
            a.axvline(report.recommended, color="C2", linewidth=1)
        ax.annotate(
            f"recommended {report.recommended:.4f}",
            (report.recommended, 0.05),
            xytext=(-6, 0),
            textcoords="offset points",
            ha="right",
            color="C2",
        )
    ax.legend(loc="lower left", fontsize=8)
    ax_fh.legend(loc="lower left", fontsize=8)
    model = report.model.get("model", "")
    ax.set_title(
        title or f"{report.source}: {report.pairs} pairs, {report.positives} duplicates ({model})",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
