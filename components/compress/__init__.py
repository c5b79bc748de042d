"""Compress step: int8 post-training quantisation, accuracy re-measured."""
