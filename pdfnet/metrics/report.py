"""Paper-style tables of DIS metrics (plain text or markdown), with the paper's reported PDFNet numbers beside ours."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from .evaluator import METRIC_KEYS

COLUMNS = METRIC_KEYS + ("maxF_meanPR",)


def paper_results() -> dict[str, Any]:
    """The F-max values the PDFNet paper reports, per split, with their source (metrics/paper_results.json)."""
    return json.loads(resources.files("pdfnet.metrics").joinpath("paper_results.json").read_text(encoding="utf-8"))


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if key == "HCE" else f"{value:.3f}"


def format_table(results: dict[str | tuple[str, str], dict[str, float]], markdown: bool = False,
                 with_paper: bool = False) -> str:
    """``results``: {dataset name, or (dataset, method): metrics}; the method is "ours" when not given. 3 decimals,
    HCE as an integer; ``maxF_meanPR`` is the official PDFNet protocol (F from dataset-mean precision/recall) and is
    labelled as such."""
    keyed = [(key if isinstance(key, tuple) else (key, "ours"), metrics) for key, metrics in results.items()]
    columns = [c for c in COLUMNS if any(c in m for m in results.values())]
    header = ["dataset", "method"] + [("maxF (mean-PR)" if c == "maxF_meanPR" else c) for c in columns]
    rows = [[name, method] + [_cell(c, metrics.get(c)) for c in columns] for (name, method), metrics in keyed]
    if with_paper:
        paper = paper_results()
        datasets = list(dict.fromkeys(name for (name, _), _ in keyed))
        for name in datasets:
            if name in paper["maxF"]:
                rows.append([name, paper["method"]] + [_cell(c, paper["maxF"][name] if c == "maxF" else None)
                                                        for c in columns])
        rows.sort(key=lambda r: datasets.index(r[0]))  # stable: the paper row after ours, per dataset
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        if with_paper:
            lines.append("")
            source = paper_results()["source"]
            lines.append(f"Paper numbers: {source['abstract']} {source['project_page']}")
        lines.append("maxF (mean-PR): F-max of the dataset-mean precision/recall curves (official PDFNet evaluation); "
                     "the other columns follow PySODMetrics (per-image curves averaged), HCE the official DIS script.")
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header)] + [fmt.format(*r) for r in rows])
