"""Expert scores as the reader, the app and the page give them: percentiles among the scored experts, leaderboards,
search sorted by a score, /expert's JSON, and "not scored" wherever an index or an expert has none."""

import shutil

import duckdb
import pytest

from explorer.app.explorer import AppSettings, Explorer
from explorer.index import scores
from explorer.index.reader import ExpertIndex
from explorer.model.naming import ExpertRef
from explorer.web import pages


def _table(path) -> dict[tuple[int, int], tuple[float, float | None]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute("SELECT grp, expert, causal_effect, coherence FROM expert_scores").fetchall()
    return {(g, e): (causal, coherence) for g, e, causal, coherence in rows}


def _explorer_on(path, vd_tiny, limits) -> Explorer:
    return Explorer.load(AppSettings(str(vd_tiny.checkpoint), str(path), "cpu", "float32", limits))


@pytest.fixture(scope="module")
def partly_scored(app_index, tmp_path_factory):
    """The app index with the scores of G1/0 .. G1/9 only, as `--scores-for` leaves a file."""
    path = tmp_path_factory.mktemp("partly") / "partly.duckdb"
    shutil.copy(app_index, path)
    with duckdb.connect(str(path)) as conn:
        conn.execute("DELETE FROM expert_scores WHERE grp > 0 OR expert >= 10")
        conn.execute("""UPDATE meta SET value = '"G1/0, G1/1, ..."' WHERE key = 'scores_for'""")
    return path


@pytest.fixture(scope="module")
def unscored(app_index, tmp_path_factory):
    """The app index as a file written before the scores existed: no expert_scores table, no score facts."""
    path = tmp_path_factory.mktemp("unscored") / "unscored.duckdb"
    shutil.copy(app_index, path)
    with duckdb.connect(str(path)) as conn:
        conn.execute("DROP TABLE expert_scores")
        conn.execute("DELETE FROM meta WHERE key LIKE 'scores_%' OR key LIKE 'coherence_%'")
    return path


def test_an_experts_scores_and_percentiles(explorer, app_index):
    table = _table(app_index)
    group, expert = max(table, key=lambda k: table[k][0])
    middle = sorted(table, key=lambda k: table[k][0])[len(table) // 2]
    with ExpertIndex(app_index) as index:
        top = scores.expert_scores(index, group, expert)
        mid = scores.expert_scores(index, *middle)
        assert scores.coverage(index) == scores.ScoreCoverage(len(table), "all", True)
    assert top.causal_effect == table[group, expert][0] and top.causal_percentile == 1.0
    assert top.scored_experts == len(table) and top.contexts_scored == 4
    lower = sum(1 for causal, _ in table.values() if causal < table[middle][0])
    assert mid.causal_percentile == pytest.approx(lower / (len(table) - 1))
    lower_coherence = sum(1 for _, c in table.values() if c < table[middle][1])
    assert mid.coherence == pytest.approx(table[middle][1]) and mid.coherence_percentile == pytest.approx(
        lower_coherence / (len(table) - 1)
    )

    ref = ExpertRef.from_flat(group, expert, explorer.shape.experts_per_side)
    page = explorer.expert_page(ref)
    assert page.scores == top and page.scores_note == ""
    as_json = page.to_json()
    assert as_json["scores"]["causal_effect"] == top.causal_effect and as_json["scores"]["causal_percentile"] == 1.0
    view = pages.expert_view(explorer, str(ref))
    assert "higher than 100% of the 512 scored experts" in view["header"]
    assert f"causal effect {top.causal_effect:.3g} nats" in view["header"]
    assert f"coherence {top.coherence:+.3f}: higher than {top.coherence_percentile:.0%}" in view["header"]


def test_leaderboards_and_search_sorted_by_a_score(explorer, app_index):
    table = _table(app_index)
    boards = explorer.score_boards(1, n=5)
    in_group = sorted(((c, coh, e) for (g, e), (c, coh) in table.items() if g == 1), reverse=True)
    assert [r.expert for r in boards.most_causal] == [e for _, _, e in in_group[:5]]
    assert [r.causal_effect for r in boards.least_causal] == sorted(c for c, _, _ in in_group)[:5]
    coherent = sorted((coh for _, coh, _ in in_group), reverse=True)[:5]
    assert [r.coherence for r in boards.most_coherent] == pytest.approx(coherent) and boards.note == ""
    shown, status = pages.score_boards_view(explorer, 1)
    assert status == "" and shown.count("<table") == 3 and boards.most_causal[0].name in shown

    found = explorer.search("a", mode="text", limit=30)
    by_effect = explorer.search("a", mode="text", limit=30, sort="causal")
    assert len(found.rows) > 5 and sorted(r.name for r in found.rows) == sorted(r.name for r in by_effect.rows)
    assert all(r.causal_effect == table[r.group, r.expert][0] for r in found.rows)
    effects = [r.causal_effect for r in by_effect.rows]
    assert effects == sorted(effects, reverse=True) and effects != [r.causal_effect for r in found.rows]
    coherence = [r.coherence for r in explorer.search("a", mode="text", limit=30, sort="coherence").rows]
    assert coherence == sorted(coherence, reverse=True)
    results, _ = pages.search_view(explorer, "a", "text", None, "causal")
    assert "causal effect" in results and f"{effects[0]:.3g} nats" in results


def test_an_expert_without_scores_says_not_scored(partly_scored, vd_tiny, limits):
    app = _explorer_on(partly_scored, vd_tiny, limits)
    E = app.shape.experts_per_side
    scored, unscored = app.expert_page(ExpertRef.from_flat(0, 3, E)), app.expert_page(ExpertRef.from_flat(1, 3, E))
    assert scored.scores is not None and scored.scores.scored_experts == 10
    assert unscored.scores is None and unscored.to_json()["scores"] is None
    assert unscored.scores_note.startswith("Not scored: this index has scores for G1/0, G1/1, ... (10 experts)")
    assert "Not scored" in pages.expert_view(app, "G2/3")["header"]
    rows = app.search("G2/3").rows + app.search("G1/3").rows
    assert rows[0].causal_effect is None and rows[1].causal_effect is not None
    assert app.score_boards(1).most_causal == [] and len(app.score_boards(0, n=20).most_causal) == 10


def test_an_index_without_scores_says_how_to_add_them(unscored, vd_tiny, limits):
    app = _explorer_on(unscored, vd_tiny, limits)
    assert not app.problems
    page = app.expert_page(app.expert_ref("G1/3"))
    expected = f"Scores not computed for this index: python -m precompute scores {unscored}"
    assert page.scores is None and page.scores_note == expected and page.to_json()["scores_note"] == expected
    assert expected in pages.expert_view(app, "G1/3")["header"]
    boards, status = pages.score_boards_view(app, 0)
    assert expected in boards and status == ""
    assert app.search("G1/3", sort="causal").rows[0].causal_effect is None
    results, _ = pages.search_view(app, "G1/3", "auto", None, "causal")
    assert "causal effect" not in results  # no empty score columns
    with ExpertIndex(unscored) as index:
        assert scores.coverage(index).scored == 0 and scores.leaderboard(index, 0, "causal") == []
        assert scores.scores_of(index, [(0, 3)]) == {}
