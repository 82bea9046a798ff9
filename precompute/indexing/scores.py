"""Expert scores: how much each expert moves the next token where it fires most (causal effect), and how alike its
top contexts read (coherence), written into an index file's `expert_scores` table (schema.EXPERT_SCORES).

    python -m precompute scores INDEX [--model M] [--scores-for SPEC] [--batch N]

Causal effect, exactly: for each of an expert's top contexts (doc, p), the model runs on the document's tokens at
positions max(0, p - C) .. p (C = meta.context) twice, plain and with the expert switched off in every layer of
its routing group; the score is KL(plain || switched off) of the next-token distributions at the last token, in
nats, averaged over its top contexts. Three things make it cheap:
- the plain run of each distinct window is computed once for the whole run (its last hidden state is kept);
- a group's routing is made by the router of its first layer, before any of its experts acts, so switching an
  expert off never changes its own weights: where the plain run gives it no weight anywhere in the window,
  switching it off changes nothing and its KL is exactly 0, with no run at all;
- the other (window, expert) rows run many to a forward, each row with its own expert switched off (RowAblation).

Coherence: the mean pairwise cosine similarity of the sentence embeddings (all-MiniLM-L6-v2) of the expert's top
context windows (positions p - C .. p + C, as the page shows them), minus the same statistic for top_k windows
drawn uniformly from all top contexts of the index (one draw per index, seeded: meta.coherence_baseline).

Scores are written every few thousand contexts, each write one transaction: a killed run keeps what it wrote and a
rerun scores only the experts still without a row (or without the coherence it now asks for).
"""

import re
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F
from tqdm import tqdm

from explorer.index import schema
from explorer.model.ablation import RowAblation
from explorer.model.naming import ModelShape, parse_expert_ref
from precompute.cli import option, required_option
from precompute.indexing.options import IndexJobError
from precompute.indexing.writer import insert_rows

COHERENCE_SEED = 0
BATCHES_PER_WRITE = 32  # scores are written (and survive a killed run) about every this many forward passes
SCORES_FOR_HELP = (
    "the experts to score: 'all', a routing group 'G2', 'top N' (the N most active experts of each group), or"
    " expert names 'G1/17' / 'G1 (0, 17)'; several, separated by commas"
)
SCORE_COLUMNS = ("contexts_scored", "contexts_active", "causal_effect", "coherence")
SHAPE_KEYS = {  # IndexMeta field -> model config field: what must match for the scores to mean anything
    "num_layers": "num_hidden_layers",
    "moe_experts": "moe_experts",
    "moe_groups": "moe_groups",
    "moe_heads": "moe_heads",
    "moe_decompose": "moe_decompose",
}


@dataclass
class ScoreOptions:
    """Options of `python -m precompute scores`."""

    index: str = required_option("the index file to add expert scores to (in place; scores it has are kept)", True)
    model: str | None = option(None, "model folder or hub id (default: the model the index's meta names)")
    scores_for: str = option("all", SCORES_FOR_HELP)
    batch: int = option(256, "windows (plain runs) or (context, expert) rows (switched-off runs) per forward pass")
    device: str = option("auto", "cpu, cuda, cuda:1, ... (auto: cuda if available)")
    dtype: str = option(
        "float32", "float32, bfloat16 or float16; float32 by default: small effects drown in bfloat16's rounding"
    )
    no_coherence: bool = option(False, "the causal effect only: no sentence embeddings")
    quiet: bool = option(False, "no progress bars")


@dataclass(frozen=True)
class ScoreReport:
    """What one scoring run did and what it cost."""

    experts: int  # experts given scores (or a missing coherence) by this run
    contexts: int  # their (context, expert) rows whose causal effect was measured
    windows: int  # distinct windows run plain
    switched_off_runs: int  # rows run with their expert switched off (the others: no weight in the window, KL 0)
    seconds: float

    @property
    def seconds_per_expert(self) -> float:
        return self.seconds / max(self.experts, 1)

    def summary(self) -> str:
        return (
            f"scored {self.experts:,} experts in {self.seconds:.1f} s ({self.seconds_per_expert:.4f} s/expert):"
            f" {self.contexts:,} top contexts, {self.windows:,} distinct windows run plain,"
            f" {self.switched_off_runs:,} runs with the expert switched off"
        )


@dataclass
class Places:
    """Top contexts, one row each in (grp, expert, rank) order, with the tokens around them."""

    grp: np.ndarray
    expert: np.ndarray
    position: np.ndarray
    window: np.ndarray  # [n, 2C+1] token ids at position-C .. position+C, -1 where none is stored

    def causal_windows(self, context: int, path) -> np.ndarray:
        """[n, C+1] token ids at position-C .. position, -1 before the document's start (checked complete)."""
        causal = self.window[:, : context + 1]
        if ((causal >= 0).sum(1) != np.minimum(self.position, context) + 1).any():
            raise IndexJobError(f"The token store of {path} lacks tokens of some top contexts: rebuild the index.")
        return causal

    def texts(self, vocab: list[str]) -> list[str]:
        """Each context's window text, as the expert page shows it."""
        return ["".join(vocab[t] for t in row if t >= 0) for row in self.window]


# -- which experts ------------------------------------------------------------------------------------------
def chosen_experts(conn, spec: str, shape: ModelShape) -> np.ndarray:
    """[n, 2] (grp, expert) named by a --scores-for spec, sorted; only experts with top contexts (active once)."""
    items = [item.strip() for item in re.split(r",(?![^()]*\))", spec or "") if item.strip()]
    if not items:
        raise IndexJobError(f"--scores-for is empty: {SCORES_FOR_HELP}.")
    found = []
    for item in items:
        if item.lower() == "all":
            found.append(conn.execute("SELECT grp, expert FROM experts").fetchnumpy())
        elif match := re.fullmatch(r"top\s+(\d+)", item, re.IGNORECASE):
            most_active = """SELECT grp, expert FROM experts
                QUALIFY row_number() OVER (PARTITION BY grp ORDER BY active_count DESC, expert) <= $n"""
            found.append(conn.execute(most_active, {"n": int(match.group(1))}).fetchnumpy())
        elif match := re.fullmatch(r"G\s*(\d+)", item, re.IGNORECASE):
            group = int(match.group(1)) - 1  # the authors count groups from 1
            if not 0 <= group < shape.num_groups:
                raise IndexJobError(f"--scores-for {item!r}: the model has groups G1..G{shape.num_groups}.")
            found.append(conn.execute("SELECT grp, expert FROM experts WHERE grp = ?", [group]).fetchnumpy())
        else:
            try:
                ref = parse_expert_ref(item, shape)
            except ValueError as error:
                raise IndexJobError(f"--scores-for: {error} ({SCORES_FOR_HELP}).") from None
            where = "grp = ? AND expert = ?"
            found.append(
                conn.execute(f"SELECT grp, expert FROM experts WHERE {where}", [ref.group, ref.flat]).fetchnumpy()
            )
    pairs = np.concatenate([np.stack([f["grp"], f["expert"]], 1).astype(np.int64) for f in found])
    return np.unique(pairs.reshape(-1, 2), axis=0)


def _existing_scores(conn) -> dict[tuple[int, int], dict]:
    """(grp, expert) -> the scores already written for it (SCORE_COLUMNS)."""
    names = ", ".join(SCORE_COLUMNS)
    rows = conn.execute(f"SELECT grp, expert, {names} FROM {schema.EXPERT_SCORES.name}").fetchall()
    return {(int(g), int(e)): dict(zip(SCORE_COLUMNS, values, strict=True)) for g, e, *values in rows}


# -- reading contexts ------------------------------------------------------------------------------------------
def read_places(conn, experts: np.ndarray, context: int, ranks: np.ndarray | None = None) -> Places:
    """The top contexts of `experts` ([n, 2] grp, expert; with `ranks`, only that rank of each row) and their tokens."""
    chosen = {"grp": pa.array(experts[:, 0], pa.uint8()), "expert": pa.array(experts[:, 1], pa.uint32())}
    if ranks is not None:
        chosen["rank"] = pa.array(ranks, pa.uint16())
    conn.register("chosen", pa.table(chosen))
    conn.execute(
        f"""CREATE OR REPLACE TEMP TABLE scored_places AS
        SELECT row_number() OVER (ORDER BY e.grp, e.expert, e.rank) - 1 AS row, e.grp, e.expert, e.doc, e.position
        FROM chosen c JOIN examples e USING ({", ".join(chosen)}) WHERE e.kind = 'top'"""
    )
    conn.unregister("chosen")
    tops = conn.execute("SELECT grp, expert, position FROM scored_places ORDER BY row").fetchnumpy()
    stored = conn.execute(
        """
        WITH wanted AS (
            SELECT row, doc, position,
                   unnest(range(greatest(position::BIGINT - $c, 0), position::BIGINT + $c + 1)) AS at
            FROM scored_places
        )
        SELECT w.row, w.at - w.position + $c AS column, t.token_id
        FROM wanted w JOIN tokens t ON t.doc = w.doc AND t.position = w.at
        """,
        {"c": context},
    ).fetchnumpy()
    conn.execute("DROP TABLE scored_places")
    window = np.full((len(tops["grp"]), 2 * context + 1), -1, dtype=np.int64)
    window[stored["row"].astype(np.int64), stored["column"].astype(np.int64)] = stored["token_id"]
    return Places(*(tops[name].astype(np.int64) for name in ("grp", "expert", "position")), window)


# -- the causal effect -----------------------------------------------------------------------------------------
def _right_padded(windows: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token windows as one right-padded batch (causal attention: padding never reaches a real token), and lengths."""
    lengths = torch.tensor([len(w) for w in windows])
    ids = torch.zeros((len(windows), int(lengths.max())), dtype=torch.long)
    for row, window in enumerate(windows):
        ids[row, : len(window)] = torch.from_numpy(window)
    return ids.to(device), lengths.to(device)


def _last_hidden(model, ids: torch.Tensor, lengths: torch.Tensor, **kwargs):
    """The decoder's final (normed) hidden state at each row's last real token, and the decoder's output."""
    output = model.model(ids, use_cache=False, **kwargs)
    return output.last_hidden_state[torch.arange(len(ids), device=ids.device), lengths - 1], output


def _has_weight(router_probs, shape: ModelShape, batch_row, group, i, j, lengths) -> np.ndarray:
    """Whether expert (i, j) of `group` has a non-zero weight at some token of its batch row, row by row."""
    found = np.zeros(len(group), dtype=bool)
    for g in np.unique(group):
        chosen = group == g
        g1, g2 = router_probs[shape.group_layers(int(g))[0]]
        b, ii, jj = (torch.as_tensor(values[chosen], device=g1.device) for values in (batch_row, i, j))
        weight = (g1[b, :, :, ii] * g2[b, :, :, jj]).sum(-1)  # [rows, T]: sum over heads, as the model does
        inside = torch.arange(weight.shape[1], device=g1.device)[None, :] < lengths[b][:, None]
        found[chosen] = ((weight != 0) & inside).any(1).cpu().numpy()
    return found


@torch.no_grad()
def plain_pass(model, keys: np.ndarray, rows: dict, batch: int, bar) -> tuple[torch.Tensor, np.ndarray]:
    """Run every distinct window once, plain: its last hidden state [W, d] (on the CPU, in the model's dtype), and
    for every row (window, grp, i, j) whether its expert has any weight in its window (else its KL is 0)."""
    shape, device = ModelShape.of(model.config), model.device
    lengths = (keys >= 0).sum(1)
    order = np.argsort(lengths, kind="stable")  # similar lengths together: little padding
    place = np.empty(len(keys), dtype=np.int64)
    place[order] = np.arange(len(keys))
    row_place = place[rows["window"]]
    row_order = np.argsort(row_place, kind="stable")  # the rows of one batch of windows are one slice
    sorted_place = row_place[row_order]
    hidden = torch.empty((len(keys), model.config.hidden_size), dtype=model.dtype)
    active = np.zeros(len(rows["window"]), dtype=bool)
    for start in range(0, len(keys), batch):
        windows = order[start : start + batch]
        ids, window_lengths = _right_padded([keys[w][keys[w] >= 0] for w in windows], device)
        last, output = _last_hidden(model, ids, window_lengths, output_router_probs=True)
        hidden[windows] = last.cpu()
        low, high = np.searchsorted(sorted_place, [start, start + len(windows)])
        chosen = row_order[low:high]
        active[chosen] = _has_weight(
            output.router_probs,
            shape,
            row_place[chosen] - start,
            rows["grp"][chosen],
            rows["i"][chosen],
            rows["j"][chosen],
            window_lengths,
        )
        bar.update(len(windows))
    return hidden, active


@torch.no_grad()
def switched_off_kl(model, keys: np.ndarray, hidden: torch.Tensor, rows: dict, batch: int) -> np.ndarray:
    """KL(plain || switched off) in nats at the last token of each row's window, its expert switched off in every
    layer of its group; the rows run `batch` to a forward, each with its own expert (RowAblation)."""
    shape, device = ModelShape.of(model.config), model.device
    kl = np.zeros(len(rows["window"]))
    for start in range(0, len(kl), batch):
        take = slice(start, start + batch)
        windows = rows["window"][take]
        ids, lengths = _right_padded([keys[w][keys[w] >= 0] for w in windows], device)
        ablation = RowAblation.group_experts(shape, *(torch.from_numpy(rows[k][take]) for k in ("grp", "i", "j")))
        last, _ = _last_hidden(model, ids, lengths, ablate=ablation)
        log_q = F.log_softmax(model.lm_head(last).float(), dim=-1)
        log_p = F.log_softmax(model.lm_head(hidden[windows].to(device)).float(), dim=-1)
        # KL >= 0; rounding can leave a tiny negative where switching off changed (almost) nothing
        kl[take] = (log_p.exp() * (log_p - log_q)).sum(-1).clamp(min=0).cpu().numpy()
    return kl


# -- coherence ----------------------------------------------------------------------------------------------
def mean_pairwise_cosine(vectors: np.ndarray) -> float | None:
    """Mean of v_a . v_b over all pairs a != b of unit vectors (None for fewer than two)."""
    n = len(vectors)
    if n < 2:
        return None
    vectors = vectors.astype(np.float64)
    total = vectors.sum(0)
    return float((total @ total - (vectors * vectors).sum()) / (n * (n - 1)))


def _coherence(vectors: np.ndarray, baseline: float | None) -> float | None:
    score = mean_pairwise_cosine(vectors)
    return None if score is None or baseline is None else score - baseline


class TextEmbeddings:
    """Sentence embeddings of window texts, each distinct text embedded once per run."""

    def __init__(self):
        self.known: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        from explorer.index.embedding import embed_texts

        new = sorted({text for text in texts if text not in self.known})
        if new:
            self.known.update(zip(new, embed_texts(new), strict=True))
        return np.stack([self.known[text] for text in texts]) if texts else np.zeros((0, schema.EMBEDDING_DIM))


def coherence_baseline(conn, meta: schema.IndexMeta, vocab: list[str], embed, seed: int) -> float | None:
    """The coherence statistic of top_k top contexts drawn uniformly from all of the index's, with `seed`."""
    counts = conn.execute(
        "SELECT grp, expert, count(*) AS n FROM examples WHERE kind = 'top' GROUP BY grp, expert ORDER BY grp, expert"
    ).fetchnumpy()
    sizes = counts["n"].astype(np.int64)
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if len(ends) else 0
    if total < 2:
        return None
    picks = np.sort(np.random.default_rng(seed).choice(total, size=min(meta.top_k, total), replace=False))
    which = np.searchsorted(ends, picks, side="right")  # the expert holding each drawn row, then its rank there
    experts = np.stack([counts["grp"][which], counts["expert"][which]], 1).astype(np.int64)
    places = read_places(conn, experts, meta.context, ranks=picks - (ends[which] - sizes[which]))
    return mean_pairwise_cosine(embed(places.texts(vocab)))


# -- writing ---------------------------------------------------------------------------------------------------
def _set_meta(conn, **values) -> None:
    for key, value in values.items():
        conn.execute(f"INSERT OR REPLACE INTO {schema.META.name} VALUES (?, ?)", schema.meta_row(key, value))


def _scored_for(before: str | None, spec: str) -> str:
    """meta.scores_for after a run of `spec`: what the runs so far asked for."""
    spec = ", ".join(item.strip() for item in re.split(r",(?![^()]*\))", spec) if item.strip())
    if before is None or spec.lower() == "all" or before == spec:
        return spec
    return before if before.lower() == "all" else f"{before}; {spec}"


def _write_scores(conn, experts: np.ndarray, columns: dict, replaced: np.ndarray) -> None:
    """One transaction: drop the old rows of `replaced` experts, insert the new rows."""
    conn.execute("BEGIN TRANSACTION")
    if len(replaced):
        old = pa.table({"grp": pa.array(replaced[:, 0], pa.uint8()), "expert": pa.array(replaced[:, 1], pa.uint32())})
        conn.register("replaced", old)
        conn.execute(
            f"DELETE FROM {schema.EXPERT_SCORES.name} WHERE (grp, expert) IN (SELECT (grp, expert) FROM replaced)"
        )
        conn.unregister("replaced")
    rows = {
        "grp": pa.array(experts[:, 0], pa.uint8()),
        "expert": pa.array(experts[:, 1], pa.uint32()),
        "contexts_scored": pa.array(columns["contexts_scored"], pa.uint16()),
        "contexts_active": pa.array(columns["contexts_active"], pa.uint16()),
        "causal_effect": pa.array(columns["causal_effect"], pa.float64()),
        "coherence": pa.array(columns["coherence"], pa.float32()),
    }
    insert_rows(conn, schema.EXPERT_SCORES, rows)
    conn.execute("COMMIT")


# -- the whole run ---------------------------------------------------------------------------------------------
def _open(path: Path):
    try:
        return duckdb.connect(str(path))
    except duckdb.Error as error:
        raise IndexJobError(
            f"Cannot open {path} for writing ({error}); is it open in another process (the app)? Close that first."
        ) from None


def _to_do(chosen: np.ndarray, existing: dict, coherence: bool) -> tuple[np.ndarray, np.ndarray]:
    """The chosen experts that still need a score ([n, 2] grp, expert), and which of them need the causal effect
    (those without a row; the others only lack the coherence now asked for)."""
    todo, needs_causal = [], []
    for group, expert in chosen.tolist():
        row = existing.get((group, expert))
        if row is None or (coherence and row["coherence"] is None and row["contexts_scored"] >= 2):
            todo.append((group, expert))
            needs_causal.append(row is None)
    return np.array(todo, dtype=np.int64).reshape(-1, 2), np.array(needs_causal, dtype=bool)


def _check_model(meta: schema.IndexMeta, model, path) -> None:
    differ = [k for k, c in SHAPE_KEYS.items() if getattr(meta, k) != getattr(model.config, c)]
    if differ:
        raise IndexJobError(
            f"The model's {', '.join(differ)} differ from what {path} was built with ({meta.model}): score an index"
            " with the model that built it (--model)."
        )


def score_index(
    path: str | Path,
    model,
    scores_for: str = "all",
    batch: int = 256,
    coherence: bool = True,
    model_name: str | None = None,
    show_progress: bool = False,
) -> ScoreReport:
    """Add the chosen experts' scores to the index file at `path` (in place); experts already scored are kept.

    coherence: also measure coherence (loads the sentence-embedding model); model_name: how meta names the model."""
    started = time.perf_counter()
    path = Path(path)
    shape = ModelShape.of(model.config)
    with _open(path) as conn:
        meta = schema.read_meta(conn.execute("SELECT key, value FROM meta").fetchall())
        if meta.schema_version != schema.SCHEMA_VERSION:
            raise IndexJobError(
                f"{path} has index schema version {meta.schema_version}; upgrade it first:"
                f" python -m precompute upgrade {path} --out NEW"
            )
        _check_model(meta, model, path)
        conn.execute(schema.EXPERT_SCORES.ddl().replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
        existing = _existing_scores(conn)
        todo, needs_causal = _to_do(chosen_experts(conn, scores_for, shape), existing, coherence)
        if not len(todo):
            return ScoreReport(0, 0, 0, 0, time.perf_counter() - started)
        vocab = [text for (text,) in conn.execute("SELECT text FROM vocab ORDER BY token_id").fetchall()]
        embed = TextEmbeddings() if coherence else None
        if coherence and meta.coherence_baseline is None:
            baseline = coherence_baseline(conn, meta, vocab, embed, COHERENCE_SEED)
            _set_meta(conn, coherence_baseline=baseline, coherence_seed=COHERENCE_SEED)
            meta = schema.read_meta(conn.execute("SELECT key, value FROM meta").fetchall())
        if needs_causal.any():  # how the rows about to be written are measured
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
            _set_meta(conn, scores_model=model_name or meta.model, scores_dtype=dtype)
        places = read_places(conn, todo, meta.context)
        E = shape.experts_per_side
        place_key, todo_key = places.grp * E * E + places.expert, todo[:, 0] * E * E + todo[:, 1]
        starts = np.searchsorted(place_key, todo_key)  # each expert's rows are one slice of `places`
        ends = np.searchsorted(place_key, todo_key, side="right")

        # plain runs: every distinct window of the rows whose causal effect is wanted, once
        measured = np.repeat(needs_causal, ends - starts)
        keys, window = np.unique(places.causal_windows(meta.context, path)[measured], axis=0, return_inverse=True)
        rows = {"window": np.full(len(measured), -1, dtype=np.int64)}
        rows["window"][measured] = window.reshape(-1)
        rows |= {"grp": places.grp, "i": places.expert // E, "j": places.expert % E}
        plain_rows = {k: v[measured] for k, v in rows.items()}
        plain_bar = tqdm(total=len(keys), unit="window", desc="plain runs", disable=not show_progress)
        with plain_bar:
            hidden, active_measured = plain_pass(model, keys, plain_rows, batch, plain_bar)
        active = np.zeros(len(measured), dtype=bool)
        active[measured] = active_measured

        # switched-off runs and coherence, a chunk of experts at a time, each chunk written when done
        texts = places.texts(vocab) if coherence else None
        per_write = max(1, BATCHES_PER_WRITE * batch // max(meta.top_k, 1))
        bar = tqdm(total=len(todo), unit="expert", desc=f"scores {path.name}", disable=not show_progress)
        switched_off = 0
        with bar:
            for first in range(0, len(todo), per_write):
                chunk = slice(first, first + per_write)
                low, high = starts[chunk][0], ends[chunk][-1]
                kl = np.zeros(high - low)
                runs = np.nonzero(active[low:high])[0]
                run_rows = {k: v[low + runs] for k, v in rows.items()}
                kl[runs] = switched_off_kl(model, keys, hidden, run_rows, batch)
                switched_off += len(runs)
                columns = {name: [] for name in SCORE_COLUMNS}
                for k, (start, end) in enumerate(zip(starts[chunk], ends[chunk], strict=True)):
                    scores = existing.get(tuple(todo[first + k].tolist())) or {
                        "contexts_scored": end - start,
                        "contexts_active": int(active[start:end].sum()),
                        "causal_effect": float(kl[start - low : end - low].mean()),
                        "coherence": None,
                    }
                    if coherence:
                        scores["coherence"] = _coherence(embed(texts[start:end]), meta.coherence_baseline)
                    for name in SCORE_COLUMNS:
                        columns[name].append(scores[name])
                replaced = todo[chunk][~needs_causal[chunk]]
                _write_scores(conn, todo[chunk], columns, replaced)
                elapsed = time.perf_counter() - started
                bar.update(len(todo[chunk]))
                bar.set_postfix_str(f"{elapsed / (first + len(todo[chunk])):.3f} s/expert")
        _set_meta(conn, scores_for=_scored_for(meta.scores_for, scores_for))  # once all are written
        conn.execute("CHECKPOINT")
    measured_rows = int(measured.sum())
    return ScoreReport(len(todo), measured_rows, len(keys), switched_off, time.perf_counter() - started)


def run_scores(options: ScoreOptions) -> None:
    """`python -m precompute scores`: load the model, score the chosen experts, print the cost per expert."""
    from explorer.index.reader import ExpertIndex, IndexUnavailable
    from explorer.model.device import load_model

    try:
        with ExpertIndex(options.index) as index:
            meta = index.meta()
    except IndexUnavailable as error:
        raise IndexJobError(str(error)) from None
    name = options.model or meta.model
    try:
        model = load_model(name, options.device, options.dtype)
    except (OSError, ValueError) as error:
        raise IndexJobError(f"Cannot load the model {name} ({error}); name it with --model.") from None
    report = score_index(
        options.index,
        model,
        options.scores_for,
        options.batch,
        coherence=not options.no_coherence,
        model_name=name,
        show_progress=not options.quiet,
    )
    if report.experts == 0:
        print(f"nothing to score: the experts of --scores-for {options.scores_for!r} already have their scores")
    else:
        print(report.summary())
