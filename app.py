"""Monet Explorer: launch the app (placeholder until the explorer UI lands)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

with gr.Blocks(title="Monet Explorer") as demo:
    gr.Markdown("# Monet Explorer\nThe explorer is being built: the model and its routing are in `explorer/`.")

if __name__ == "__main__":
    demo.launch()
