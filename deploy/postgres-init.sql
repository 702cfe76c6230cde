-- MLflow keeps its tracking store in its own database beside labmate's knowledge base.
CREATE DATABASE mlflow OWNER labmate;
