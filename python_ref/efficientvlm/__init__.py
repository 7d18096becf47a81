"""EfficientVLM (Wang et al., arXiv 2210.07795): an X-VLM-style model — a CLIP ViT image encoder, a BERT text
encoder and cross-modal layers (X-VLM, Zeng et al., arXiv 2111.08276) — that the paper compresses by
distilling, then pruning. One module per part, as for MiniVLM: `config.py`, `vit.py`, `text.py`,
`cross_modal.py`, `heads.py`, `model.py`.
"""
