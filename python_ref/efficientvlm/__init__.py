"""EfficientVLM (Wang et al., arXiv 2210.07795): an X-VLM-style model — a CLIP ViT image encoder, a BERT text
encoder and cross-modal layers (X-VLM, Zeng et al., arXiv 2111.08276) — that the paper compresses by
distilling, then pruning. One module per part, as for MiniVLM: `config.py` (configs, presets), `vit.py` (the CLIP
ViT image encoder), `text.py` (the BERT text encoder), `cross_modal.py` (text layers that cross-attend to the
image), `heads.py` (ITC, ITM, MLM, VQA), `model.py` (the whole model and the key map of a whole X-VLM checkpoint),
`profile.py` (parameters and FLOPs per part, `minivlm info`), `generate.py` (greedy captioning), `graphs.py`
(the export graphs), `preprocess.py` (X-VLM's bicubic resize and normalisation), `pipeline.py` (the host steps
around the graphs), `taps.py` (hidden states and attention recorded for distillation); the upstream checkpoint
layouts of the parts are in `vit_weights.py` and `bert_key_maps.py`. docs/ARCHITECTURE.md §11 says what of the
family exists so far.
"""
