"""Command line of the precompute jobs: a small dispatcher, one subcommand per job.

    python -m precompute index [options]          # see --help; options come from IndexOptions
    python -m precompute merge A B ... --out C    # combine shard index files exactly
    python -m precompute upgrade OLD --out NEW    # rewrite an older index in the current schema
    python -m precompute schema                   # print the index schema (Markdown)

To add a job, write `add_arguments(parser)` + `run(args)` for it and list it in COMMANDS.
"""

import argparse
import dataclasses
import sys
import types
import typing


def add_dataclass_arguments(parser: argparse.ArgumentParser, options_class) -> None:
    """One --flag per dataclass field, typed by its annotation, help from field metadata."""
    hints = typing.get_type_hints(options_class)
    for option in dataclasses.fields(options_class):
        flag = "--" + option.name.replace("_", "-")
        kind = hints[option.name]
        help_text = option.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
            continue
        if isinstance(kind, types.UnionType):  # `int | None` -> int
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        shown = "" if option.default is None else f" (default: {option.default})"
        parser.add_argument(flag, type=kind, default=option.default, help=help_text + shown)


def _index_arguments(parser):
    from precompute.indexing.job import IndexOptions

    add_dataclass_arguments(parser, IndexOptions)


def _index(args):
    from precompute.indexing.job import IndexOptions, run_index

    run_index(IndexOptions(**{f.name: getattr(args, f.name) for f in dataclasses.fields(IndexOptions)}))


def _merge_arguments(parser):
    parser.add_argument("shards", nargs="+", help="index files of disjoint shards of one job")
    parser.add_argument("--out", required=True, help="merged index file to write")
    parser.add_argument("--no-embeddings", action="store_true", help="skip sentence embeddings")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def _merge(args):
    from precompute.indexing.job import merge_indexes

    path = merge_indexes(args.shards, args.out, embed=not args.no_embeddings, force=args.force)
    print(f"wrote {path}")


def _upgrade_arguments(parser):
    parser.add_argument("index", help="an index file of an older schema version")
    parser.add_argument("--out", required=True, help="the index file to write, in the current schema")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def _upgrade(args):
    from precompute.indexing.job import upgrade_index

    print(f"wrote {upgrade_index(args.index, args.out, force=args.force)}")


def _schema(args):
    from explorer.index.schema import schema_markdown

    print(schema_markdown())


COMMANDS = {
    "index": ("run a model over a corpus and write the expert index", _index_arguments, _index),
    "merge": ("combine shard index files into one", _merge_arguments, _merge),
    "upgrade": ("rewrite an older index file in the current schema (no model run)", _upgrade_arguments, _upgrade),
    "schema": ("print the expert index schema", lambda parser: None, _schema),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precompute", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.set_defaults(run=run)
    args = parser.parse_args(argv)
    from precompute.corpus.documents import CorpusError
    from precompute.indexing.job import IndexJobError

    try:
        args.run(args)
    except (IndexJobError, CorpusError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
