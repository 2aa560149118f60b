"""Paper-style tables of DIS metrics (plain text or markdown), with the paper's reported PDFNet numbers beside ours."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from .evaluator import METRIC_KEYS

COLUMNS = METRIC_KEYS + ("maxF_meanPR",)


def paper_results() -> dict[str, Any]:
    """The paper's DIS-5K table (metrics/paper_results.json): {"source", "version_note", "metrics", "methods": {id:
    {"name", "splits": {split: {maxF, wF, meanEm, Sm, MAE}}}}} for PDFNet and the baselines it compares with."""
    return json.loads(resources.files("pdfnet.metrics").joinpath("paper_results.json").read_text(encoding="utf-8"))


PAPER_METHODS = tuple(paper_results()["methods"])  # pdfnet and the baselines of the paper's table
TABLE_FORMATS = ("plain", "md", "latex")


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if key == "HCE" else f"{value:.3f}"


def format_table(results: dict[str | tuple[str, str], dict[str, float]], fmt: str = "plain",
                 with_paper: bool = False, compare: tuple[str, ...] = ()) -> str:
    """``results``: {dataset name, or (dataset, method): metrics}; the method is "ours" when not given. 3 decimals,
    HCE as an integer; ``maxF_meanPR`` is the official PDFNet protocol (F from dataset-mean precision/recall) and is
    labelled as such. ``with_paper``: after our rows of a split, the paper's PDFNet row (every metric the paper
    reports), then the paper's rows of the ``compare`` baselines (ids of :data:`PAPER_METHODS`). ``fmt``: plain,
    md (markdown, with the paper's source) or latex (a tabular)."""
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"table format must be one of {TABLE_FORMATS}, got {fmt!r}")
    keyed = [(key if isinstance(key, tuple) else (key, "ours"), metrics) for key, metrics in results.items()]
    columns = [c for c in COLUMNS if any(c in m for m in results.values())]
    header = ["dataset", "method"] + [("maxF (mean-PR)" if c == "maxF_meanPR" else c) for c in columns]
    rows = [[name, method] + [_cell(c, metrics.get(c)) for c in columns] for (name, method), metrics in keyed]
    paper = paper_results() if with_paper or compare else None
    if paper is not None:
        unknown = [m for m in compare if m not in paper["methods"]]
        if unknown:
            raise ValueError(f"no paper numbers for {unknown}; the paper's table has {sorted(paper['methods'])}")
        methods = (["pdfnet"] if with_paper else []) + [m for m in compare if m != "pdfnet" or not with_paper]
        datasets = list(dict.fromkeys(name for (name, _), _ in keyed))
        for name in datasets:
            for method in methods:
                reported = paper["methods"][method]["splits"].get(name)
                if reported is not None:
                    label = f"{paper['methods'][method]['name']} (paper)"
                    rows.append([name, label] + [_cell(c, reported.get(c)) for c in columns])
        rows.sort(key=lambda r: datasets.index(r[0]))  # stable: the paper rows after ours, per dataset
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        if paper is not None:
            lines += ["", f"Paper numbers: {paper['source']} {paper['version_note']}"]
        lines.append("maxF (mean-PR): F-max of the dataset-mean precision/recall curves (official PDFNet evaluation); "
                     "the other columns follow PySODMetrics (per-image curves averaged), HCE the official DIS script.")
        return "\n".join(lines)
    if fmt == "latex":
        def tex(text: str) -> str:
            return text.replace("_", "\\_").replace("%", "\\%")

        lines = ["\\begin{tabular}{ll" + "r" * len(columns) + "}", "\\toprule",
                 " & ".join(tex(h) for h in header) + " \\\\", "\\midrule"]
        lines += [" & ".join(tex(c) for c in r) + " \\\\" for r in rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines)
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header)] + [fmt.format(*r) for r in rows])
