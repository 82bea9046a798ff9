"""The served app's /concept endpoint and the control keys of /generate and /perplexity, through gradio_client."""

import html
import math

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow

GERMAN = (
    "Der schnelle braune Fuchs springt über den faulen Hund.\n\n"
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.\n\n"
    "Ein Hund ist kein Fuchs, sagt man in der Stadt.\n\n"
    "Der Fuchs schläft im Wald und der Hund im Garten.\n\n"
    "Die Kinder spielen im Garten mit dem Hund."
)
OLD_EFFECT_KEYS = {
    "token_ids",
    "baseline_logprobs",
    "ablated_logprobs",
    "baseline_perplexity",
    "ablated_perplexity",
    "removed_mass_share",
}
NEW_EFFECT_KEYS = {"deltas", "kl", "mean_kl", "loss_rise", "control", "control_note", "specificity"}


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_concept_is_listed_and_returns_a_set_the_other_endpoints_take(client):
    assert "/concept" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    found = client.predict(GERMAN, api_name="/concept")  # counter_examples and ratio by default
    assert set(found) >= {"ablate", "experts", "preview"}
    assert found["ratio"] == 2.0 and found["examples"] == 4 and found["held_out"] == 1
    assert found["ablate"] == ", ".join(e["expert"] for e in found["experts"])
    assert found["experts"], found["summary"]
    for expert in found["experts"]:
        assert expert["concept_mean"] >= 2.0 * expert["background_mean"]
        assert expert["active_tokens"] >= 5 and expert["texts"] >= 2
    preview = found["preview"]
    assert preview["held_out"]["texts"] == 1 and preview["background"]["texts"] >= 1
    assert set(preview["domains"]) <= {"prose", "code", "german"}
    measured = client.predict("Der Hund schläft im Garten.", found["ablate"], api_name="/perplexity")
    assert measured["switched_off"].startswith(f"{len(found['experts']):,} experts switched off")


def test_concept_with_counter_examples_and_a_stricter_ratio(client):
    prose = "The quick brown fox jumps over the lazy dog.\n\nIt was the best of times, it was the worst of times."
    loose = client.predict(GERMAN, prose, 2.0, api_name="/concept")
    strict = client.predict(GERMAN, prose, 8.0, api_name="/concept")
    assert loose["background"] == "the counter-examples" and loose["preview"]["domains"] == {}
    assert {e["expert"] for e in strict["experts"]} <= {e["expert"] for e in loose["experts"]}
    assert all(e["ratio"] is None or e["ratio"] >= 8.0 for e in strict["experts"])


@pytest.mark.parametrize(
    "args, message",
    [(("",), "Give examples"), (("Ein Hund.",), "at least 2 examples"), ((GERMAN, "", 1.0), "ratio must lie")],
)
def test_bad_concepts_get_the_page_message(client, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name="/concept")


def _check_control(effect: dict, ablate: str) -> None:
    assert set(effect) >= OLD_EFFECT_KEYS | NEW_EFFECT_KEYS
    tokens = len(effect["token_ids"])
    control = effect["control"]
    assert control is not None, effect["control_note"]
    assert len(effect["kl"]) == len(effect["deltas"]) == len(control["kl"]) == len(control["deltas"]) == tokens
    assert control["experts"] == len([item for item in ablate.split(",") if item.strip()])
    assert not set(control["ablate"].split(", ")) & {item.strip() for item in ablate.split(",")}
    assert effect["mean_kl"] == pytest.approx(sum(effect["kl"]) / tokens)
    assert control["mean_kl"] == pytest.approx(sum(control["kl"]) / tokens)
    assert effect["specificity"] == pytest.approx(effect["mean_kl"] / control["mean_kl"])
    deltas = [a - b for a, b in zip(effect["ablated_logprobs"], effect["baseline_logprobs"], strict=True)]
    assert effect["deltas"] == pytest.approx(deltas)
    assert control["loss_rise"] == pytest.approx(-sum(control["deltas"]) / tokens)


def test_perplexity_and_generate_return_the_control(client):
    ablate = "G1/5, G1/40, G2/17, L3/100"
    measured = client.predict("It was the best of times, it was the worst of times.", ablate, api_name="/perplexity")
    _check_control(measured, ablate)
    assert (
        client.predict("It was the best of times.", ablate, api_name="/perplexity")["control"]["ablate"]
        == (client.predict("The quick brown fox.", ablate, api_name="/perplexity")["control"]["ablate"])
    )  # seeded: the same set gets the same control on any text
    generated = client.predict("The quick brown fox", ablate, 8, 0.0, 0, api_name="/generate")
    assert {"baseline", "ablated", "ablate", "switched_off", "effect"} <= set(generated)
    _check_control(generated["effect"], ablate)


def test_without_a_set_there_is_no_control_and_it_says_why(client):
    measured = client.predict("It was the best of times.", "", api_name="/perplexity")
    assert measured["control"] is None and measured["specificity"] is None
    assert "Nothing is switched off" in html.unescape(measured["control_note"])
    assert all(math.isclose(value, 0.0, abs_tol=1e-9) for value in measured["kl"])
