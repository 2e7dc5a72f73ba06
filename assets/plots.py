"""Plots for asset metadata: matplotlib (headless) figures embedded in markdown as PNG."""
import base64
import io


def pyplot():
    """matplotlib.pyplot on the Agg backend, so plots render on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_markdown(fig, alt: str) -> str:
    """Markdown with the figure as an embedded PNG; closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    pyplot().close(fig)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"
