"""The report of a batch run: ``report.csv``, ``report.json`` and ``report.png``.

One row per item of the run (``name``, ``status``, ``shape``, ``spacing``,
``seconds``, ``objects``, the pipeline's metrics, ``error``) and summary rows
(``(mean)``, ``(min)``, ``(max)`` of every numeric column over the items that
succeeded); the JSON file also holds the pipeline, its settings and the status
counts. The figure (matplotlib, Agg, no display needed) shows the seconds per
item and, when the rows carry metrics (``dice``, ``f1``, ``pq``, ...), their
distribution. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "LEADING_COLUMNS",
    "REPORT_CSV",
    "REPORT_FIGURE",
    "REPORT_JSON",
    "report_columns",
    "summary_rows",
    "write_report",
]

REPORT_CSV = "report.csv"
REPORT_JSON = "report.json"
REPORT_FIGURE = "report.png"
#: Columns every report starts with, in this order; the pipeline's follow, ``error`` last.
LEADING_COLUMNS = ("name", "status", "shape", "spacing", "seconds", "objects")
#: Columns never summarised (identifiers, not measurements).
_NOT_SUMMARISED = {"name", "status", "shape", "spacing", "error", "worker", "classes"}
#: Metric columns shown in the figure, by preference (prefix match for per-class columns).
_FIGURE_METRICS = ("dice", "f1", "pq", "iou")


def report_columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Columns of the table: :data:`LEADING_COLUMNS`, the others in first-seen order, ``error``."""
    columns = list(LEADING_COLUMNS)
    for row in rows:
        for key in row:
            if key not in columns and key not in ("error", "worker"):
                columns.append(key)
    return [*columns, "worker", "error"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(float(value)) else None
    return None


def summary_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``(mean)``, ``(min)`` and ``(max)`` rows of every numeric column over successful rows.

    A row counts when its status is ``"done"`` or ``"skipped"`` (done by an
    earlier run); NaN values (a class absent from both images) are left out.
    """
    good = [row for row in rows if row.get("status") in ("done", "skipped")]
    columns = [c for c in report_columns(rows) if c not in _NOT_SUMMARISED]
    out = []
    for label, reduce in (("(mean)", _mean), ("(min)", min), ("(max)", max)):
        summary: dict[str, Any] = {"name": label, "status": f"{len(good)} of {len(rows)}"}
        for column in columns:
            values = [v for v in (_number(row.get(column)) for row in good) if v is not None]
            if values:
                summary[column] = reduce(values)
        out.append(summary)
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    return str(value)


def write_report(
    rows: Sequence[dict[str, Any]],
    output_dir: str | os.PathLike,
    *,
    pipeline: str,
    settings: dict[str, Any] | None = None,
    fingerprint: str = "",
    figure: bool = True,
) -> list[Path]:
    """Write ``report.csv``, ``report.json`` and (``figure``) ``report.png`` into ``output_dir``.

    Parameters
    ----------
    rows : sequence of dict
        One per item, in input order, with at least ``name`` and ``status``.
    output_dir : path-like
    pipeline : str
        The pipeline's name (JSON only).
    settings : dict, optional
        The pipeline's settings (JSON only).
    fingerprint : str
        The pipeline's fingerprint (JSON only).
    figure : bool
        Also draw the summary figure.

    Returns
    -------
    list of Path
        The files written.
    """
    from ..checkpoints import atomic_path

    output_dir = Path(output_dir)
    summary = summary_rows(rows)
    columns = report_columns([*rows, *summary])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in [*rows, *summary]:
        writer.writerow([_cell(row.get(column)) for column in columns])
    written = []
    path = output_dir / REPORT_CSV
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    written.append(path)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.get("status", "")] = counts.get(row.get("status", ""), 0) + 1
    payload = {
        "pipeline": pipeline,
        "fingerprint": fingerprint,
        "settings": settings or {},
        "counts": counts,
        "items": list(rows),
        "summary": summary,
    }
    path = output_dir / REPORT_JSON
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_finite(payload), indent=1) + "\n", encoding="utf-8")
    written.append(path)
    if figure:
        written.append(write_figure(rows, output_dir / REPORT_FIGURE, title=pipeline))
    return written


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN/Inf become None, tuples lists, numpy values Python ones."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _figure_metric(rows: Sequence[dict[str, Any]]) -> tuple[str, list[float]] | None:
    """The metric column to plot and its values over successful rows."""
    good = [row for row in rows if row.get("status") in ("done", "skipped")]
    for metric in _FIGURE_METRICS:
        values = [_number(row.get(metric)) for row in good]
        values = [v for v in values if v is not None]
        if values:
            return metric, values
    return None


def write_figure(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike, *, title: str = ""
) -> Path:
    """Seconds per item (bars coloured by status) and the metric distribution, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..checkpoints import atomic_path

    metric = _figure_metric(rows)
    panels = 2 if metric else 1
    figure = Figure(figsize=(5 * panels + 1, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    colours = {"done": "tab:blue", "skipped": "tab:gray", "failed": "tab:red"}
    names = [str(row.get("name", "")) for row in rows]
    seconds = [_number(row.get("seconds")) or 0.0 for row in rows]
    axes[0].bar(
        range(len(rows)),
        seconds,
        color=[colours.get(row.get("status"), "tab:orange") for row in rows],
    )
    axes[0].set_xlabel("item" if len(rows) > 20 else "")
    if len(rows) <= 20:
        axes[0].set_xticks(range(len(rows)), names, rotation=60, ha="right", fontsize=7)
    axes[0].set_ylabel("seconds")
    axes[0].set_title("time per item (red: failed, grey: done before)", fontsize=9)
    if metric:
        name, values = metric
        axes[1].hist(values, bins=min(20, max(len(values), 1)), color="tab:green")
        axes[1].set_xlabel(name)
        axes[1].set_ylabel("items")
        axes[1].set_title(f"{name}: mean {_mean(values):.3f} over {len(values)} items", fontsize=9)
    if title:
        figure.suptitle(f"seglab batch {title}", fontsize=10)
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
