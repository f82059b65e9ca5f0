"""``llmloop rag``: build an index from your documents, query it, list indexes."""

import argparse
import itertools
import json
import sys
import textwrap
from dataclasses import fields

from llmloop.rag.chunking import ChunkingConfig
from llmloop.rag.errors import IndexConfigError, NothingToIndexError
from llmloop.rag.index import IndexConfig
from llmloop.rag.retrieve import MODES, FusionConfig


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return args.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmloop rag",
        description="Index documents (txt, md, html, pdf) and search them with embeddings + BM25.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    index = commands.add_parser(
        "index",
        help="Build or update an index from files and directories.",
        description=(
            "Read every .txt, .md, .html and .pdf file under PATH (directories recurse), split "
            "it into chunks along headings and paragraphs, embed the chunks with "
            "all-MiniLM-L6-v2 and store a faiss + BM25 index under $LLMLOOP_HOME/indexes/NAME. "
            "Running it again only re-embeds files whose content changed and drops files that are "
            "gone (the index holds exactly the files under this run's PATHs); without PATH it "
            "re-reads the paths of the last run. Unreadable or empty files "
            "are reported and skipped."
        ),
    )
    index.add_argument("paths", nargs="*", metavar="PATH", help="files or directories to index")
    index.add_argument("--name", required=True, help="index name (letters, digits, . _ -)")
    _add_config_flags(index, IndexConfig, only=("index_type",), choices=("flat", "hnsw", "ivf"))
    _add_config_flags(index, ChunkingConfig)
    index.add_argument(
        "--batch-size", type=int, default=64, help="chunks per embedding batch (default: 64)"
    )
    index.set_defaults(run=run_index)

    query = commands.add_parser(
        "query",
        help="Search an index and print the best chunks with their sources and scores.",
        description=(
            "Search index NAME for QUESTION. hybrid (default) fuses the embedding ranking and "
            "the BM25 keyword ranking with reciprocal rank fusion; dense or bm25 use one alone."
        ),
    )
    query.add_argument("name", metavar="NAME", help="index to search (see `llmloop rag list`)")
    query.add_argument("question", metavar="QUESTION", help="what to look for, in quotes")
    query.add_argument("-k", "--top-k", type=int, default=4, help="chunks to show (default: 4)")
    query.add_argument("--mode", choices=MODES, default="hybrid", help="ranking (default: hybrid)")
    _add_config_flags(
        query,
        FusionConfig,
        only=(
            "dense_weight",
            "bm25_weight",
            "rrf_k",
            "max_per_source",
            "near_duplicate",
            "min_similarity",
        ),
    )
    query.add_argument("--json", action="store_true", help="print one JSON object per hit")
    query.set_defaults(run=run_query)

    listing = commands.add_parser(
        "list",
        help="List the indexes under $LLMLOOP_HOME/indexes.",
        description="List each index with its number of files and chunks and the paths indexed.",
    )
    listing.set_defaults(run=run_list)
    return parser


def run_index(args: argparse.Namespace) -> int:
    from llmloop.rag.embed import Embedder
    from llmloop.rag.indexer import index_paths
    from llmloop.rag.layout import find_live_version_dir

    paths = args.paths
    if not paths:
        live = find_live_version_dir(args.name)
        if live is None:
            raise NothingToIndexError(
                f"index {args.name!r} does not exist yet: give the files or directories to index, "
                f"`llmloop rag index PATH... --name {args.name}`"
            )
        from llmloop.rag.index import read_manifest

        paths = read_manifest(live)["paths"]
    chunking = ChunkingConfig(args.chunk_tokens, args.overlap_tokens)
    config = IndexConfig(index_type=args.index_type)
    if args.batch_size < 1:
        raise IndexConfigError(f"--batch-size {args.batch_size}: must be at least 1")
    embedder = Embedder(batch_size=args.batch_size)
    result = index_paths(args.name, paths, embedder, chunking, config, show_progress=True)
    for message in result.skipped:
        print(f"skipped: {message}", file=sys.stderr)
    print(
        f"index {result.name!r}: {result.num_files} files, {result.num_chunks} chunks "
        f"({result.num_embedded_files} files embedded, {result.num_reused_files} unchanged, "
        f"{result.num_removed_files} removed, {len(result.skipped)} skipped) "
        f"in {result.seconds:.1f} s -> {result.version_dir.parent}"
    )
    return 0


def run_query(args: argparse.Namespace) -> int:
    from llmloop.rag.retrieve import Retriever

    fusion = FusionConfig(
        args.dense_weight,
        args.bm25_weight,
        args.rrf_k,
        max_per_source=args.max_per_source,
        near_duplicate=args.near_duplicate,
        min_similarity=args.min_similarity,
    )
    retriever = Retriever.open(args.name, fusion=fusion)
    hits = retriever.search(args.question, top_k=args.top_k, mode=args.mode)
    if not hits:
        print(
            "no matching chunks: nothing shares a word with the question"
            if args.mode == "bm25"
            else f"not in the sources: no chunk's cosine similarity reaches --min-similarity "
            f"{args.min_similarity} (use -1 to list the closest chunks anyway)",
            file=sys.stderr,
        )
    for rank, hit in enumerate(hits, start=1):
        if args.json:
            print(json.dumps({"rank": rank, **hit.citation(), "title": hit.title}))
            continue
        heading = " > ".join(part for part in (hit.title, hit.section) if part)
        print(f"[{rank}] score {hit.score:.4f}  {hit.source}  ({heading})  #{hit.chunk_id}")
        print(textwrap.indent(hit.text, "    "), end="\n\n")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from llmloop.rag.index import read_manifest
    from llmloop.rag.layout import list_indexes, live_version_dir

    names = list_indexes()
    if not names:
        print("no indexes yet; build one with `llmloop rag index PATH... --name NAME`")
    for name in names:
        manifest = read_manifest(live_version_dir(name))
        print(
            f"{name}: {len(manifest['files'])} files, {manifest['num_chunks']} chunks, "
            f"{manifest['index']['index_type']} index; paths: {', '.join(manifest['paths'])}"
        )
    return 0


def _add_config_flags(parser, config_cls, only=None, choices=None) -> None:
    """One --flag per config field, its help taken from the field's docstring in the source."""
    docs = _field_docs(config_cls)
    for field in fields(config_cls):
        if only is not None and field.name not in only:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = type(field.default)
        parser.add_argument(
            flag,
            type=kind if kind in (int, float) else str,
            default=field.default,
            choices=choices,
            help=f"{docs.get(field.name, '')} (default: {field.default})",
        )


def _field_docs(config_cls) -> dict[str, str]:
    import ast
    import inspect

    tree = ast.parse(textwrap.dedent(inspect.getsource(config_cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in itertools.pairwise(body):
        is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and is_doc:
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs
