"""What every tab shares: the Explorer and the event settings (Context), clickable HTML, status lines, the URL mirror.

Clickable HTML (expert links, table rows, map cells, tokens) reports clicks through CLICK_JS as `select`
events. Every panel has a status line (a gr.HTML under its inputs) that its handlers write: the message sits
beside the control that caused it, and Gradio's error overlay never hides an input.
"""

from dataclasses import dataclass

import gradio as gr

from explorer.app.explorer import Explorer

MODEL = "model"  # concurrency group of everything that runs the model
INDEX = "index"

CLICK_JS = """
const cell = (event, map) => {
  const box = map.getBoundingClientRect(), E = +map.dataset.e;
  return {group: +map.dataset.group, E,
          i: Math.min(E - 1, Math.floor((event.clientY - box.top) / box.height * E)),
          j: Math.min(E - 1, Math.floor((event.clientX - box.left) / box.width * E))};
};
element.addEventListener('click', (event) => {
  if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;  // new tab: a real link
  const map = event.target.closest('img.expert-map');
  if (map) { const c = cell(event, map); trigger('select', {kind: 'cell', group: c.group, i: c.i, j: c.j}); return; }
  const token = event.target.closest('[data-token]');
  if (token) { trigger('select', {kind: 'token', value: +token.dataset.token}); return; }
  const expert = event.target.closest('[data-expert]');
  if (expert) { event.preventDefault(); trigger('select', {kind: 'expert', value: expert.dataset.expert}); }
});
element.addEventListener('mousemove', (event) => {
  const map = event.target.closest('img.expert-map');
  if (!map) return;
  const c = cell(event, map), readout = element.querySelector('.map-readout');
  const name = `G${c.group + 1}`;
  if (readout) readout.textContent = `${name} (${c.i}, ${c.j}) = ${name}/${c.i * c.E + c.j} · click to open`;
});
"""

# A handler that may take over a second takes `progress=PROGRESS` and says what it is doing (gr.Progress as the
# default marks the parameter; Gradio hands each call a tracker of its own request).
PROGRESS = gr.Progress()

# Events that only mark results as stale while the user types: no queue, no spinner, the latest keystroke wins.
QUIET_EVENT = {"queue": False, "show_progress": "hidden", "trigger_mode": "always_last", "api_visibility": "private"}


@dataclass(frozen=True)
class Context:
    """What a tab's builder needs besides its own components."""

    explorer: Explorer
    blocks: gr.Blocks  # for load events (deep links)
    tabs: gr.Tabs  # to move to another tab
    groups: list[tuple[str, int]]  # routing group choices: (label, 0-based group)
    model_events: dict  # event keywords of handlers that run the model (their concurrency group)
    index_events: dict  # event keywords of handlers that read the index


def clickable(value: str = "", **kwargs) -> gr.HTML:
    return gr.HTML(value, js_on_load=CLICK_JS, **kwargs)


def status_line(elem_id: str) -> gr.HTML:
    """A panel's status line: empty until a handler of the panel has something to say."""
    return gr.HTML("", elem_id=elem_id, elem_classes=["status-line"])


def url_js(key: str) -> str:
    """JS that mirrors one value into the address bar's query (?key=value) without reloading."""
    return f"""(value) => {{
  const params = new URLSearchParams(window.location.search);
  if (value) params.set('{key}', value); else params.delete('{key}');
  const query = params.toString().replace(/%2F/g, '/').replace(/%2C/g, ',').replace(/%3A/g, ':');
  history.replaceState(null, '', window.location.pathname + (query ? '?' + query : ''));
  return value;
}}"""
