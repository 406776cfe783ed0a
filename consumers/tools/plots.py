"""PNG plots of evaluation reports (``routeyard eval``): accuracy per tag, confusion between agents.

matplotlib is optional and imported only here, when plotting: figures are drawn on the Agg
canvas (no display, no pyplot global state). Without matplotlib, ``write_plots`` raises
``PlotsUnavailable`` and the caller skips the plots.

Errors::

    PlotsUnavailable    matplotlib is not installed. Not retriable: ``pip install matplotlib``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from routeyard.consumers.errors import PlotsUnavailable as PlotsUnavailable
from routeyard.router.engines.scoring import OTHER, Report, confusion_matrix

_ANNOTATE_MAX_CELLS = 400


def write_plots(runs: Sequence[tuple[str, Report]], out: Path, *, top: int = 15) -> list[Path]:
    """``tag_accuracy.png`` for all runs side by side, and ``confusion.png`` (``confusion-2.png``
    for a second run) with the ``top`` most frequent agents. Returns the paths written."""
    _require_matplotlib()
    paths = [tag_accuracy_chart(runs, out / "tag_accuracy.png")]
    for i, (name, report) in enumerate(runs):
        suffix = "" if i == 0 else f"-{i + 1}"
        paths.append(confusion_heatmap(report, name, out / f"confusion{suffix}.png", top=top))
    return paths


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotsUnavailable("matplotlib is not installed (pip install matplotlib): plots skipped") from None


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, dpi=120)
    return path


def tag_accuracy_chart(runs: Sequence[tuple[str, Report]], path: Path) -> Path:
    """Grouped bars: overall accuracy, then accuracy per tag, one bar per run."""
    tags = sorted({tag for _, report in runs for tag in report.per_tag})
    counts = {tag: max(r.per_tag[tag].n for _, r in runs if tag in r.per_tag) for tag in tags}
    labels = [f"(all) ({runs[0][1].n})", *(f"{tag} ({counts[tag]})" for tag in tags)]
    figure = _figure(max(6.0, 0.5 * len(labels) * len(runs) + 2), 4.8)
    axes = figure.add_subplot()
    width = 0.8 / len(runs)
    for i, (name, report) in enumerate(runs):
        values = [report.accuracy, *(report.per_tag[t].accuracy if t in report.per_tag else 0.0 for t in tags)]
        offset = (i - (len(runs) - 1) / 2) * width
        axes.bar([x + offset for x in range(len(labels))], values, width, label=name)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    axes.set_ylim(0, 1)
    axes.set_ylabel("exact set-match accuracy")
    axes.set_title("Accuracy per tag")
    axes.grid(axis="y", alpha=0.3)
    if len(runs) > 1:
        axes.legend()
    return _save(figure, path)


def confusion_heatmap(report: Report, name: str, path: Path, *, top: int = 15) -> Path:
    """Expected vs predicted label on turns expecting at most one agent, coloured by the share of
    each expected row, annotated with counts."""
    rows, cols, counts = confusion_matrix(report, top=top)
    shares = [[count / (sum(row) or 1) for count in row] for row in counts]
    figure = _figure(max(5.0, 0.45 * len(cols) + 3), max(4.0, 0.4 * len(rows) + 2))
    axes = figure.add_subplot()
    image = axes.imshow(shares or [[0.0]], cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(rows)), rows, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("expected")
    folded = OTHER in rows or OTHER in cols
    axes.set_title(f"{name}: turns expecting at most one agent" + (f" (top {top} agents)" if folded else ""))
    if len(rows) * len(cols) <= _ANNOTATE_MAX_CELLS:
        _annotate(axes, counts, shares)
    figure.colorbar(image, ax=axes, label="share of the expected row")
    return _save(figure, path)


def _annotate(axes: Any, counts: list[list[int]], shares: list[list[float]]) -> None:
    for y, row in enumerate(counts):
        for x, count in enumerate(row):
            if count:
                colour = "white" if shares[y][x] > 0.5 else "black"
                axes.text(x, y, str(count), ha="center", va="center", fontsize=7, color=colour)
