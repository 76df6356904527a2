"""altmodal: multimodal learning that does not go lazy.

MLA (Zhang et al., "Multimodal Representation Learning by Alternating Unimodal Adaptation",
CVPR 2024) and the baselines it is compared with, over modality-keyed batches.
"""

__version__ = "0.1.0"
