"""The PIRL engine: views, backbones, heads, memory bank, loss and the training loop.

Pure PyTorch over tensors, in the paper's vocabulary. No workspace, no database, no Streamlit.
"""
