-- Runs once, when the data directory is first initialised (docker-entrypoint-initdb.d).
-- The tracking store lives in POSTGRES_DB (mlflow); MLflow's basic-auth app
-- (overlays/cluster) keeps its users and permissions in a database of its own.
CREATE DATABASE mlflow_auth;
