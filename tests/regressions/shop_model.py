"""A tiny registered model for regression runs from chat (MLflow "models from code"): the shop
assistant of tests/regress/agents.py, v1 or v2 by the model config."""

import mlflow
from mlflow.pyfunc import PythonModel


class Shop(PythonModel):
    def load_context(self, context):
        self.version = int((context.model_config or {}).get("version", 1))

    def predict(self, context, model_input, params=None):
        from tests.regress.agents import _shop

        if hasattr(model_input, "to_dict"):
            model_input = model_input.to_dict(orient="records")
        return [_shop(model_input, self.version)]


mlflow.models.set_model(Shop())
