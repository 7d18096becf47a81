"""The exact PyTorch reference of MiniVLM: one module per architectural part (see DESIGN.md §1, §7).

Imports only torch, numpy, safetensors and tokenizers; never the SDK or a converter backend.
"""
