"""Fuzzed inputs of ``workbench data caption``: every answer is a result or one line with exit 2, never a
traceback. The cases stop before a captioner is loaded (a missing folder, a bad manifest, a bad option, a folder
that is not a captioner), so they run in-process in a moment."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench import cli

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


def _answer(capsys, argv: list[str]) -> tuple[int, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse: usage line, exit 2
        code = e.code
    return code, capsys.readouterr().err


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manifest=st.one_of(TEXT, st.binary(max_size=60).map(lambda b: b.decode("latin-1"))),
       layout=st.sampled_from(["metadata.jsonl", "metadata.csv", "prompts.txt"]),
       option=st.sampled_from(["--frames", "--batch-size", "--max-new-tokens", "--max-side", "--max-text-len",
                               "--prompt", "--prefix", "--captioner", "--device"]),
       value=st.one_of(st.integers(-5, 3).map(str), TEXT))
def test_caption_answers_in_one_line(tmp_path_factory, capsys, manifest, layout, option, value):
    root = tmp_path_factory.mktemp("fuzz")
    (root / layout).write_text(manifest, encoding="utf-8", errors="surrogatepass")
    if layout == "prompts.txt":
        (root / "videos.txt").write_text("missing.mp4\n")
    not_a_model = root / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text(json.dumps({"model_type": "t5"}))
    argv = ["data", "caption", str(root), "--captioner", str(not_a_model), option, value]
    code, err = _answer(capsys, argv)
    assert "Traceback" not in err
    assert code == 2, (argv, err)
    lines = [line for line in err.strip().splitlines() if line]
    assert lines and (len(lines) == 1 or lines[0].startswith("usage:")), err


def test_missing_root_and_unknown_captioner(tmp_path, capsys):
    code, err = _answer(capsys, ["data", "caption", str(tmp_path / "none")])
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
