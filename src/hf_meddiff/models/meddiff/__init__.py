"""MedDiff: a discrete-diffusion multimodal model in transformers' house style.

Importing this package registers MedDiff with `AutoConfig`, `AutoModel`, `AutoModelForMaskedLM`,
`AutoProcessor` and `AutoImageProcessor`.
"""
