"""Models: a pretrained backbone with a new head sized to the label space, and the head-and-blocks view."""
