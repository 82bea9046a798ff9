"""The precompute command line: one entry point whose options come from dataclasses."""

import dataclasses
import subprocess
import sys

import pytest

from precompute.cli import COMMANDS, _load, build_parser, main


@pytest.mark.parametrize("name", [name for name, command in COMMANDS.items() if command.options])
def test_every_option_field_is_an_argument_with_its_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for spec in dataclasses.fields(_load(COMMANDS[name].options)):
        flag = spec.name if spec.metadata.get("positional") else "--" + spec.name.replace("_", "-")
        assert flag in shown, flag
        assert " ".join(spec.metadata["help"].split()) in shown, spec.name


def test_arguments_follow_the_field_types():
    parser = build_parser("train")
    args = parser.parse_args(["train", "--out", "x", "--steps", "3", "--no-tie-embeddings", "--lr", "0.5"])
    assert (args.out, args.steps, args.tie_embeddings, args.lr, args.smooth_uniformity) == ("x", 3, False, 0.5, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["train"])  # --out is required
    merge = build_parser("merge").parse_args(["merge", "a", "b", "--out", "c", "--force"])
    assert (merge.shards, merge.out, merge.force, merge.no_embeddings) == (["a", "b"], "c", True, False)


def test_top_level_help_imports_no_model_code():
    code = "import sys; from precompute.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
    code += "print(sorted(m for m in ('torch', 'transformers', 'duckdb') if m in sys.modules))"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "merge" in shown and shown.strip().endswith("[]")
