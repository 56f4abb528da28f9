"""Captioned media the project generates itself: pictures of shapes, sounds, the demo
library. The demo, `xmodal eval` examples, the reference models' training and the
tests all draw on them; nothing here loads a model."""
