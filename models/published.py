"""Graph sizes Poplar's compiler produced for the same networks, to show beside ours.

Source: shared/reference/published-figures.md.

>>> published_graph("ResNet50", train=False)["vertices"]
3220000.0
"""
from __future__ import annotations

PUBLISHED_GRAPHS = {
    ("resnet50", False): {"vertices": 3.22e6, "edges": 6.21e6,
                          "source": "Graphcore, 'Inside an AI brain', Feb 2017 (ResNet-50 inference)"},
    ("alexnet", True): {"vertices": 18.7e6, "edges": 115.8e6,
                        "source": "Graphcore, 'Inside an AI brain', Feb 2017 (AlexNet training loop)"},
}


def published_graph(name, train) -> dict | None:
    """Poplar's published graph size for this model (vertices, edges, source), or None."""
    return PUBLISHED_GRAPHS.get((str(name).lower(), bool(train)))
