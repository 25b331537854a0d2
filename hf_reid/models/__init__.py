"""Models that travel to the Hub with their checkpoints.

This folder is FLAT on purpose: ``save_pretrained`` copies a model's defining file and every
sibling it reaches through relative imports, so a saved model loads with
``trust_remote_code=True`` where hf_reid is not installed. Files here import siblings
relatively (``from .reid_heads import BNNeck``) and never ``import hf_reid``.
"""
