"""Compare step: the two frameworks side by side, with a recommendation."""
