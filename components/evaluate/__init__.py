"""Evaluate step: test metrics and the blessing gate against the champion."""
