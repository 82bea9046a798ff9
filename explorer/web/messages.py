"""Every sentence the app shows a user is built here, and escaped here: status lines and error messages.

Gradio renders the message of gr.Error, gr.Warning and gr.Info as HTML, and the status lines are gr.HTML,
so a message that echoes user input (`?expert=<a href=...>`, "write G<group>/<id>") would turn into live
markup. explorer/web therefore builds messages only through this module (a test checks that no other
module calls gr.Error, gr.Warning or gr.Info), and each builder escapes its text:

- status(text, kind): a status line, shown in a gr.HTML beside the control it is about;
- error_status(error): the status line of a failed request: the sentence of a known failure (bad input,
  no index, a corrupt file), or a short "something went wrong" for anything else (logged with its traceback);
- reports_errors(*cleared): for page handlers whose last output is their status line. They never raise, so
  Gradio never covers their outputs (inputs included) with its error overlay: a failure replaces the other
  outputs with `cleared` (stale results go) and says why in the status line;
- api_errors(fn): a named API endpoint's failure becomes gr.Error carrying the same sentence as the page,
  escaped (Gradio treats the message as HTML; `html.unescape` gives the plain sentence back).
"""

import functools
import html as html_lib
import inspect
import logging

import duckdb
import gradio as gr

from explorer.app.tokens import RequestRejected
from explorer.index.reader import IndexUnavailable
from explorer.web import html

log = logging.getLogger(__name__)
EXPECTED_ERRORS = (RequestRejected, IndexUnavailable, duckdb.Error)


class ErrorNotice(str):
    """A status line that reports a failure (a str, so Gradio shows it as is; the type lets callers branch)."""


def status(text: str, kind: str = "info") -> str:
    """A status line: kind is info, warning, error or stale (results below no longer match the inputs)."""
    return html.notice(text, kind)


def error_text(error: Exception) -> str:
    """The sentence a user reads for a failure (plain text, not yet escaped)."""
    if isinstance(error, EXPECTED_ERRORS):
        return str(error)
    log.error("unexpected error in a request", exc_info=error)
    return f"Something went wrong ({type(error).__name__}: {error}). The app keeps running; try again."


def error_status(error: Exception) -> ErrorNotice:
    return ErrorNotice(status(error_text(error), "error"))


def reports_errors(*cleared):
    """Decorate a handler (function or generator) whose outputs end with its status line: never raise."""

    def decorate(fn):
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def stream(*args, **kwargs):
                try:
                    yield from fn(*args, **kwargs)
                except Exception as error:
                    yield (*cleared, error_status(error))

            return stream

        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as error:
                return (*cleared, error_status(error))

        return call

    return decorate


def api_errors(fn):
    """Decorate a named API endpoint: a failure becomes gr.Error with the page's sentence, escaped for HTML."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            # Element-content escaping (& < >): the quotes of messages like "'G9/1' is ..." stay readable.
            raise gr.Error(html_lib.escape(error_text(error), quote=False), print_exception=False) from None

    return call
