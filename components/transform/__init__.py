"""Transform step: normalisation fitted on the train split only."""
