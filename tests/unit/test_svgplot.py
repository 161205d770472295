"""benchmarks/svgplot.py: the benchmarks' plots are well-formed SVG, drawn from sample JSON of
each benchmark (tests/unit/fixtures/bench), with every bar and label the data names."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from benchmarks import svgplot

FIXTURES = Path(__file__).parent / "fixtures" / "bench"
NS = "{http://www.w3.org/2000/svg}"


def parsed(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == f"{NS}svg"
    assert float(root.get("width") or 0) > 0 and float(root.get("height") or 0) > 0
    return root


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}text")]


@pytest.mark.parametrize("kind", sorted(svgplot.FIGURES))
def test_each_benchmark_figure_parses(kind: str, tmp_path: Path) -> None:
    data = json.loads((FIXTURES / f"{kind}.json").read_text())
    out = tmp_path / f"{kind}.svg"
    svgplot.draw(kind, data, out)
    root = parsed(out.read_text())
    assert len(list(root.iter(f"{NS}rect"))) > 3


def test_deploy_stages_stacked_with_the_serving_marker() -> None:
    data = json.loads((FIXTURES / "deploy.json").read_text())
    root = parsed(svgplot.deploy_figure(data))
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    tips = [r.find(f"{NS}title").text for r in bars]  # type: ignore[union-attr]
    assert any("resolve 0.92 s" in t for t in tips)
    assert any("docker compose up -d --wait" in t for t in tips)
    assert "floor" in texts(root)
    # the stage legend in the order of the benchmark's stages, each named once
    legend = [t for t in texts(root) if t in data["summary"]["vigo"]["stages"]]
    assert legend[-12:] == list(data["summary"]["vigo"]["stages"])
    assert len(list(root.iter(f"{NS}line"))) >= 4  # axes, grid, one marker per kind


def test_grouped_bars_skip_missing_values_and_escape_text() -> None:
    text = svgplot.grouped_bars(["a <&> b", "c"], ["x", "y"], [[1.0, None], [2.5, 0.5]],
                                title="t & <u>", ylabel="s", notes=["n1", ""])
    root = parsed(text)
    assert "a <&> b" in texts(root)
    assert len([r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]) == 3


def test_stacked_bars_of_nothing_still_parse() -> None:
    parsed(svgplot.stacked_bars([("empty", [], None)], title="none", xlabel="s"))


@pytest.mark.parametrize(("span", "step"), [(3.3, 1.0), (11.1, 2.0), (0.2, 0.05),
                                            (352.4, 100.0), (0.0, 1.0)])
def test_nice_step(span: float, step: float) -> None:
    assert svgplot.nice_step(span) == pytest.approx(step)
