"""The model's family is read once, where a command starts, and the object is passed on (issue "Image-to-video,
finished", item 4): each command below reads the model's configs for its family exactly once
(``workbench.model.families.read_model_configs``, behind ``family_of_model``), and what it hands the family to
(the training module, the cache key, the encoders, the pipeline loader, the merged export, the card) uses that
object instead of reading the model's name again."""

import pytest

import workbench.model.families as families
from tests.conftest import fit_args


@pytest.fixture
def reads(monkeypatch):
    """The models whose configs were read for a family, in order."""
    seen: list[str] = []
    original = families.read_model_configs

    def counting(model):
        seen.append(str(model))
        return original(model)

    monkeypatch.setattr(families, "read_model_configs", counting)
    return seen


def test_fit_reads_the_family_once_and_the_module_takes_the_data_modules(reads, tiny_model_dir, sample_data_dir,
                                                                         tmp_path, monkeypatch):
    from workbench.train.cli import lightning_cli

    monkeypatch.chdir(tmp_path)
    cli = lightning_cli(fit_args(tiny_model_dir, sample_data_dir)[1:], run=False)
    assert len(reads) == 1, reads
    assert cli.model.family is cli.datamodule.family is not None
    handed = cli.model.family
    monkeypatch.setattr(families, "family_of_configs", lambda *a, **k: pytest.fail("the module read it again"))
    cli.model.configure_model()  # loads the components; keeps the family it was handed
    assert cli.model.family is handed and len(reads) == 1


def test_prepare_reads_the_family_once(reads, tiny_model_dir, sample_data_dir, tmp_path):
    from workbench.cli import main

    assert main(["prepare", "--model", str(tiny_model_dir), "--root", str(sample_data_dir),
                 "--cache", str(tmp_path / "cache"), "--num-frames", "9", "--height", "64", "--width", "64"]) == 0
    assert reads == [str(tiny_model_dir)]


def test_generate_reads_the_family_once(reads, tiny_model_dir, tmp_path):
    from workbench.model.pipeline import generate_video

    out = generate_video(str(tiny_model_dir), "a red circle", tmp_path / "v.mp4", steps=1, frames=9, height=64,
                         width=64, progress=False)
    assert out.is_file() and reads == [str(tiny_model_dir)]


def test_eval_source_reads_the_family_once(reads, tiny_model_dir, tmp_path):
    from workbench.eval.sources import resolve_model

    src = resolve_model(str(tiny_model_dir), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    pipe = src.load("cpu", "fp32")
    assert type(pipe).__name__ == src.family.pipeline_class and reads == [str(tiny_model_dir)]


# The export's read: tests/integration/test_export.py::test_export_reads_the_family_once (beside its checkpoint).
