"""Sample defaults of the reference training recipe, in one place (no heavy imports: the CLI's help reads them).

GT enrichment: each 8-connected GT component covering at least ``MIN_COMPONENT_FRACTION`` of the image
(0.4 %) becomes its own sample. Box jitter: each side of a jittered box moves by up to
``JITTER_FRACTION`` of the box's side.
"""

MIN_COMPONENT_FRACTION = 0.004
JITTER_FRACTION = 0.1
