"""Push step: register a blessed model, move `champion`, write its InferenceService."""
