"""Run llama-cpp-python's OpenAI-compatible server with the project's safe model loading.

    python -m sotopia_pi.backends.llama_server [--model PATH] --host 127.0.0.1 --port 8080 ...

All options are llama_cpp.server's own (`--help` lists them). Without --model it serves the
embedded SmolLM2 GGUF. The only difference from `python -m llama_cpp.server` is that models
load without llama.cpp's AMX weight buffers on CPUs where those crash (see llama_native).
Needs the server extras: fastapi, uvicorn, sse-starlette, starlette-context, pydantic-settings.
"""

from __future__ import annotations

import sys

from .llama_native import make_model_loading_safe


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--model" not in args and not any(arg.startswith("--model=") for arg in args):
        from ..catalog import embedded_model_path

        args = ["--model", str(embedded_model_path()), *args]
    make_model_loading_safe()
    from llama_cpp.server.__main__ import main as serve

    sys.argv = [sys.argv[0], *args]
    serve()


if __name__ == "__main__":
    main()
