"""Command line of the precompute jobs: `python -m precompute COMMAND [options]`.

    python -m precompute corpus --out assets/corpus          # build the labelled corpus (Debian text packages, stdlib)
    python -m precompute tokenizer --out FOLDER              # train the byte-level BPE tokenizer alone
    python -m precompute train --out assets/monet-embedded   # train the embedded default model
    python -m precompute index [options]                     # run a model over a corpus, write the expert index
    python -m precompute merge A B ... --out C               # combine shard index files exactly
    python -m precompute ray-index --shards N [options]      # the index job's shards as Ray tasks, then the merge
    python -m precompute upgrade OLD --out NEW               # rewrite an older index in the current schema
    python -m precompute scores INDEX                        # add expert scores (causal effect, coherence) to it
    python -m precompute schema                              # print the index schema (Markdown)

Every command's options are one dataclass whose fields carry their help (`option` / `required_option`);
`add_dataclass_arguments` turns it into argparse arguments, so `COMMAND --help` is the dataclass.
Only the chosen command's module is imported: `python -m precompute --help` loads no model code.
"""

import argparse
import dataclasses
import importlib
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any


class CommandError(Exception):
    """A job that cannot go on for a reason the user can fix: the CLI prints the message, no traceback."""


def option(default: Any, help_text: str) -> Any:
    """A dataclass field that is also a command-line option `--name`: its default and help, in one place."""
    return dataclasses.field(default=default, metadata={"help": help_text})


def required_option(help_text: str, positional: bool = False) -> Any:
    """A field without default: a required `--name` option, or with `positional` a positional argument."""
    return dataclasses.field(metadata={"help": help_text, "positional": positional})


def add_dataclass_arguments(parser: argparse.ArgumentParser, options_class: type) -> None:
    """One argument per dataclass field, typed by its annotation, help from its metadata.

    bool fields are flags: `--name` when the default is False, `--name / --no-name` when it is True.
    `list[T]` fields take one or more values. Fields without a default are required."""
    hints = typing.get_type_hints(options_class)
    for spec in dataclasses.fields(options_class):
        kind, help_text = hints[spec.name], spec.metadata.get("help", "")
        required = spec.default is dataclasses.MISSING
        name = spec.name if spec.metadata.get("positional") else "--" + spec.name.replace("_", "-")
        if kind is bool:
            action = "store_true" if spec.default is False else argparse.BooleanOptionalAction
            parser.add_argument(name, action=action, default=spec.default, help=help_text)
            continue
        if isinstance(kind, types.UnionType):  # `int | None` -> int
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        extra = {}
        if typing.get_origin(kind) is list:
            kind, extra = typing.get_args(kind)[0], {"nargs": "+"}
        if required:
            extra |= {} if spec.metadata.get("positional") else {"required": True}
        else:
            extra["default"] = spec.default
            help_text += "" if spec.default is None else f" (default: {spec.default})"
        parser.add_argument(name, type=kind, help=help_text.replace("%", "%%"), **extra)


def options_from_arguments(options_class: type, arguments: argparse.Namespace):
    return options_class(**{spec.name: getattr(arguments, spec.name) for spec in dataclasses.fields(options_class)})


def _load(reference: str):
    """`module:name` -> the object, imported now (so a command's heavy imports wait until it is chosen)."""
    module, name = reference.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Command:
    help: str
    options: str | None  # `module:Class` of its options dataclass (None: no options)
    run: str  # `module:function` called with an instance of that class


COMMANDS = {
    "corpus": Command(
        "build the labelled training corpus (Python stdlib, Debian text packages)",
        "precompute.corpus.build:CorpusOptions",
        "precompute.corpus.build:run_corpus",
    ),
    "tokenizer": Command(
        "train the byte-level BPE tokenizer alone (train does this itself)",
        "precompute.training.tokenizer:TokenizerOptions",
        "precompute.training.tokenizer:run_tokenizer",
    ),
    "train": Command(
        "train the embedded default Monet-VD from scratch",
        "precompute.training.train:TrainConfig",
        "precompute.training.train:run_training",
    ),
    "index": Command(
        "run a model over a corpus and write the expert index",
        "precompute.indexing.options:IndexOptions",
        "precompute.indexing.job:run_index",
    ),
    "merge": Command(
        "combine shard index files into one",
        "precompute.indexing.shards:MergeOptions",
        "precompute.indexing.shards:run_merge",
    ),
    "ray-index": Command(
        "run the index job's shards as Ray tasks (a local cluster, or --address), then merge them",
        "precompute.indexing.ray_index:RayIndexOptions",
        "precompute.indexing.ray_index:run_ray_index",
    ),
    "upgrade": Command(
        "rewrite an older index file in the current schema (no model run)",
        "precompute.indexing.shards:UpgradeOptions",
        "precompute.indexing.shards:run_upgrade",
    ),
    "scores": Command(
        "add expert scores (causal effect, coherence) to an index file",
        "precompute.indexing.scores:ScoreOptions",
        "precompute.indexing.scores:run_scores",
    ),
    "schema": Command("print the expert index schema, meta keys included", None, "precompute.cli:print_schema"),
}


def print_schema(options: None) -> None:
    from explorer.index.schema import schema_markdown

    print(schema_markdown(), end="")


def build_parser(chosen: str | None) -> argparse.ArgumentParser:
    """The parser, with the arguments of the `chosen` command only (the others need not be imported)."""
    parser = argparse.ArgumentParser(prog="python -m precompute", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        sub = commands.add_parser(name, help=command.help, description=command.help)
        if name == chosen and command.options is not None:
            add_dataclass_arguments(sub, _load(command.options))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((word for word in argv if not word.startswith("-")), None)
    arguments = build_parser(chosen).parse_args(argv)
    command = COMMANDS[arguments.command]
    options = None if command.options is None else options_from_arguments(_load(command.options), arguments)
    try:
        _load(command.run)(options)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
