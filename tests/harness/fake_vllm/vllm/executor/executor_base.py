"""``vllm.executor.executor_base`` (vLLM < 0.11.1 layout): only imported."""


class ExecutorBase:
    pass
