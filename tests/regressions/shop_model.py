"""A tiny registered model for regression runs from chat (MLflow "models from code"): the shop
assistant of tests/regress/agents.py, v1 or v2 by the model config, and slow
(`sleep` s per reply) for the fault tests."""

import mlflow
from mlflow.pyfunc import PythonModel


class Shop(PythonModel):
    def load_context(self, context):
        config = context.model_config or {}
        self.version = int(config.get("version", 1))
        self.sleep = float(config.get("sleep", 0))

    def predict(self, context, model_input, params=None):
        import time

        from tests.regress.agents import _shop

        if self.sleep:
            time.sleep(self.sleep)

        if hasattr(model_input, "to_dict"):
            model_input = model_input.to_dict(orient="records")
        return [_shop(model_input, self.version)]


mlflow.models.set_model(Shop())
