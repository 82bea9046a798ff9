"""Reading experts in the app (issues 10 and 11): tokens shown alone without replacement marks, labels for many
experts at once, an expert's exact weight on a pasted text, why-this-token, and the page views built on them."""

import numpy as np
import pytest

from explorer.app import tokens
from explorer.app.tokens import REPLACEMENT, RequestRejected
from explorer.web import api, pages

# characters of two and three bytes: a small byte-level vocabulary splits them over tokens
SPLIT_TEXT = "Straße — “quoted” 日本 ok"


def test_tokens_shown_alone_show_bytes_not_replacement_marks(explorer):
    ids = explorer.prompt_ids(SPLIT_TEXT)
    alone = explorer.token_texts(ids)
    assert any("⟨" in text for text in alone), "the fixture text should split a character over tokens"
    assert not any(REPLACEMENT in text for text in alone)
    for token_id, text in zip(ids, alone, strict=True):
        raw = tokens.token_bytes(explorer.tokenizer, token_id)
        assert raw is not None and tokens.bytes_text(raw) == text  # the bytes the tokenizer's vocabulary holds


def test_windows_join_characters_and_show_cut_ones_as_bytes(explorer):
    ids = explorer.prompt_ids(SPLIT_TEXT)
    assert "".join(explorer.window_pieces(ids)) == explorer.decode(ids)
    for start in range(len(ids)):  # a window of the index may begin anywhere, inside a character too
        for end in range(start + 1, len(ids) + 1):
            pieces = explorer.window_pieces(ids[start:end])
            assert len(pieces) == end - start and not any(REPLACEMENT in piece for piece in pieces)


def test_bytes_a_model_writes_that_make_no_character_show_as_bytes(explorer):
    ids = explorer.prompt_ids("a—b")
    lone = explorer.token_texts(ids)
    cut = [k for k, text in enumerate(lone) if text.startswith("⟨")]
    assert len(cut) >= 2, "the fixture tokenizer should split the dash over tokens"
    broken = [token_id for k, token_id in enumerate(ids) if k != cut[-1]]  # its last byte never comes
    pieces = explorer.window_pieces(broken)
    assert not any(REPLACEMENT in piece for piece in pieces)
    assert "".join(pieces) == "a" + "".join(lone[k] for k in cut[:-1]) + "b"


class ByteFallbackTokenizer:
    """The part of a SentencePiece tokenizer with byte fallback that token_bytes reads: "<0xE2>" pieces."""

    pieces = {0: "▁the", 1: "<0xE2>", 2: "<0x80>", 3: "<0x94>"}

    def convert_ids_to_tokens(self, token_id):
        return self.pieces[token_id]

    def decode(self, ids):
        raw = b"".join(bytes([int(self.pieces[i][3:5], 16)]) if self.pieces[i].startswith("<0x") else b"" for i in ids)
        return raw.decode("utf-8", errors="replace") if raw else "the"


def test_byte_fallback_tokens_show_their_byte():
    fallback = ByteFallbackTokenizer()
    assert tokens.token_bytes(fallback, 1) == b"\xe2" and tokens.token_bytes(fallback, 0) is None
    assert tokens.lone_token_texts(fallback, [0, 1, 2, 3]) == ["the", "⟨e2⟩", "⟨80⟩", "⟨94⟩"]
    assert tokens.bytes_text(b"a\xe2\x80\x94b\xe2") == "a—b⟨e2⟩"


def test_labels_of_many_experts_in_one_read(explorer):
    most = explorer.most_and_least_active(0, 3)[0]
    labels = explorer.labels([(e.group, e.expert) for e in most] + [(1, 999_999)])
    assert {key: labels[key] for key in [(e.group, e.expert) for e in most]} == {
        (e.group, e.expert): e.label for e in most
    }
    assert (1, 999_999) not in labels


def test_expert_on_text_is_its_exact_weight_at_every_token(explorer):
    text = "The quick brown fox jumps over the lazy dog"
    inspection = explorer.inspect(text, 0.001)
    busiest = inspection.experts_at(3, 1)[0]
    ref = explorer.expert_ref(busiest.name)
    tested = explorer.expert_on_text(ref, text)
    assert len(tested.weights) == len(tested.pieces) == len(inspection.tokens)
    assert tested.weights[3] == pytest.approx(busiest.weight, rel=1e-5)
    for t in range(len(inspection.tokens)):  # every token above the inspector's threshold agrees with it
        listed = {e.expert: e.weight for e in inspection.experts_at(t, 1)}
        if ref.flat in listed:
            assert tested.weights[t] == pytest.approx(listed[ref.flat], rel=1e-5)
        else:
            assert tested.weights[t] < 0.001
    assert tested.index_max_weight == explorer.index.stats(ref.group, ref.flat).max_weight


def test_expert_test_view_shades_and_escapes(explorer):
    table, _ = explorer.most_and_least_active(0, 1)
    out, status = pages.expert_test_view(explorer, table[0].name, "<b>bold</b> words")
    assert status == "" and "&lt;" in out and "<b>" not in out and out.count('class="tok') >= 3
    assert "is active (weight ≥ 0.01) on" in out
    _, status = pages.expert_test_view(explorer, "", "text")
    assert "Open an expert first" in status


def test_why_next_token_through_the_explorer(explorer):
    ids = explorer.prompt_ids("The quick brown fox jumps")
    why = explorer.why_next_token(ids, 2, n=5)
    assert why.token_id == ids[3] and len(why.up) <= 5 and len(why.down) <= 5
    assert [p.logit for p in why.up] == sorted((p.logit for p in why.up), reverse=True)
    assert all(p.logit > 0 for p in why.up) and all(p.logit < 0 for p in why.down)
    last = explorer.why_next_token(ids, len(ids) - 1)  # after the text: the model's own top prediction
    assert 0 <= last.token_id < explorer.model.config.vocab_size
    with pytest.raises(RequestRejected, match="outside the text"):
        explorer.why_next_token(ids, len(ids))


def test_why_view_lists_pushes_with_labels_as_links(explorer):
    inspection = explorer.inspect("The quick brown fox jumps")
    out = pages.why_view(explorer, inspection, 1)
    assert "Why" in out and "Pushed it up" in out and "Pushed it down" in out
    assert out.count('class="expert-link"') >= 1 and "expert-label-inline" in out
    assert pages.why_view(explorer, None, 1) == ""
    assert "outside the text" in pages.why_view(explorer, inspection, 99)  # said in place, never raised


def test_why_endpoint_returns_token_why(explorer):
    why = api.endpoints(explorer)["why"]
    answer = why("The quick brown fox jumps", 2, 4)
    assert set(answer) >= {"position", "token_id", "logit", "layer_logits", "up", "down", "active_experts", "token"}
    assert answer["position"] == 2 and len(answer["up"]) <= 4
    assert all({"expert", "weight", "logit", "label"} <= set(row) for row in answer["up"] + answer["down"])
    assert len(answer["layer_logits"]) == explorer.model.config.num_hidden_layers
    assert np.isfinite(answer["logit"])


def test_expert_page_shows_all_contexts_and_exports_them(explorer):
    name = explorer.most_and_least_active(0, 1)[0][0].name
    page = explorer.expert_page(explorer.expert_ref(name), contexts=None)
    view = pages.expert_view(explorer, name)
    assert view["contexts"].count('class="context"') == len(page.top)
    exported = api.endpoints(explorer)["expert"](name)
    assert len(exported["top_contexts"]) == len(page.top) == len(explorer.index.top_examples(0, page.ref.flat))
    assert not any(REPLACEMENT in piece for piece in view["contexts"])


def test_ablation_summary_names_single_experts_with_labels(explorer):
    most = explorer.most_and_least_active(0, 2)[0]
    out = pages.ablation_summary(explorer, f"{most[0].name}, G1 (3, *), {most[1].name}")
    assert f"<code>{most[0].name}</code>" in out and f"<code>{most[1].name}</code>" in out
    assert out.count("expert-label-inline") == sum(1 for e in most if e.label)
    assert "named-experts" not in pages.ablation_summary(explorer, "G1 (3, *)")


def test_overview_paths_are_relative_to_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert pages.shown_path(str(tmp_path / "assets" / "x.duckdb")) == "assets/x.duckdb"
    assert pages.shown_path("MonetLLM/monet-vd-1.4B-100BT-hf") == "MonetLLM/monet-vd-1.4B-100BT-hf"
    assert pages.shown_path("/elsewhere/x.duckdb") == "/elsewhere/x.duckdb"
    assert pages.shown_path(None) is None
