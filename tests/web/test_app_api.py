"""The served app through gradio_client: named endpoints, clear errors, and many users at once.

Concurrent /generate and /perplexity calls with different switched-off sets must each return exactly
what the same call returns alone: ablation travels with the request, never through shared state.
"""

import html
from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import Client

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_named_endpoints_are_listed(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/search", "/expert", "/inspect", "/generate", "/perplexity", "/top_experts"} <= names


def test_search_and_expert_round_trip(client):
    found = client.predict(query="G1 (1, 1)", limit=5, api_name="/search")  # keywords, defaults for the rest
    assert found["mode"] == "id" and found["results"][0]["name"] == "G1/17"
    page = client.predict("G1/17", api_name="/expert")
    assert page["expert"] == "G1/17" and page["pair"] == "G1 (1, 1)" and page["layers"] == [0, 1]
    assert all(set(c) >= {"weight", "tokens", "weights", "highlight"} for c in page["top_contexts"])


def test_inspect_returns_experts_per_token_and_group(client):
    result = client.predict("The quick brown fox", 0.01, 3, api_name="/inspect")
    assert result["tokens"] and set(result["tokens"][0]["groups"]) == {"G1", "G2"}
    first = result["tokens"][0]["groups"]["G1"][0]
    assert first["expert"].startswith("G1/") and len(first["head_weights"]) == 2


@pytest.mark.parametrize(
    "endpoint, args, message",
    [
        ("/expert", ("G7/1",), "outside the model"),
        ("/search", ("", "auto", 0, 5), "Type something"),
        ("/search", ("the", "auto", 9, 5), "group must be"),
        ("/generate", ("", "", 5, 0.0, 0), "empty"),
        ("/generate", ("Hello", "G1/5, bogus", 5, 0.0, 0), "not an expert"),
        ("/generate", ("Hello", "", 999, 0.0, 0), "New tokens must lie in 1..24"),
        ("/inspect", ("word " * 500, 0.01, 3), "limit is 64"),
    ],
)
def test_bad_requests_get_the_page_message(client, endpoint, args, message):
    with pytest.raises(Exception, match=message):
        client.predict(*args, api_name=endpoint)
    assert client.predict("G1/17", api_name="/expert")["expert"] == "G1/17"  # still serving


def test_an_error_echoing_markup_comes_back_escaped_as_the_page_shows_it(client, explorer):
    """Gradio renders an error's message as HTML: the API sends the page's sentence escaped, never live markup."""
    from explorer.web import pages

    markup = "<b id=pwn>x</b><form><input type=password></form>"
    with pytest.raises(Exception) as caught:
        client.predict(markup, api_name="/expert")
    message = str(caught.value)
    assert "<b id=pwn>" not in message and "&lt;b id=pwn&gt;" in message
    assert "write G&lt;group&gt;/&lt;id&gt;" in message and "'" in message  # element escaping: quotes stay readable
    page_status = pages.expert_view(explorer, markup)["status"]  # the same sentence, as the page's status line
    assert html.unescape(message.strip("'\"")) in html.unescape(page_status)


# (switched-off set, temperature, seed): greedy and sampled requests side by side
REQUESTS = [
    ("", 0.0, 0),
    ("G1 (3, *)", 0.0, 0),
    ("G1 (0, *), G1 (1, *), G2 (2, *)", 0.0, 0),
    ("G2 (*, 5), G1/40, L3/100", 1.0, 1),
    ("", 1.0, 2),
    ("G1 (3, *)", 1.0, 2),
]


def _generate(client, request):
    ablate, temperature, seed = request
    return client.predict("The quick brown fox", ablate, 12, temperature, seed, api_name="/generate")


def _perplexity(client, request):
    return client.predict("It was the best of times, it was the worst of times.", request[0], api_name="/perplexity")


def test_concurrent_users_get_their_own_results(app_url):
    clients = [Client(app_url, verbose=False) for _ in REQUESTS]
    alone = {r: (_generate(c, r), _perplexity(c, r)) for c, r in zip(clients, REQUESTS, strict=True)}
    assert len({alone[r][0]["ablated"] for r in REQUESTS}) >= 4  # the requests really differ
    assert len({alone[r][1]["ablated_perplexity"] for r in REQUESTS}) >= 3

    def both(pair):
        c, request = pair
        return request, _generate(c, request), _perplexity(c, request)

    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        for request, generated, measured in pool.map(both, list(zip(clients, REQUESTS, strict=True)) * 2):
            assert generated == alone[request][0], request
            assert measured == alone[request][1], request
