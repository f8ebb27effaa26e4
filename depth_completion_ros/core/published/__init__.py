"""Published CSPN-family models (PENet, ENet, the CSPN paper's NYU model), our own implementations.

One small interface (`base.Architecture`) serves the completer, the node, the importer and the benchmarks:
each architecture is one module here that registers an `Architecture` (its configuration type, how to build
the network, how the authors' state-dict names map onto ours, and the committed manifest of our names and
shapes).  Adding the next family (NLSPN, CompletionFormer) is one new module plus its key map.

Every network built here has the same calling convention (see `base.PublishedNet`).
"""

from __future__ import annotations

from .base import ARCHITECTURES, Architecture, PublishedNet, get_architecture, register

__all__ = ["ARCHITECTURES", "Architecture", "PublishedNet", "get_architecture", "register"]
