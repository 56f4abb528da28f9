"""The project's own reference models: captioned media generators and training.

Not installed: the trained checkpoints ship inside `xmodal.search`, the generators they
train on in `xmodal.synthetic`.
"""
