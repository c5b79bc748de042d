"""Pipeline run lifecycle: open the MLflow parent run, close it on exit."""
