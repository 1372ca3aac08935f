"""StableRep: multi-positive contrastive learning on synthetic images.

The core library. It never imports Prefect; orchestration lives in ``tasks/`` and ``flows/``.
Heavy submodules (torch, timm, open_clip) are imported lazily by their own packages.
"""

__version__ = "0.1.0"
