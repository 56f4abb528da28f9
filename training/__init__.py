"""The project's own reference models: captioned media generators and training.

Nothing here is needed at query time; the trained checkpoints ship inside `search`.
"""
