"""A registered model for the chat regression benchmark (MLflow "models from code"): the CPU-bound test
agent of tests/regress/agents.py, a few milliseconds a reply holding the GIL, like a small local model."""

import mlflow
from mlflow.pyfunc import PythonModel


class CpuBound(PythonModel):
    def predict(self, context, model_input, params=None):
        from tests.regress.agents import cpu_bound

        if hasattr(model_input, "to_dict"):
            model_input = model_input.to_dict(orient="records")
        return [cpu_bound(model_input)]


mlflow.models.set_model(CpuBound())
