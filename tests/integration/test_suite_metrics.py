"""A suite names its metrics (``metrics:``), and another package plugs one in through the entry point group
``workbench.metrics``: its per-video values reach the records, the means, the bootstrap intervals, results.json/md
and MLflow by name, with no workbench code of their own."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import yaml

from tests.conftest import REPO

SMOKE = REPO / "evals" / "suites" / "smoke.yaml"

THIRD_PARTY = textwrap.dedent('''
    """A metric from outside the workbench: each video's mean brightness (0-255)."""


    class Brightness:
        names = ("brightness",)

        def __init__(self, context):
            self.seen = 0

        def to(self, device):
            return self

        def reset(self):
            self.seen = 0

        def per_video(self, batch, frames):
            self.seen += len(frames)
            return [{"brightness": float(v.float().mean() * 255)} for v in frames]
''')


@pytest.fixture
def third_party_metric(tmp_path, monkeypatch):
    """An installed package (a dist-info with entry points on sys.path) that registers ``brightness``."""
    import importlib

    site = tmp_path / "site"
    (site / "thirdparty_metric").mkdir(parents=True)
    (site / "thirdparty_metric" / "__init__.py").write_text(THIRD_PARTY)
    info = site / "thirdparty_metric-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-metric\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[workbench.metrics]\nbrightness = thirdparty_metric:Brightness\n")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield
    sys.modules.pop("thirdparty_metric", None)


def suite_file(tmp_path, standins, reference, **changes):
    data = yaml.safe_load(SMOKE.read_text())
    data.update(reference=str(reference), clip_model=str(standins["clip"]), fvd_detector=str(standins["i3d"]),
                **changes)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_third_party_metric_named_by_the_suite_is_reported_with_intervals(
        third_party_metric, tmp_path, tiny_model_dir, sample_data_dir, metric_standins):
    from workbench.common import read_video
    from workbench.eval.harness import evaluate
    from workbench.eval.metrics import known_names

    assert "brightness" in known_names()
    suite = suite_file(tmp_path, metric_standins, sample_data_dir, metrics=["fvd", "clip_score", "brightness"])
    out = tmp_path / "eval"
    r = evaluate(str(suite), str(tiny_model_dir), out=out, log_to_mlflow=False, progress=False,
                 cache_dir=metric_standins["cache"])
    m, rows = r.results["metrics"], r.results["videos"]
    values = [row["brightness"] for row in rows]
    assert len(values) == 6 and m["eval/brightness"] == pytest.approx(np.mean(values), rel=1e-5)
    assert m["eval/brightness_ci_low"] <= m["eval/brightness"] <= m["eval/brightness_ci_high"]
    # each value is the metric's reading of that video (the mp4 holds it to H.264's rounding)
    for row in rows:
        assert row["brightness"] == pytest.approx(read_video(out / row["path"]).mean(), abs=1.5)
    assert "brightness" in (out / "results.md").read_text()
    assert r.results["settings"]["metrics"] == ["fvd", "clip_score", "brightness"]
    records = [json.loads(p.read_text()) for p in out.rglob("*-seed*.json")]  # what a resumed run reads back
    assert len(records) == 6 and all("brightness" in rec["values"] for rec in records)


@pytest.mark.parametrize("metrics, message", [
    (["fvd", "clip_score", "sharpness"], r"metrics: unknown 'sharpness'; known: fvd, clip_score, oracle, image_fidelity"),
    (["clip_score"], r"metrics: fvd are computed for every suite in this version: keep them in the list"),
    (["fvd", "clip_score", "image_fidelity"], r"metrics: image_fidelity needs the suite to give the suite images"),
    ("fvd", r"metrics must be a list of metric names"),
])
def test_a_suite_naming_metrics_it_cannot_have_is_one_line(tmp_path, metric_standins, sample_data_dir, metrics,
                                                           message):
    from workbench.eval.suite import SuiteError, load_suite

    with pytest.raises(SuiteError, match=message):
        load_suite(suite_file(tmp_path, metric_standins, sample_data_dir, metrics=metrics))


def test_the_default_list_follows_the_suite(tmp_path, metric_standins, sample_data_dir):
    from workbench.eval.suite import load_suite

    assert load_suite(suite_file(tmp_path, metric_standins, sample_data_dir)).metric_names == ("fvd", "clip_score")
    held_out = load_suite(REPO / "evals" / "suites" / "shapes-held-out.yaml")
    assert held_out.metric_names == ("fvd", "clip_score", "oracle")
