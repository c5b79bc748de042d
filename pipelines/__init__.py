"""Driver-side code: the KFP pipeline definition, compile, local run and the CLI."""
