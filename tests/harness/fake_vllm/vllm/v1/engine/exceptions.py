"""``vllm.v1.engine.exceptions``."""


class EngineDeadError(Exception):
    pass
