"""`python tests/llama_server.py ARGS`: llama.cpp's OpenAI-compatible server (`python -m llama_cpp.server ARGS`)
with llama.cpp's extra weight buffer types off (use_extra_bufts=False, as `llama-server --no-repack`).

On the machine these tests were written on (a CPU with AMX, in a container) ggml's AMX matrix multiply
segfaults at the first decode (`ggml_backend_amx_mul_mat`); without the extra buffer types the plain CPU
kernels run, everywhere. The tests and the README's numbers use this launcher.
"""
import runpy

import llama_cpp.llama_cpp as bindings

_defaults = bindings.llama_model_default_params


def _model_params():
    params = _defaults()
    params.use_extra_bufts = False
    return params


bindings.llama_model_default_params = _model_params  # llama_cpp.Llama reads its model parameters from here

if __name__ == "__main__":
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
