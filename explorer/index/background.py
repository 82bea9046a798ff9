"""The index as a background for the concept builder: every expert's mean weight over the indexed corpus, and a
few stored texts of each domain to measure a switched-off set's cost on.

Mean weights are the index's own statistic (`experts.weight_sum / meta.tokens_processed`, weights below the
index's min_weight counting as 0), so a concept's means compare like with like when they are taken with the same
threshold. Background texts are runs of consecutive stored tokens in the token store (`tokens`), which holds the
windows around the experts' examples; documents are picked by a fixed hash of their number, so the same index
always gives the same texts, and only the picked documents' tokens are read (row-group lookups at any scale).
"""

from dataclasses import dataclass

import numpy as np

from explorer.index.reader import ExpertIndex

NO_DOMAIN = "corpus"  # the name of the documents of a corpus without domains
_HASH = "(doc::UBIGINT * 2654435761) % 4294967291"  # a fixed spread of document numbers (no version-dependent hash)


def group_mean_weights(index: ExpertIndex, group: int) -> np.ndarray:
    """[E * E] mean weight of every expert of a 0-based group over all indexed tokens (0 for experts never active)."""
    E = index.experts_per_side
    means = np.zeros(E * E)
    with index.cursor() as conn:
        stored = conn.execute("SELECT expert, weight_sum FROM experts WHERE grp = ?::UTINYINT", [group]).fetchnumpy()
    means[stored["expert"].astype(np.int64)] = stored["weight_sum"] / index.tokens_processed
    return means


@dataclass(frozen=True)
class BackgroundText:
    domain: str
    doc: int
    token_ids: list[int]


def _longest_run(positions: list[int], token_ids: list[int]) -> list[int]:
    """The token ids of the longest run of consecutive positions (the first such run on ties)."""
    best, start = (0, 0), 0
    for k in range(1, len(positions) + 1):
        if k == len(positions) or positions[k] != positions[k - 1] + 1:
            if k - start > best[1] - best[0]:
                best = (start, k)
            start = k
    return token_ids[best[0] : best[1]]


def background_texts(
    index: ExpertIndex, per_domain: int = 4, min_tokens: int = 24, max_tokens: int = 128, candidates: int = 8
) -> list[BackgroundText]:
    """Up to `per_domain` texts of each domain: the longest stored run of each of the domain's first
    `candidates * per_domain` documents in hash order, kept when it has at least `min_tokens` tokens, cut to
    `max_tokens`. By domain, then in hash order."""
    picked = index.rows(
        f"""
        SELECT doc, domain FROM (
            SELECT doc, coalesce(domain, $none) AS domain,
                   row_number() OVER (PARTITION BY coalesce(domain, $none) ORDER BY {_HASH}, doc) AS k
            FROM documents
        ) WHERE k <= $n ORDER BY domain, k
        """,
        {"none": NO_DOMAIN, "n": candidates * per_domain},
    )
    if not picked:
        return []
    stored = index.rows(
        """
        SELECT t.doc, list(t.position ORDER BY t.position), list(t.token_id ORDER BY t.position)
        FROM (SELECT unnest($docs)::UINTEGER AS doc) w JOIN tokens t USING (doc)
        GROUP BY t.doc
        """,
        {"docs": [doc for doc, _ in picked]},
    )
    runs = {doc: _longest_run(positions, token_ids) for doc, positions, token_ids in stored}
    texts: list[BackgroundText] = []
    kept: dict[str, int] = {}
    for doc, domain in picked:
        run = runs.get(doc, [])
        if len(run) >= min_tokens and kept.get(domain, 0) < per_domain:
            kept[domain] = kept.get(domain, 0) + 1
            texts.append(BackgroundText(domain, doc, [int(t) for t in run[:max_tokens]]))
    return texts
